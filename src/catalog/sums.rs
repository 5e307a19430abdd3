//! Checksum lists, in the two shapes distributions publish:
//!
//! - GNU coreutils (`sha256sum`): `<hex>  path` or `<hex> *path` (binary mode), as
//!   Debian's installer `SHA256SUMS` (`./netboot/...`) and Ubuntu's release
//!   `SHA256SUMS` (`*ubuntu-...iso`) write them. A line starting with `\` has its
//!   name escaped (`\\`, `\n`, `\r`), as `sha256sum` writes names with those in them.
//! - BSD / RPM (`sha256sum --tag`): `SHA256 (name) = <hex>`, as Fedora, Rocky and
//!   Alma write their `CHECKSUM` files, with `#` comment lines.
//!
//! Both may be mixed in one text. Lines of other algorithms are skipped: a tagged line
//! whose tag is not `SHA256`, or a GNU line whose digest is not 64 hex digits but as
//! long as an MD5, SHA-1, SHA-224, SHA-384 or SHA-512 one. Anything else malformed is
//! an error naming its line. A name listed twice with two digests is an error.
//!
//! Bounds: the text is at most [`MAX_SUMS_BYTES`], a line at most [`MAX_LINE_BYTES`],
//! and at most [`MAX_ENTRIES`] sha256 lines are kept.

use std::collections::BTreeMap;

use super::release::sha256_hex;

/// The largest checksum list taken (Debian's installer `SHA256SUMS` is 80 KB).
pub const MAX_SUMS_BYTES: usize = 16 << 20;
/// The longest line taken.
pub const MAX_LINE_BYTES: usize = 4096;
/// The most sha256 entries taken.
pub const MAX_ENTRIES: usize = 100_000;

/// Why a checksum list was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("checksum list is {size} bytes, more than the {max} taken")]
    TooLarge { size: usize, max: usize },
    #[error(
        "checksum list is still clearsigned: verify the signature and pass the signed text only"
    )]
    Clearsigned,
    #[error("checksum list line {line}: {what}")]
    Line { line: usize, what: String },
    #[error("checksum list has more than {0} sha256 entries")]
    TooManyEntries(usize),
}

/// A parsed checksum list: sha256 (lower-case hex) by path, `./` taken off.
#[derive(Debug, Clone, Default)]
pub struct Sums {
    entries: BTreeMap<String, String>,
}

impl Sums {
    /// Parses a `SHA256SUMS` or `CHECKSUM` text (the signed text, if it was signed).
    pub fn parse(text: &str) -> Result<Sums, FormatError> {
        if text.len() > MAX_SUMS_BYTES {
            return Err(FormatError::TooLarge {
                size: text.len(),
                max: MAX_SUMS_BYTES,
            });
        }
        if text.starts_with("-----BEGIN PGP") {
            return Err(FormatError::Clearsigned);
        }
        let mut entries: BTreeMap<String, String> = BTreeMap::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.len() > MAX_LINE_BYTES {
                return Err(FormatError::Line {
                    line,
                    what: format!("line is longer than {MAX_LINE_BYTES} bytes"),
                });
            }
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((name, hex)) =
                parse_line(raw).map_err(|what| FormatError::Line { line, what })?
            else {
                continue;
            };
            let path = normalise(&name);
            if path.is_empty() {
                return Err(FormatError::Line {
                    line,
                    what: "empty file name".into(),
                });
            }
            match entries.get(path) {
                Some(known) if *known == hex => {}
                Some(_) => {
                    return Err(FormatError::Line {
                        line,
                        what: format!("{path} listed again with another sha256"),
                    });
                }
                None => {
                    if entries.len() >= MAX_ENTRIES {
                        return Err(FormatError::TooManyEntries(MAX_ENTRIES));
                    }
                    entries.insert(path.to_string(), hex);
                }
            }
        }
        Ok(Sums { entries })
    }

    /// The sha256 (lower-case hex) listed for `path`; `./name` and `name` are one.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.entries.get(normalise(path)).map(String::as_str)
    }

    /// Every entry, by path.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(p, h)| (p.as_str(), h.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A path with any leading `./` taken off.
