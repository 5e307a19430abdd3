//! Image definitions: one TOML file per operating system in `images/`, built into the
//! binary, and overridden (same file name) or extended (new name) by files in
//! `data_dir/images/`. A definition says what the image is, where its files sit
//! relative to a mirror's base URL (so a local mirror changes only the base), which
//! chain of signatures and digests vouches for them, the kernel command line and the
//! unattended-install templates rendered per machine.
//!
//! Parsing and checking are pure; `Catalog::load` reads the override directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The definitions shipped in `images/`, with their file names.
const BUILTIN_DEFINITIONS: &[(&str, &str)] = &[
    (
        "debian-12.toml",
        include_str!("../../images/debian-12.toml"),
    ),
    (
        "ubuntu-24.04.toml",
        include_str!("../../images/ubuntu-24.04.toml"),
    ),
    ("rocky-9.toml", include_str!("../../images/rocky-9.toml")),
    ("alma-9.toml", include_str!("../../images/alma-9.toml")),
    ("fedora.toml", include_str!("../../images/fedora.toml")),
    ("flatcar.toml", include_str!("../../images/flatcar.toml")),
    (
        "memtest86plus.toml",
        include_str!("../../images/memtest86plus.toml"),
    ),
    (
        "memtest86plus-bios.toml",
        include_str!("../../images/memtest86plus-bios.toml"),
    ),
];

/// Key files and templates shipped in `images/`, by their path relative to it.
const BUILTIN_FILES: &[(&str, &[u8])] = &[
    (
        "keys/debian-archive-keyring.gpg",
        include_bytes!("../../images/keys/debian-archive-keyring.gpg"),
    ),
    (
        "templates/debian-12.preseed",
        include_bytes!("../../images/templates/debian-12.preseed"),
    ),
    (
        "templates/ubuntu-24.04.user-data",
        include_bytes!("../../images/templates/ubuntu-24.04.user-data"),
    ),
    (
        "templates/ubuntu-24.04.meta-data",
        include_bytes!("../../images/templates/ubuntu-24.04.meta-data"),
    ),
    (
        "templates/rocky-9.ks",
        include_bytes!("../../images/templates/rocky-9.ks"),
    ),
    (
        "templates/alma-9.ks",
        include_bytes!("../../images/templates/alma-9.ks"),
    ),
    (
        "templates/fedora.ks",
        include_bytes!("../../images/templates/fedora.ks"),
    ),
    (
        "templates/flatcar.ign",
        include_bytes!("../../images/templates/flatcar.ign"),
    ),
];

/// Definition files and their key or template files are small; a bigger one is a
/// mistake (or not a definition), refused before it is read.
const MAX_DEFINITION_BYTES: u64 = 256 * 1024;
const MAX_SIDE_FILE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn invalid(file: &str, message: impl Into<String>) -> DefinitionError {
    DefinitionError::Invalid {
        file: file.to_string(),
        message: message.into(),
    }
}

/// What an image is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An installer booted over the network (d-i, Anaconda, subiquity).
    Installer,
    /// A system that runs from memory (Flatcar's PXE image, memtest86+).
    Live,
    /// A disk image written by rackboot's agent (the deployment issue).
    Disk,
}

/// The firmware paths an image boots on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firmware {
    Bios,
    Uefi,
    SecureBoot,
}

impl Firmware {
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::Bios => "BIOS",
            Firmware::Uefi => "UEFI",
            Firmware::SecureBoot => "UEFI Secure Boot",
        }
    }
}