fn normalise(mut path: &str) -> &str {
    while let Some(rest) = path.strip_prefix("./") {
        path = rest;
    }
    path
}

/// `Ok(None)` for a line of another algorithm.
fn parse_line(raw: &str) -> Result<Option<(String, String)>, String> {
    if let Some(tagged) = parse_tagged(raw)? {
        return Ok(tagged);
    }
    parse_gnu(raw)
}

/// `TAG (name) = hex`; `Ok(None)` when the line is not of this shape.
#[allow(clippy::type_complexity)]
fn parse_tagged(raw: &str) -> Result<Option<Option<(String, String)>>, String> {
    let Some((tag, rest)) = raw.split_once(" (") else {
        return Ok(None);
    };
    let known = [
        "SHA256", "SHA1", "SHA224", "SHA384", "SHA512", "MD5", "BLAKE2b", "BLAKE2B", "SM3",
    ];
    let is_tag = known.contains(&tag) || tag.starts_with("BLAKE2b-") || tag.starts_with("SHA3-");
    if !is_tag {
        return Ok(None);
    }
    let Some((name, hex)) = rest.rsplit_once(") = ") else {
        return Err(format!("a {tag} line is not `{tag} (name) = <hex>`"));
    };
    if tag != "SHA256" {
        return Ok(Some(None));
    }
    let hex = hex.trim_end();
    let hex = sha256_hex(hex).ok_or_else(|| format!("{hex:?} is not a sha256 in hex"))?;
    Ok(Some(Some((name.to_string(), hex))))
}

/// `hex  name`, `hex *name`, or `\hex  escaped-name`.
fn parse_gnu(raw: &str) -> Result<Option<(String, String)>, String> {
    let (escaped, raw) = match raw.strip_prefix('\\') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let Some((hex, rest)) = raw.split_once(' ') else {
        return Err("line is neither `<hex>  name` nor `SHA256 (name) = <hex>`".into());
    };
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) || hex.is_empty() {
        return Err(format!("{hex:?} is not a digest in hex"));
    }
    // MD5, SHA-1, SHA-224, SHA-384, SHA-512.
    if [32, 40, 56, 96, 128].contains(&hex.len()) {
        return Ok(None);
    }
    let hex = sha256_hex(hex).ok_or_else(|| {
        format!(
            "a digest of {} hex digits is no sha256 (64) nor another known one",
            hex.len()
        )
    })?;
    let Some(name) = rest.strip_prefix([' ', '*']) else {
        return Err("the digest is not followed by two spaces or ` *`".into());
    };
    let name = if escaped {
        unescape(name)?
    } else {
        name.to_string()
    };
    Ok(Some((name, hex)))
}