/// How the image's files are vouched for, from a signature down to each file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chain {
    /// `release` (a clearsigned `InRelease`) lists `sums` (a `SHA256SUMS`), which lists
    /// each file; paths in each list are relative to that list's directory.
    DebianInstaller { release: String, sums: String },
    /// `release` lists `packages` (a `Packages.xz` or `.gz` index), which gives the
    /// `.deb` of `package`; the files are members of that package.
    DebianPackage {
        release: String,
        packages: String,
        package: String,
    },
    /// A checksum list signed by the distribution: clearsigned when `signature` is
    /// absent (Fedora, Rocky, Alma `CHECKSUM`), else with a detached signature
    /// (Ubuntu's `SHA256SUMS.gpg`). With `iso`, the list vouches for an ISO image
    /// and the files are read from inside it; `iso` may end in `*` to take the
    /// newest point release the list names.
    SignedChecksums {
        checksums: String,
        signature: Option<String>,
        iso: Option<String>,
    },
    /// Each file has a detached signature beside it, `<file>.sig` (Flatcar).
    DetachedSignatures,
    /// A sha256 per file, written in the definition.
    Pinned { sha256: BTreeMap<String, String> },
}

impl Chain {
    pub fn summary(&self) -> &'static str {
        match self {
            Chain::DebianInstaller { .. } => "InRelease (OpenPGP) → SHA256SUMS → files",
            Chain::DebianPackage { .. } => "InRelease (OpenPGP) → Packages → .deb → files",
            Chain::SignedChecksums { iso: Some(_), .. } => {
                "signed checksum list (OpenPGP) → ISO → files inside"
            }
            Chain::SignedChecksums { iso: None, .. } => "signed checksum list (OpenPGP) → files",
            Chain::DetachedSignatures => "a detached OpenPGP signature per file",
            Chain::Pinned { .. } => "a sha256 per file, pinned in the definition",
        }
    }

    pub fn needs_keys(&self) -> bool {
        !matches!(self, Chain::Pinned { .. })
    }
}

/// One image definition, checked.
#[derive(Debug, Clone)]
pub struct Definition {
    /// The image name it registers (`debian-12`); the file name without `.toml`.
    pub name: String,
    pub os: String,
    pub version: String,
    pub kind: Kind,
    pub architectures: Vec<String>,
    pub firmware: Vec<Firmware>,
    /// For Secure Boot: which signed shim and grub boot it (free text for people).
    pub secure_boot: Option<String>,
    /// The least memory a machine needs to run it (an ISO held in RAM needs a lot).
    pub memory_mib: u32,
    /// How the chain was run end to end against the real upstream, or `None`:
    /// untested, and the panel and the CLI say so.
    pub tested: Option<String>,
    pub notes: Option<String>,
    /// The mirror's base URL upstream, and the family name `[images.mirrors]` keys on.
    pub mirror: String,
    pub mirror_family: String,
    pub chain: Chain,
    /// Trusted key files (relative to `images/`), for every chain but `Pinned`.
    pub keys: Vec<String>,
    /// Paths relative to the mirror base (or inside the ISO).
    pub kernel: String,
    pub initrd: Option<String>,
    /// The distribution's own signed shim and network grub, for Secure Boot: its
    /// grub trusts its kernels (Debian's trusts Debian's only).
    pub shim: Option<String>,
    pub grub: Option<String>,
    /// A template: rendered per machine at boot (`files_url`, `mirror`, `console`...).
    pub cmdline: String,
    /// Install file name served to the machine → template path relative to `images/`.
    pub templates: BTreeMap<String, String>,
    /// A parameter the definition needs (Fedora's release), with its default.
    pub parameters: BTreeMap<String, String>,
    /// Where it came from: `built in` or the override file's path.
    pub origin: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    os: String,
    version: String,
    kind: Kind,
    architectures: Vec<String>,
    firmware: Vec<Firmware>,
    secure_boot: Option<String>,
    memory_mib: u32,
    tested: Option<String>,
    notes: Option<String>,
    mirror: RawMirror,
    chain: RawChain,
    files: RawFiles,
    cmdline: String,
    #[serde(default)]
    templates: BTreeMap<String, String>,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    base: String,
    family: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    kind: String,
    #[serde(default)]
    keys: Vec<String>,
    release: Option<String>,
    sums: Option<String>,
    packages: Option<String>,
    package: Option<String>,
    checksums: Option<String>,
    signature: Option<String>,
    iso: Option<String>,
    #[serde(default)]
    sha256: BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    kernel: String,
    initrd: Option<String>,
    shim: Option<String>,
    grub: Option<String>,
}