fn unescape(name: &str) -> Result<String, String> {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            other => return Err(format!("unknown escape \\{}", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
    const B: &str = "fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9";

    #[test]
    fn debian_installer_form() {
        let text = format!(
            "{A}  ./netboot/debian-installer/amd64/linux\n{B}  ./netboot/debian-installer/amd64/initrd.gz\n"
        );
        let sums = Sums::parse(&text).expect("parses");
        assert_eq!(sums.len(), 2);
        assert_eq!(sums.get("netboot/debian-installer/amd64/linux"), Some(A));
        assert_eq!(
            sums.get("./netboot/debian-installer/amd64/initrd.gz"),
            Some(B)
        );
        assert_eq!(sums.get("netboot/debian-installer/amd64/missing"), None);
    }

    #[test]
    fn ubuntu_binary_form() {
        let upper = B.to_ascii_uppercase();
        let text = format!(
            "{A} *ubuntu-24.04.2-live-server-amd64.iso\r\n{upper} *ubuntu-24.04.2-desktop-amd64.iso\r\n"
        );
        let sums = Sums::parse(&text).expect("parses");
        assert_eq!(sums.get("ubuntu-24.04.2-live-server-amd64.iso"), Some(A));
        assert_eq!(sums.get("ubuntu-24.04.2-desktop-amd64.iso"), Some(B));
    }

    #[test]
    fn fedora_rocky_checksum_form() {
        // The shape of Fedora's and Rocky's CHECKSUM files, signature taken off.
        let text = format!(
            "# Fedora-Server-netinst-x86_64-41-1.4.iso: 1174405120 bytes\n\
             SHA256 (Fedora-Server-netinst-x86_64-41-1.4.iso) = {A}\n\
             # Rocky-9.5-x86_64-boot.iso: 1083179008 bytes\n\
             SHA256 (Rocky-9.5-x86_64-boot.iso) = {B}\n\
             SHA512 (Rocky-9.5-x86_64-boot.iso) = {A}{A}\n\
             MD5 (Rocky-9.5-x86_64-boot.iso) = d41d8cd98f00b204e9800998ecf8427e\n\n"
        );
        let sums = Sums::parse(&text).expect("parses");
        assert_eq!(sums.len(), 2);
        assert_eq!(sums.get("Fedora-Server-netinst-x86_64-41-1.4.iso"), Some(A));
        assert_eq!(sums.get("Rocky-9.5-x86_64-boot.iso"), Some(B));
    }

    #[test]
    fn other_algorithms_are_skipped() {
        let text = format!(
            "d41d8cd98f00b204e9800998ecf8427e  a\n{A}{A}  b\nda39a3ee5e6b4b0d3255bfef95601890afd80709  c\n{A}  d\n"
        );
        let sums = Sums::parse(&text).expect("parses");
        assert_eq!(sums.iter().collect::<Vec<_>>(), vec![("d", A)]);
    }

    #[test]
    fn escaped_names_and_spaces() {
        let text = format!("\\{A}  dir\\\\with\\nnewline\n{B}  name with spaces.iso\n");
        let sums = Sums::parse(&text).expect("parses");
        assert_eq!(sums.get("dir\\with\nnewline"), Some(A));
        assert_eq!(sums.get("name with spaces.iso"), Some(B));
    }

    fn line_of(text: &str) -> usize {
        match Sums::parse(text).unwrap_err() {
            FormatError::Line { line, .. } => line,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn malformed_lines_name_their_number() {
        assert_eq!(line_of(&format!("{A}  a\n\n{}  b\n", &A[1..])), 3);
        assert_eq!(line_of(&format!("# c\nSHA256 (x) = {}\n", &A[..60])), 2);
        assert_eq!(line_of("SHA256 (x) = \n"), 1);
        assert_eq!(line_of("SHA256 (x)\n"), 1);
        assert_eq!(line_of(&format!("{A}\n")), 1);
        assert_eq!(line_of(&format!("{A}-x\n")), 1);
        assert_eq!(line_of(&format!("{A}  a\n{B}  ./a\n")), 2);
        assert_eq!(line_of(&format!("{A}  \n")), 1);
        assert_eq!(
            line_of(&format!("{A}  {}\n", "n".repeat(MAX_LINE_BYTES))),
            1
        );
        assert_eq!(line_of("just words\n"), 1);
        let err = Sums::parse(&format!("{A}  a\n{A}x a\n")).unwrap_err();
        assert!(
            err.to_string().starts_with("checksum list line 2: "),
            "{err}"
        );
        // The same digest twice is no conflict.
        assert!(Sums::parse(&format!("{A}  a\n{A}  ./a\n")).is_ok());
        assert_eq!(
            Sums::parse("-----BEGIN PGP SIGNED MESSAGE-----\n").unwrap_err(),
            FormatError::Clearsigned
        );
    }
}