/// A relative path inside a mirror or an ISO: no `..`, no leading `/`, no empty part.
fn check_relative(file: &str, key: &str, path: &str) -> Result<(), DefinitionError> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && path.len() <= 1024
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && !path.chars().any(|c| c.is_control() || c == '\\');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            file,
            format!("{key} = {path:?} must be a relative path without '..' or empty parts"),
        ))
    }
}

impl Definition {
    /// Parses one definition; `file` is its file name (`debian-12.toml`), which gives
    /// the image name, and `origin` says where it came from.
    pub fn parse(file: &str, text: &str, origin: &str) -> Result<Definition, DefinitionError> {
        let name = file
            .strip_suffix(".toml")
            .ok_or_else(|| invalid(file, "a definition's file name ends in .toml"))?;
        if !crate::validate::valid_image_name(name) {
            return Err(invalid(
                file,
                "the file name (the image's name) must be letters, digits, '.', '_' or '-'",
            ));
        }
        let raw: RawDefinition = toml::from_str(text).map_err(|e| invalid(file, e.to_string()))?;
        let need = |value: Option<String>, key: &str| {
            value.ok_or_else(|| {
                invalid(
                    file,
                    format!("chain.kind = {:?} needs chain.{key}", raw.chain.kind),
                )
            })
        };
        let chain = match raw.chain.kind.as_str() {
            "debian-installer" => Chain::DebianInstaller {
                release: need(raw.chain.release.clone(), "release")?,
                sums: need(raw.chain.sums.clone(), "sums")?,
            },
            "debian-package" => Chain::DebianPackage {
                release: need(raw.chain.release.clone(), "release")?,
                packages: need(raw.chain.packages.clone(), "packages")?,
                package: need(raw.chain.package.clone(), "package")?,
            },
            "signed-checksums" => Chain::SignedChecksums {
                checksums: need(raw.chain.checksums.clone(), "checksums")?,
                signature: raw.chain.signature.clone(),
                iso: raw.chain.iso.clone(),
            },
            "detached-signatures" => Chain::DetachedSignatures,
            "pinned" => Chain::Pinned {
                sha256: raw.chain.sha256.clone(),
            },
            other => {
                return Err(invalid(
                    file,
                    format!(
                        "chain.kind = {other:?} is not one of debian-installer, debian-package, \
                         signed-checksums, detached-signatures, pinned"
                    ),
                ));
            }
        };
        let mut paths: Vec<(&str, &str)> = vec![("files.kernel", &raw.files.kernel)];
        for (key, value) in [
            ("files.initrd", &raw.files.initrd),
            ("files.shim", &raw.files.shim),
            ("files.grub", &raw.files.grub),
        ] {
            if let Some(value) = value {
                paths.push((key, value));
            }
        }
        if raw.files.shim.is_some() != raw.files.grub.is_some() {
            return Err(invalid(
                file,
                "files.shim and files.grub come together (shim loads the grub beside it)",
            ));
        }
        if raw.files.shim.is_some() && raw.architectures.len() != 1 {
            return Err(invalid(
                file,
                "files.shim and files.grub are for one architecture: name exactly one",
            ));
        }
        for (key, value) in [
            ("chain.release", &raw.chain.release),
            ("chain.sums", &raw.chain.sums),
            ("chain.packages", &raw.chain.packages),
            ("chain.checksums", &raw.chain.checksums),
            ("chain.signature", &raw.chain.signature),
        ] {
            if let Some(value) = value {
                paths.push((key, value));
            }
        }
        for (key, path) in &paths {
            // Parameters such as {release} are filled in later; check the shape now.
            check_relative(file, key, path)?;
        }
        if let Some(iso) = &raw.chain.iso {
            check_relative(file, "chain.iso", iso)?;
        }
        for key in raw.chain.keys.iter().chain(raw.templates.values()) {
            check_relative(file, "a key or template path", key)?;
        }
        if chain.needs_keys() && raw.chain.keys.is_empty() && raw.tested.is_some() {
            return Err(invalid(
                file,
                "a tested definition whose chain is signed names its trusted keys (chain.keys)",
            ));
        }
        if let Chain::Pinned { sha256 } = &chain {
            let mut files = vec![raw.files.kernel.as_str()];
            files.extend(raw.files.initrd.as_deref());
            files.extend(raw.files.shim.as_deref());
            files.extend(raw.files.grub.as_deref());
            for path in files {
                match sha256.get(path) {
                    Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {}
                    Some(hex) => {
                        return Err(invalid(
                            file,
                            format!("chain.sha256[{path:?}] = {hex:?} is not 64 hex digits"),
                        ));
                    }
                    None => {
                        return Err(invalid(
                            file,
                            format!("chain.sha256 has no entry for {path}"),
                        ));
                    }
                }
            }
        }
        for served in raw.templates.keys() {
            if !crate::validate::valid_image_name(served) {
                return Err(invalid(
                    file,
                    format!("templates: {served:?} is not a file name an install file can have"),
                ));
            }
        }
        if !raw.mirror.base.starts_with("http://") && !raw.mirror.base.starts_with("https://") {
            return Err(invalid(
                file,
                format!(
                    "mirror.base = {:?} must be an http or https URL",
                    raw.mirror.base
                ),
            ));
        }
        if raw.architectures.is_empty() || raw.firmware.is_empty() {
            return Err(invalid(
                file,
                "architectures and firmware each name at least one",
            ));
        }
        Ok(Definition {
            name: name.to_string(),
            os: raw.os,
            version: raw.version,
            kind: raw.kind,
            architectures: raw.architectures,
            firmware: raw.firmware,
            secure_boot: raw.secure_boot,
            memory_mib: raw.memory_mib,
            tested: raw.tested,
            notes: raw.notes,
            mirror: raw.mirror.base.trim_end_matches('/').to_string(),
            mirror_family: raw.mirror.family,
            chain,
            keys: raw.chain.keys,
            kernel: raw.files.kernel,
            initrd: raw.files.initrd,
            shim: raw.files.shim,
            grub: raw.files.grub,
            cmdline: raw.cmdline,
            templates: raw.templates,
            parameters: raw.parameters,
            origin: origin.to_string(),
        })
    }

    /// The files its chain fetches, by the slot each fills in the image's directory:
    /// `kernel`, `initrd`, and `shim`, `grub` when it carries its own.
    pub fn members(&self) -> Vec<(&'static str, String)> {
        let mut members = vec![("kernel", self.kernel.clone())];
        for (slot, path) in [
            ("initrd", &self.initrd),
            ("shim", &self.shim),
            ("grub", &self.grub),
        ] {
            if let Some(path) = path {
                members.push((slot, path.clone()));
            }
        }
        members
    }

    /// A path of the definition with its parameters filled in (`{release}`).
    pub fn expand(&self, path: &str, parameters: &BTreeMap<String, String>) -> String {
        let mut out = path.to_string();
        for (key, default) in &self.parameters {
            let value = parameters.get(key).unwrap_or(default);
            out = out.replace(&format!("{{{key}}}"), value);
        }
        out
    }

    /// The parameters in force: the defaults, overridden by the caller's. An unknown
    /// parameter or a value that could move a path is refused.
    pub fn parameters_with(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut out = self.parameters.clone();
        for (key, value) in given {
            if !self.parameters.contains_key(key) {
                return Err(format!(
                    "{} takes no parameter {key:?}{}",
                    self.name,
                    if self.parameters.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (it takes {})",
                            self.parameters
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ));
            }
            if value.is_empty()
                || value.len() > 32
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                return Err(format!(
                    "parameter {key} = {value:?} must be letters, digits, '.' or '-'"
                ));
            }
            out.insert(key.clone(), value.clone());
        }
        Ok(out)
    }

    /// The version as people read it, its parameters at their defaults.
    pub fn display_version(&self) -> String {
        self.expand(&self.version, &BTreeMap::new())
    }

    pub fn status(&self) -> &'static str {
        if self.tested.is_some() {
            "tested"
        } else {
            "untested"
        }
    }
}

/// Every definition in force, and where their key and template files are read from.
#[derive(Debug, Clone)]
pub struct Catalog {
    definitions: BTreeMap<String, Definition>,
    override_dir: Option<PathBuf>,
}

impl Catalog {
    /// The shipped definitions only.
    pub fn builtin() -> Result<Catalog, DefinitionError> {
        let mut definitions = BTreeMap::new();
        for (file, text) in BUILTIN_DEFINITIONS {
            let definition = Definition::parse(file, text, "built in")?;
            definitions.insert(definition.name.clone(), definition);
        }
        Ok(Catalog {
            definitions,
            override_dir: None,
        })
    }

    /// The shipped definitions with those in `dir` (`data_dir/images/`) on top: a
    /// file of the same name replaces a shipped one, a new name adds one. Blocking.
    pub fn load(dir: &Path) -> Result<Catalog, DefinitionError> {
        let mut catalog = Catalog::builtin()?;
        catalog.override_dir = Some(dir.to_path_buf());
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(catalog),
            Err(source) => {
                return Err(DefinitionError::Io {
                    path: dir.display().to_string(),
                    source,
                });
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
            .collect();
        files.sort();
        for path in files {
            let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let text = read_bounded(&path, MAX_DEFINITION_BYTES)?;
            let text = String::from_utf8(text)
                .map_err(|_| invalid(&path.display().to_string(), "is not UTF-8"))?;
            let definition = Definition::parse(file, &text, &path.display().to_string()).map_err(
                |e| match e {
                    DefinitionError::Invalid { message, .. } => {
                        invalid(&path.display().to_string(), message)
                    }
                    other => other,
                },
            )?;
            catalog
                .definitions
                .insert(definition.name.clone(), definition);
        }
        Ok(catalog)
    }

    pub fn get(&self, name: &str) -> Option<&Definition> {
        self.definitions.get(name)
    }

    pub fn definitions(&self) -> impl Iterator<Item = &Definition> {
        self.definitions.values()
    }

    pub fn names(&self) -> Vec<String> {
        self.definitions.keys().cloned().collect()
    }

    /// A key or template file by its path relative to `images/`: the override
    /// directory's copy first, then the shipped one. Blocking.
    pub fn side_file(&self, relative: &str) -> Result<Vec<u8>, DefinitionError> {
        if let Some(dir) = &self.override_dir {
            let path = dir.join(relative);
            if path.is_file() {
                return read_bounded(&path, MAX_SIDE_FILE_BYTES);
            }
        }
        BUILTIN_FILES
            .iter()
            .find(|(name, _)| *name == relative)
            .map(|(_, bytes)| bytes.to_vec())
            .ok_or_else(|| DefinitionError::Io {
                path: relative.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "neither shipped in images/ nor in data_dir/images/",
                ),
            })
    }
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, DefinitionError> {
    use std::io::Read;
    let io = |source| DefinitionError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(invalid(
            &path.display().to_string(),
            format!("is larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_definition_parses_and_its_files_are_shipped() {
        let catalog = Catalog::builtin().expect("builtin");
        for want in [
            "debian-12",
            "ubuntu-24.04",
            "rocky-9",
            "alma-9",
            "fedora",
            "flatcar",
            "memtest86plus",
        ] {
            assert!(catalog.get(want).is_some(), "{want} missing");
        }
        for definition in catalog.definitions() {
            for path in definition.keys.iter().chain(definition.templates.values()) {
                catalog
                    .side_file(path)
                    .unwrap_or_else(|e| panic!("{}: {e}", definition.name));
            }
        }
    }

    #[test]
    fn every_file_in_images_is_built_in() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("images");
        let mut on_disk = Vec::new();
        for sub in ["", "keys", "templates"] {
            for entry in std::fs::read_dir(root.join(sub)).expect("images/") {
                let entry = entry.expect("entry");
                let name = entry.file_name().into_string().expect("utf8");
                if entry.path().is_file() && name != "README.md" {
                    on_disk.push(if sub.is_empty() {
                        name
                    } else {
                        format!("{sub}/{name}")
                    });
                }
            }
        }
        for name in on_disk {
            let built_in = BUILTIN_DEFINITIONS.iter().any(|(f, _)| *f == name)
                || BUILTIN_FILES.iter().any(|(f, _)| *f == name);
            assert!(built_in, "images/{name} is not built into the binary");
        }
    }

    #[test]
    fn untested_is_said_and_tested_names_keys() {
        let catalog = Catalog::builtin().expect("builtin");
        assert_eq!(catalog.get("debian-12").expect("d").status(), "tested");
        assert_eq!(catalog.get("flatcar").expect("f").status(), "untested");
    }

    fn minimal(extra: &str) -> String {
        format!(
            r#"
os = "Test"
version = "1"
kind = "installer"
architectures = ["amd64"]
firmware = ["bios"]
memory_mib = 512
cmdline = ""
[mirror]
base = "http://mirror.example/test"
family = "test"
[files]
kernel = "k"
initrd = "i"
{extra}
"#
        )
    }

    #[test]
    fn a_bad_definition_names_the_file_and_the_key() {
        let bad_kind = minimal("[chain]\nkind = \"md5\"");
        let err = Definition::parse("t.toml", &bad_kind, "test").expect_err("kind");
        assert!(err.to_string().starts_with("t.toml: chain.kind"), "{err}");
        let unknown_key = minimal("colour = 1\n[chain]\nkind = \"pinned\"");
        let err = Definition::parse("t.toml", &unknown_key, "test").expect_err("key");
        assert!(err.to_string().contains("colour"), "{err}");
        let escape =
            minimal("[chain]\nkind = \"debian-installer\"\nrelease = \"../x\"\nsums = \"s\"");
        let err = Definition::parse("t.toml", &escape, "test").expect_err("path");
        assert!(err.to_string().contains("chain.release"), "{err}");
        let unpinned = minimal("[chain]\nkind = \"pinned\"\nsha256 = { k = \"00\" }");
        let err = Definition::parse("t.toml", &unpinned, "test").expect_err("pin");
        assert!(err.to_string().contains("64 hex"), "{err}");
    }

    #[test]
    fn an_override_replaces_a_shipped_definition_and_a_new_one_adds() {
        let dir = tempfile::tempdir().expect("tmp");
        let pinned = format!(
            "[chain]\nkind = \"pinned\"\nsha256 = {{ k = \"{}\", i = \"{}\" }}",
            "a".repeat(64),
            "b".repeat(64)
        );
        std::fs::write(dir.path().join("debian-12.toml"), minimal(&pinned)).expect("w");
        std::fs::write(dir.path().join("site-os.toml"), minimal(&pinned)).expect("w");
        let catalog = Catalog::load(dir.path()).expect("load");
        assert_eq!(catalog.get("debian-12").expect("d").os, "Test");
        assert!(catalog.get("site-os").is_some());
        assert!(catalog.get("fedora").is_some());
        std::fs::write(dir.path().join("broken.toml"), "os = ").expect("w");
        let err = Catalog::load(dir.path()).expect_err("broken");
        assert!(err.to_string().contains("broken.toml"), "{err}");
    }

    #[test]
    fn parameters_fill_paths_and_refuse_what_could_move_them() {
        let catalog = Catalog::builtin().expect("builtin");
        let fedora = catalog.get("fedora").expect("fedora");
        let mut given = BTreeMap::new();
        given.insert("release".to_string(), "41".to_string());
        let params = fedora.parameters_with(&given).expect("params");
        let Chain::SignedChecksums { checksums, .. } = &fedora.chain else {
            panic!("fedora's chain is a signed checksum list");
        };
        assert_eq!(
            fedora.expand(checksums, &params),
            "releases/41/Everything/x86_64/iso/Fedora-Everything-41-1.4-x86_64-CHECKSUM"
        );
        given.insert("release".to_string(), "../../etc".to_string());
        assert!(fedora.parameters_with(&given).is_err());
        let mut unknown = BTreeMap::new();
        unknown.insert("colour".to_string(), "red".to_string());
        assert!(fedora.parameters_with(&unknown).is_err());
    }
}
