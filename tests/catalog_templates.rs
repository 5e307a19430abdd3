//! The unattended-install templates of the image catalog (`images/templates/`),
//! rendered with rackboot's own engine (`script::render_source`) for sample
//! machines and handed to each distribution's own validator: debconf's parser for
//! the Debian preseed, pykickstart's ksvalidator for the kickstarts, cloud-init's
//! schema check and subiquity's published schema for the Ubuntu user-data, and
//! ignition-validate for Flatcar. Beyond "the validator accepts it", each test
//! checks what rackboot relies on: the machine's name, its SSH keys byte for byte,
//! and the done-URL as the last thing the installer runs.
//!
//! The validators are not fetched here: scripts/test installs the Debian packages
//! they need and unpacks the rest into `/var/cache/rackboot-tests`. A missing one
//! fails the test, naming it; nothing is skipped. Rendered files are kept under
//! this test's target tmpdir for a look after a failure.

use minijinja::{Value, context};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where scripts/test unpacks cloud-init, ignition and pykickstart.
const TOOLS: &str = "/var/cache/rackboot-tests";
/// Debian's Python: the python3-* packages scripts/test installs are its.
const PYTHON: &str = "/usr/bin/python3";
const MAC: &str = "52:54:00:12:34:56";
const BASE_URL: &str = "http://192.0.2.1:8080";
const DONE_URL: &str = "http://192.0.2.1:8080/done/8d5e0c41f2a9";
const PROGRESS_URL: &str = "http://192.0.2.1:8080/progress/8d5e0c41f2a9";

const KEYS: &[&str] = &[
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINonY3uYsTmkQ5e9nCIrqTRIwp9ZX6KSDqogvTDw5x2G ops@rack",
    // Options with double quotes and a comment with an apostrophe: each template
    // must carry a key through its own quoting (shell, kickstart, YAML, JSON).
    r#"from="192.0.2.0/24",no-agent-forwarding ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3X37Oa8p6XSFOehGRUtiVPlgJPh/utzZMD59rdkvJF o'brien@laptop"#,
];

/// A machine as the inventory describes it.
struct Machine {
    label: &'static str,
    hostname: Option<&'static str>,
    domain: Option<&'static str>,
    ip: Option<&'static str>,
    done_url: Option<&'static str>,
    progress_url: Option<&'static str>,
    ssh_keys: &'static [&'static str],
    install_disk: Option<&'static str>,
    console: Option<&'static str>,
    /// A local mirror on a port of its own rather than the distribution's.
    local_mirror: bool,
}

impl Machine {
    /// The name the templates give it: the inventory's, else one from the MAC.
    fn name(&self) -> &'static str {
        self.hostname.unwrap_or("host-525400123456")
    }
}

/// Everything set.
const FULL: Machine = Machine {
    label: "full",
    hostname: Some("node01"),
    domain: Some("lab.example"),
    ip: Some("192.0.2.20"),
    done_url: Some(DONE_URL),
    progress_url: Some(PROGRESS_URL),
    ssh_keys: KEYS,
    install_disk: Some("/dev/vda"),
    console: Some("ttyS1,115200n8"),
    local_mirror: false,
};

/// Everything that may be absent, absent.
const BARE: Machine = Machine {
    label: "bare",
    hostname: None,
    domain: None,
    ip: None,
    done_url: None,
    progress_url: None,
    ssh_keys: &[],
    install_disk: None,
    console: None,
    local_mirror: true,
};

const MACHINES: [&Machine; 2] = [&FULL, &BARE];

/// What checks a template's output.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Preseed,
    /// ksvalidator's syntax version.
    Kickstart(&'static str),
    UserData,
    MetaData,
    Ignition,
}

/// One template of the catalog, with the image it belongs to.
struct Template {
    file: &'static str,
    image: &'static str,
    kind: Kind,
    /// The distribution's mirror as the catalog would give it.
    mirror: &'static str,
    release: Option<&'static str>,
}

/// Every template in images/templates/: a file not named here fails
/// `every_template_has_a_validator`.
const TEMPLATES: &[Template] = &[
    Template {
        file: "debian-12.preseed",
        image: "debian-12",
        kind: Kind::Preseed,
        mirror: "http://deb.debian.org/debian",
        release: None,
    },
    Template {
        file: "ubuntu-24.04.user-data",
        image: "ubuntu-24.04",
        kind: Kind::UserData,
        mirror: "http://archive.ubuntu.com/ubuntu",
        release: None,
    },
    Template {
        file: "ubuntu-24.04.meta-data",
        image: "ubuntu-24.04",
        kind: Kind::MetaData,
        mirror: "http://archive.ubuntu.com/ubuntu",
        release: None,
    },
    Template {
        file: "rocky-9.ks",
        image: "rocky-9",
        kind: Kind::Kickstart("RHEL9"),
        mirror: "http://dl.rockylinux.org/pub/rocky",
        release: None,
    },
    Template {
        file: "alma-9.ks",
        image: "alma-9",
        kind: Kind::Kickstart("RHEL9"),
        mirror: "http://repo.almalinux.org/almalinux",
        release: None,
    },
    Template {
        file: "fedora.ks",
        image: "fedora",
        kind: Kind::Kickstart("F42"),
        mirror: "http://dl.fedoraproject.org/pub/fedora/linux",
        release: Some("42"),
    },
    Template {
        file: "flatcar.ign",
        image: "flatcar",
        kind: Kind::Ignition,
        mirror: "http://stable.release.flatcar-linux.net/amd64-usr",
        release: None,
    },
];

fn templates_of(kind: fn(Kind) -> bool) -> impl Iterator<Item = &'static Template> {
    TEMPLATES.iter().filter(move |t| kind(t.kind))
}

fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("images/templates")
}

fn out_dir(machine: &Machine) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("catalog-templates")
        .join(machine.label);
    std::fs::create_dir_all(&dir).expect("create the output directory");
    dir
}

/// The mirror a machine gets, as the map the server passes.
fn mirror(machine: &Machine, template: &Template) -> Value {
    let (scheme, rest) = template.mirror.split_once("://").expect("a URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = if machine.local_mirror {
        "192.0.2.1:3142"
    } else {
        host
    };
    context! {
        url => format!("{scheme}://{host}{path}"),
        scheme => scheme,
        host => host,
        path => path,
    }
}

/// The context the server builds for a machine and one of its image's templates.
fn context_for(machine: &Machine, template: &Template) -> Value {
    context! {
        hostname => machine.hostname,
        domain => machine.domain,
        mac => MAC,
        ip => machine.ip,
        image => template.image,
        mode => "install",
        done_url => machine.done_url,
        progress_url => machine.progress_url,
        ssh_keys => machine.ssh_keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        base_url => BASE_URL,
        files_url => format!("{BASE_URL}/machines/{MAC}/files"),
        mirror => mirror(machine, template),
        install_disk => machine.install_disk,
        console => machine.console,
        release => template.release,
    }
}

/// Renders a template for a machine; returns the text and the file it was written to.
fn render(machine: &Machine, template: &Template) -> (String, PathBuf) {
    let source = std::fs::read_to_string(templates_dir().join(template.file))
        .unwrap_or_else(|e| panic!("read images/templates/{}: {e}", template.file));
    let text =
        rackboot::script::render_source(template.file, source, context_for(machine, template))
            .unwrap_or_else(|e| {
                panic!("{} for the {} machine: {e:#}", template.file, machine.label)
            });
    let path = out_dir(machine).join(template.file);
    std::fs::write(&path, &text).expect("write the rendered template");
    (text, path)
}

/// A validator's path, or a failure that names it and where it comes from.
fn tool(path: &str, what: &str) -> PathBuf {
    let path = PathBuf::from(path);
    assert!(
        path.exists(),
        "{what} is missing: no {} (scripts/test installs it; run that first)",
        path.display()
    );
    path
}

fn run(what: &str, command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Debian's Python with the unpacked tree on its path; user site-packages are left
/// out so what a developer pip-installed cannot stand in for Debian's modules.
fn python(pythonpath: Option<&Path>) -> Command {
    let mut command = Command::new(tool(PYTHON, "Debian's python3 (package python3)"));
    command.arg("-s");
    if let Some(path) = pythonpath {
        command.env("PYTHONPATH", path);
    }
    command
}

/// The modules of Debian's Python that the validators and helpers import, with
/// their packages.
const PYTHON_MODULES: &[(&str, &str)] = &[
    ("yaml", "python3-yaml"),
    ("jsonschema", "python3-jsonschema"),
    ("jinja2", "python3-jinja2"),
    ("configobj", "python3-configobj"),
    ("jsonpatch", "python3-jsonpatch"),
    ("requests", "python3-requests"),
];

/// Checked once, first, so that a missing module is named with its Debian
/// package rather than surfacing as a validator's verdict.
fn require_python_modules() {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let names: Vec<&str> = PYTHON_MODULES.iter().map(|(m, _)| *m).collect();
        let script = "import importlib.util, sys\n\
                      print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))";
        let out = run("python3", python(None).args(["-c", script]).args(&names));
        if !out.status.success() {
            return Err(format!("python3 fails: {}", text(&out.stderr)));
        }
        let missing: Vec<String> = text(&out.stdout)
            .split_whitespace()
            .map(|m| {
                let package = PYTHON_MODULES.iter().find(|(n, _)| *n == m).map_or("?", |(_, p)| p);
                format!("{m} (Debian package {package})")
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "python3 modules missing: {} (scripts/test installs them)",
                missing.join(", ")
            ))
        }
    });
    if let Err(e) = checked {
        panic!("{e}");
    }
}

/// Runs a shell script with `from` in it moved to `to` in a scratch tree (so
/// `/target` or `/root/` lands there) and its network and chroot commands as
/// stubs that log their arguments. Returns the scratch directory (read its files
/// with `file_in`) and the stubs' log, one call a line.
fn run_with_stubs(
    script: &str,
    from: &str,
    to: &str,
    stubs: &[&str],
) -> (tempfile::TempDir, Vec<String>) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let bin = scratch.path().join("bin");
    let tree = scratch.path().join("tree");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    std::fs::create_dir_all(&tree).expect("mkdir tree");
    let log = scratch.path().join("calls.log");
    for stub in stubs {
        let path = bin.join(stub);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> '{}'\n",
                log.display()
            ),
        )
        .expect("write stub");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let script = script.replace(from, &tree.join(to).display().to_string());
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let out = run(
        "sh",
        Command::new("/bin/sh")
            .args(["-c", &script])
            .env("PATH", path),
    );
    assert!(
        out.status.success(),
        "the script failed ({}): {}\n{script}",
        out.status,
        text(&out.stderr)
    );
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    let calls = calls.lines().map(str::to_string).collect();
    (scratch, calls)
}

fn file_in(scratch: &tempfile::TempDir, path: &str) -> String {
    std::fs::read_to_string(
        scratch
            .path()
            .join("tree")
            .join(path.trim_start_matches('/')),
    )
    .unwrap_or_else(|e| panic!("the script wrote no {path}: {e}"))
}

#[test]
fn every_template_has_a_validator() {
    let mut files: Vec<String> = std::fs::read_dir(templates_dir())
        .expect("images/templates/")
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    for file in &files {
        assert!(
            TEMPLATES.iter().any(|t| t.file == file),
            "images/templates/{file} is checked by no validator: add it to TEMPLATES"
        );
    }
    for template in TEMPLATES {
        assert!(
            files.iter().any(|f| f == template.file),
            "TEMPLATES names {} but images/templates/ has no such file",
            template.file
        );
    }
}

// ---------------------------------------------------------------- preseed

/// debconf-set-selections' verdict. It exits 0 on a line it skips (an unknown
/// type is a warning only), so any word from it is a rejection too.
fn debconf_check(file: &Path) -> Result<(), String> {
    let tool = tool(
        "/usr/bin/debconf-set-selections",
        "debconf-set-selections (Debian package debconf)",
    );
    let out = run(
        "debconf-set-selections",
        Command::new(tool).arg("--checkonly").arg(file),
    );
    if out.status.success() && out.stdout.is_empty() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        ))
    }
}

/// Preseed lines as debconf-set-selections reads them: `\` continues a line,
/// blank and `#` lines are skipped, the value follows the type after one blank.
fn preseed_lines(text: &str) -> Vec<(String, String, String, String)> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(start) = line.strip_suffix('\\') {
            current.push_str(start);
            continue;
        }
        current.push_str(line);
        logical.push(std::mem::take(&mut current));
    }
    logical
        .into_iter()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| {
            let l = l.trim_start();
            let mut fields = l.splitn(3, char::is_whitespace);
            let owner = fields.next().unwrap_or_default().to_string();
            let question = fields.next().unwrap_or_default().to_string();
            let rest = fields.next().unwrap_or_default();
            let (kind, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            (owner, question, kind.to_string(), value.to_string())
        })
        .collect()
}

/// What debconf-set-selections does not check: a question set twice (the last
/// wins, silently) and a boolean that is neither true nor false.
fn preseed_own_checks(lines: &[(String, String, String, String)]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (owner, question, kind, value) in lines {
        if !seen.insert((owner, question)) {
            return Err(format!("{owner} {question} is set twice"));
        }
        if kind == "boolean" && value != "true" && value != "false" {
            return Err(format!("{question} is a boolean set to {value:?}"));
        }
    }
    Ok(())
}

fn preseed_value<'a>(
    lines: &'a [(String, String, String, String)],
    question: &str,
) -> Option<&'a str> {
    lines
        .iter()
        .find(|(_, q, _, _)| q == question)
        .map(|(_, _, _, v)| v.as_str())
}

#[test]
fn debian_preseed_passes_debconf_and_does_what_rackboot_needs() {
    for template in templates_of(|k| k == Kind::Preseed) {
        for machine in MACHINES {
            let (text, file) = render(machine, template);
            let at = format!(
                "{} for the {} machine ({})",
                template.file,
                machine.label,
                file.display()
            );
            debconf_check(&file).unwrap_or_else(|e| panic!("debconf rejects {at}: {e}"));
            let lines = preseed_lines(&text);
            preseed_own_checks(&lines).unwrap_or_else(|e| panic!("{at}: {e}"));
            let value = |q: &str| preseed_value(&lines, q);

            assert_eq!(value("netcfg/get_hostname"), Some(machine.name()), "{at}");
            assert_eq!(
                value("netcfg/get_domain"),
                Some(machine.domain.unwrap_or("")),
                "{at}"
            );
            assert_eq!(value("netcfg/hostname"), machine.hostname, "{at}");
            assert_eq!(value("hw-detect/load_firmware"), Some("false"), "{at}");
            assert_eq!(
                value("debian-installer/locale"),
                Some("en_US.UTF-8"),
                "{at}"
            );
            assert_eq!(value("time/zone"), Some("UTC"), "{at}");
            assert_eq!(value("clock-setup/ntp"), Some("true"), "{at}");
            assert_eq!(value("passwd/root-password-crypted"), Some("!"), "{at}");
            assert_eq!(value("passwd/make-user"), Some("false"), "{at}");
            assert_eq!(value("passwd/root-password"), None, "{at}");
            assert_eq!(value("partman-auto/disk"), machine.install_disk, "{at}");
            assert_eq!(
                value("finish-install/reboot_in_progress").map(str::is_empty),
                Some(true),
                "{at}"
            );
            let host = if machine.local_mirror {
                "192.0.2.1:3142"
            } else {
                "deb.debian.org"
            };
            assert_eq!(value("mirror/http/hostname"), Some(host), "{at}");
            assert_eq!(value("mirror/http/directory"), Some("/debian"), "{at}");
            assert!(
                value("pkgsel/include")
                    .is_some_and(|v| v.split(' ').any(|p| p == "openssh-server")),
                "{at}"
            );
            match machine.console {
                Some(console) => assert_eq!(
                    value("debian-installer/add-kernel-opts"),
                    Some(format!("console=tty0 console={console}").as_str()),
                    "{at}"
                ),
                None => assert_eq!(value("debian-installer/add-kernel-opts"), None, "{at}"),
            }
            match machine.progress_url {
                Some(url) => assert_eq!(
                    value("preseed/early_command"),
                    Some(
                        format!("wget -q -O /dev/null '{url}/installer-started' || true").as_str()
                    ),
                    "{at}"
                ),
                None => assert_eq!(value("preseed/early_command"), None, "{at}"),
            }

            // late_command: the done-URL is its very last command, and run (with
            // /target moved aside and the network stubbed) it writes exactly the
            // keys and the serial console.
            let Some(late) = value("preseed/late_command") else {
                // Nothing to do after the install: no keys, console or done-URL.
                assert!(
                    machine.ssh_keys.is_empty()
                        && machine.console.is_none()
                        && machine.done_url.is_none(),
                    "{at}: no late_command"
                );
                continue;
            };
            let last = late.rsplit("; ").next().unwrap_or_default().trim();
            match machine.done_url {
                Some(url) => assert_eq!(last, format!("wget -q -O /dev/null '{url}'"), "{at}"),
                None => assert!(!late.contains("/done/"), "{at}: {late}"),
            }
            let (scratch, calls) = run_with_stubs(late, "/target", "", &["wget", "in-target"]);
            if machine.ssh_keys.is_empty() {
                assert!(
                    !scratch
                        .path()
                        .join("tree/root/.ssh/authorized_keys")
                        .exists(),
                    "{at}"
                );
            } else {
                let mut keys = machine.ssh_keys.join("\n");
                keys.push('\n');
                assert_eq!(
                    file_in(&scratch, "/root/.ssh/authorized_keys"),
                    keys,
                    "{at}"
                );
            }
            if machine.console.is_some() {
                assert_eq!(
                    file_in(&scratch, "/etc/default/grub.d/99-rackboot-console.cfg"),
                    "GRUB_TERMINAL=\"console serial\"\nGRUB_SERIAL_COMMAND=\"serial --unit=1 --speed=115200\"\n",
                    "{at}"
                );
                assert!(
                    calls.iter().any(|c| c == "in-target update-grub"),
                    "{at}: {calls:?}"
                );
            }
            if let Some(url) = machine.done_url {
                assert_eq!(
                    calls.last().map(String::as_str),
                    Some(format!("wget -q -O /dev/null {url}").as_str()),
                    "{at}"
                );
            }
        }
    }
}

#[test]
fn debconf_check_rejects_what_it_should() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        debconf_check(&path)
    };
    assert_eq!(
        check("good.preseed", "d-i netcfg/get_hostname string node01\n"),
        Ok(())
    );
    // A type that is not one: a warning (exit 0), which the check counts.
    let error = check("bad-type.preseed", "d-i netcfg/get_hostname strin node01\n")
        .expect_err("an unknown type is refused");
    assert!(error.contains("Unknown type strin"), "{error}");
    // A line without a type: a parse error (exit 1).
    let error =
        check("no-type.preseed", "d-i netcfg/get_hostname\n").expect_err("a short line is refused");
    assert!(error.contains("parse error"), "{error}");
    // The test's own check, for what debconf does not look at.
    let lines = preseed_lines("d-i clock-setup/utc boolean yes\n");
    assert!(preseed_own_checks(&lines).is_err());
}

// ---------------------------------------------------------------- kickstart

fn pykickstart() -> PathBuf {
    tool(
        &format!("{TOOLS}/pykickstart/bin/ksvalidator"),
        "ksvalidator (PyPI pykickstart, unpacked by scripts/test)",
    );
    PathBuf::from(format!("{TOOLS}/pykickstart"))
}

/// ksvalidator's verdict on some files (one run: pykickstart takes a while to
/// load). It prints a "Checking kickstart file" line for each file and its
/// errors below it, and exits with the count of errors (which a shell would see
/// modulo 256), so anything but those lines is a rejection too.
fn ksvalidator(version: &str, files: &[&Path]) -> Result<(), String> {
    require_python_modules();
    let root = pykickstart();
    let out = run(
        "ksvalidator",
        python(Some(&root))
            .arg(root.join("bin/ksvalidator"))
            .args(["-v", version])
            .args(files),
    );
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    let expected: Vec<String> = files
        .iter()
        .map(|f| format!("Checking kickstart file {}", f.display()))
        .collect();
    if out.status.success() && lines == expected {
        Ok(())
    } else {
        Err(format!("{}: {said}", out.status))
    }
}

/// What anaconda will act on, as pykickstart parses it: one JSON object a file.
const KS_FACTS: &str = r#"
import json, sys
from pykickstart.constants import KS_SCRIPT_POST, KS_SCRIPT_PRE
from pykickstart.parser import KickstartParser
from pykickstart.version import makeVersion
kinds = {KS_SCRIPT_PRE: "pre", KS_SCRIPT_POST: "post"}
facts = []
for path in sys.argv[2:]:
    handler = makeVersion(sys.argv[1])
    KickstartParser(handler).readKickstart(path)
    facts.append({
        "url": handler.url.url,
        "hostnames": [n.hostname for n in handler.network.network],
        "rootpw_lock": handler.rootpw.lock,
        "rootpw": handler.rootpw.password,
        "sshkeys": [k.key for k in handler.sshkey.sshUserList],
        "onlyuse": handler.ignoredisk.onlyuse,
        "autopart": handler.autopart.autopart,
        "append": handler.bootloader.appendLine,
        "reboot": handler.reboot.action is not None,
        "packages": handler.packages.packageList,
        "scripts": [{"kind": kinds.get(s.type, str(s.type)), "chroot": s.inChroot,
                     "errorOnFail": s.errorOnFail, "body": s.script} for s in handler.scripts],
    })
json.dump(facts, sys.stdout)
"#;

fn ks_facts(version: &str, files: &[&Path]) -> Vec<Json> {
    let root = pykickstart();
    let out = run(
        "pykickstart",
        python(Some(&root))
            .args(["-c", KS_FACTS, version])
            .args(files),
    );
    assert!(
        out.status.success(),
        "pykickstart cannot parse {files:?}: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the facts are JSON")
}

#[test]
fn kickstarts_pass_ksvalidator_and_do_what_rackboot_needs() {
    let mut versions: Vec<&str> = templates_of(|k| matches!(k, Kind::Kickstart(_)))
        .map(|t| match t.kind {
            Kind::Kickstart(version) => version,
            _ => unreachable!(),
        })
        .collect();
    versions.dedup();
    for version in versions {
        let renders: Vec<(&Template, &Machine, PathBuf)> = TEMPLATES
            .iter()
            .filter(|t| t.kind == Kind::Kickstart(version))
            .flat_map(|t| MACHINES.iter().map(move |m| (t, *m, render(m, t).1)))
            .collect();
        let files: Vec<&Path> = renders.iter().map(|(_, _, f)| f.as_path()).collect();
        ksvalidator(version, &files)
            .unwrap_or_else(|e| panic!("ksvalidator -v {version} rejects a kickstart: {e}"));
        let all_facts = ks_facts(version, &files);
        for ((template, machine, file), facts) in renders.iter().zip(&all_facts) {
            let at = format!(
                "{} for the {} machine ({})",
                template.file,
                machine.label,
                file.display()
            );

            let name = match machine.domain {
                Some(domain) => format!("{}.{domain}", machine.name()),
                None => machine.name().to_string(),
            };
            assert_eq!(facts["hostnames"], serde_json::json!([name]), "{at}");
            let url = facts["url"].as_str().unwrap_or_default();
            let mirror = if machine.local_mirror {
                template.mirror.replacen(
                    template.mirror.split('/').nth(2).unwrap_or_default(),
                    "192.0.2.1:3142",
                    1,
                )
            } else {
                template.mirror.to_string()
            };
            assert!(url.starts_with(&format!("{mirror}/")), "{at}: {url}");
            if let Some(release) = template.release {
                assert!(
                    url.contains(&format!("/releases/{release}/")),
                    "{at}: {url}"
                );
            }
            assert_eq!(facts["rootpw_lock"], true, "{at}");
            assert_eq!(facts["rootpw"], "", "{at}");
            assert_eq!(facts["autopart"], true, "{at}");
            assert_eq!(facts["reboot"], true, "{at}");
            assert!(
                facts["packages"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p == "openssh-server")),
                "{at}"
            );
            let only_use: Vec<&str> = machine.install_disk.into_iter().collect();
            assert_eq!(facts["onlyuse"], serde_json::json!(only_use), "{at}");
            let append = machine
                .console
                .map(|c| format!("console=tty0 console={c}"))
                .unwrap_or_default();
            assert_eq!(facts["append"], append, "{at}");

            let scripts = facts["scripts"].as_array().expect("scripts");
            let pre: Vec<&Json> = scripts.iter().filter(|s| s["kind"] == "pre").collect();
            match machine.progress_url {
                Some(url) => {
                    assert_eq!(pre.len(), 1, "{at}");
                    assert_eq!(
                        pre[0]["body"].as_str().unwrap_or_default().trim(),
                        format!("curl -fsS -o /dev/null '{url}/installer-started' || true"),
                        "{at}"
                    );
                }
                None => assert!(pre.is_empty(), "{at}"),
            }
            let post: Vec<&Json> = scripts.iter().filter(|s| s["kind"] == "post").collect();
            // Keys: written in the installed system (chroot) by the first %post,
            // exactly; run here with /root moved aside.
            let key_posts: Vec<&&Json> = post.iter().filter(|s| s["chroot"] == true).collect();
            if machine.ssh_keys.is_empty() {
                assert!(key_posts.is_empty(), "{at}");
            } else {
                assert_eq!(key_posts.len(), 1, "{at}");
                assert_eq!(key_posts[0]["errorOnFail"], true, "{at}");
                let body = key_posts[0]["body"].as_str().unwrap_or_default();
                let (scratch, _) = run_with_stubs(body, "/root/", "root/", &["restorecon"]);
                let mut keys = machine.ssh_keys.join("\n");
                keys.push('\n');
                assert_eq!(
                    file_in(&scratch, "/root/.ssh/authorized_keys"),
                    keys,
                    "{at}"
                );
            }
            // The done-URL: the last line of the last %post.
            match machine.done_url {
                Some(url) => {
                    let last = post.last().unwrap_or_else(|| panic!("{at}: no %post"));
                    assert_eq!(last["chroot"], false, "{at}");
                    assert_eq!(last["errorOnFail"], true, "{at}");
                    let body = last["body"].as_str().unwrap_or_default();
                    let last_line = body
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or_default();
                    assert_eq!(last_line, format!("curl -fsS -o /dev/null '{url}'"), "{at}");
                }
                None => assert!(
                    !post
                        .iter()
                        .any(|s| s["body"].as_str().is_some_and(|b| b.contains("/done/"))),
                    "{at}"
                ),
            }
        }
    }
}

#[test]
fn fedora_kickstart_without_a_release_is_refused() {
    let template = TEMPLATES
        .iter()
        .find(|t| t.file == "fedora.ks")
        .expect("fedora.ks");
    let source = std::fs::read_to_string(templates_dir().join(template.file)).expect("read");
    let without = Template {
        release: None,
        ..*template
    };
    let error =
        rackboot::script::render_source(template.file, source, context_for(&FULL, &without))
            .expect_err("no release, no kickstart");
    assert!(
        error
            .to_string()
            .contains("fedora_ks_needs_a_release_number is unknown"),
        "{error}"
    );
}

#[test]
fn ksvalidator_rejects_what_it_should() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        path
    };
    let good = write("good.ks", "text\nrootpw --lock\nreboot\n");
    // timesource came with RHEL 9: the syntax version is honoured.
    let timesource = write("timesource.ks", "timesource --ntp-pool=pool.ntp.org\n");
    assert_eq!(ksvalidator("RHEL9", &[&good, &timesource]), Ok(()));
    let unknown = write("unknown.ks", "text\nbogus --now\n");
    let error = ksvalidator("RHEL9", &[&unknown]).expect_err("an unknown command is refused");
    assert!(error.contains("Unknown command: bogus"), "{error}");
    let error = ksvalidator("RHEL8", &[&timesource]).expect_err("RHEL 8 has no timesource");
    assert!(error.contains("Unknown command: timesource"), "{error}");
}

// ---------------------------------------------------------------- Ubuntu

fn cloud_init() -> (PathBuf, PathBuf) {
    let root = PathBuf::from(format!("{TOOLS}/cloud-init"));
    let script = tool(
        &format!("{TOOLS}/cloud-init/usr/bin/cloud-init"),
        "cloud-init (Debian package cloud-init, unpacked by scripts/test)",
    );
    (script, root.join("usr/lib/python3/dist-packages"))
}

/// cloud-init's schema check of a cloud-config. It exits 0 with deprecations
/// printed, so only its one "Valid" line is a pass.
fn cloud_init_schema(file: &Path) -> Result<(), String> {
    require_python_modules();
    let (script, modules) = cloud_init();
    let out = run(
        "cloud-init schema",
        python(Some(&modules))
            .arg(script)
            .args(["schema", "--config-file"])
            .arg(file),
    );
    let stdout = text(&out.stdout);
    if out.status.success()
        && out.stderr.is_empty()
        && stdout == format!("Valid cloud-config: {}\n", file.display())
    {
        Ok(())
    } else {
        Err(format!("{}: {stdout}{}", out.status, text(&out.stderr)))
    }
}

fn subiquity_schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/catalog/subiquity-autoinstall-schema.json")
}

/// Checks the `autoinstall:` section against subiquity's schema, writes the
/// installed system's cloud-config (its `user-data:`) to a file of its own, and
/// prints the whole document as JSON.
const AUTOINSTALL: &str = r##"
import json, sys, yaml, jsonschema
path, schema_path, nested = sys.argv[1:4]
with open(path) as f:
    text = f.read()
if not text.startswith("#cloud-config\n"):
    sys.exit("the user-data does not start with #cloud-config")
doc = yaml.safe_load(text)
with open(schema_path) as f:
    jsonschema.validate(doc["autoinstall"], json.load(f))
installed = dict(doc["autoinstall"].get("user-data", {}))
# "users: []" (no default user) is valid since cloud-init 23.2 (upstream commit
# 3ee3846, "schema permit empty list"; Ubuntu 24.04 has 24.x), but the 22.4
# schema that checks it here still says minItems 1. The test asserts it apart.
if installed.get("users") == []:
    del installed["users"]
with open(nested, "w") as f:
    f.write("#cloud-config\n")
    yaml.safe_dump(installed, f)
json.dump(doc, sys.stdout)
"##;

fn autoinstall(file: &Path, nested: &Path) -> Result<Json, String> {
    require_python_modules();
    let out = run(
        "the subiquity schema check",
        python(None)
            .args(["-c", AUTOINSTALL])
            .arg(file)
            .arg(subiquity_schema())
            .arg(nested),
    );
    if out.status.success() {
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    } else {
        Err(text(&out.stderr))
    }
}

#[test]
fn ubuntu_user_data_passes_cloud_init_and_subiquity_and_does_what_rackboot_needs() {
    for template in templates_of(|k| k == Kind::UserData) {
        for machine in MACHINES {
            let (_, file) = render(machine, template);
            let at = format!(
                "{} for the {} machine ({})",
                template.file,
                machine.label,
                file.display()
            );
            cloud_init_schema(&file).unwrap_or_else(|e| panic!("cloud-init rejects {at}: {e}"));
            let nested = file.with_extension("installed-user-data");
            let doc = autoinstall(&file, &nested)
                .unwrap_or_else(|e| panic!("subiquity's schema rejects {at}: {e}"));
            // What subiquity hands to the installed system: a cloud-config too.
            cloud_init_schema(&nested).unwrap_or_else(|e| {
                panic!("cloud-init rejects the installed system's part of {at}: {e}")
            });

            let ai = &doc["autoinstall"];
            assert_eq!(ai["version"], 1, "{at}");
            assert_eq!(ai["shutdown"], "reboot", "{at}");
            assert_eq!(ai["locale"], "en_US.UTF-8", "{at}");
            assert_eq!(ai["ssh"]["install-server"], true, "{at}");
            assert_eq!(ai["ssh"]["allow-pw"], false, "{at}");
            assert_eq!(
                ai["ssh"]["authorized-keys"],
                serde_json::json!(machine.ssh_keys),
                "{at}"
            );
            assert_eq!(ai["user-data"]["hostname"], machine.name(), "{at}");
            assert_eq!(ai["user-data"]["disable_root"], false, "{at}");
            assert_eq!(ai["user-data"]["users"], serde_json::json!([]), "{at}");
            assert!(
                ai.get("identity").is_none(),
                "{at}: no password, so no identity"
            );
            let mirror = ai["apt"]["primary"][0]["uri"].as_str().unwrap_or_default();
            let host = if machine.local_mirror {
                "192.0.2.1:3142"
            } else {
                "archive.ubuntu.com"
            };
            assert_eq!(mirror, format!("http://{host}/ubuntu"), "{at}");
            let layout = &ai["storage"]["layout"];
            match machine.install_disk {
                Some(disk) => assert_eq!(layout["match"]["path"], disk, "{at}"),
                None => assert!(layout.get("match").is_none(), "{at}"),
            }
            match machine.progress_url {
                Some(url) => assert_eq!(
                    ai["early-commands"],
                    serde_json::json!([format!(
                        "curl -fsS -o /dev/null '{url}/installer-started' || true"
                    )]),
                    "{at}"
                ),
                None => assert!(ai.get("early-commands").is_none(), "{at}"),
            }
            let late: Vec<&str> = ai["late-commands"]
                .as_array()
                .map(|l| l.iter().filter_map(Json::as_str).collect())
                .unwrap_or_default();
            match machine.done_url {
                Some(url) => assert_eq!(
                    late.last().copied(),
                    Some(format!("curl -fsS -o /dev/null '{url}'").as_str()),
                    "{at}"
                ),
                None => assert!(!late.iter().any(|c| c.contains("/done/")), "{at}"),
            }
            if machine.console.is_some() {
                let script = late[..late.len() - 1].join("\n");
                let (scratch, calls) = run_with_stubs(&script, "/target", "", &["curtin"]);
                assert_eq!(
                    file_in(&scratch, "/etc/default/grub.d/99-rackboot-console.cfg"),
                    "GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX console=tty0 console=ttyS1,115200n8\"\n\
                     GRUB_TERMINAL=\"console serial\"\n\
                     GRUB_SERIAL_COMMAND=\"serial --unit=1 --speed=115200\"\n",
                    "{at}"
                );
                assert!(
                    calls.iter().any(|c| c.ends_with("-- update-grub")),
                    "{at}: {calls:?}"
                );
            }
        }
    }
}

#[test]
fn ubuntu_meta_data_names_the_machine() {
    require_python_modules();
    for template in templates_of(|k| k == Kind::MetaData) {
        for machine in MACHINES {
            let (_, file) = render(machine, template);
            let at = format!(
                "{} for the {} machine ({})",
                template.file,
                machine.label,
                file.display()
            );
            let out = run(
                "python3",
                python(None)
                    .args([
                        "-c",
                        "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
                    ])
                    .arg(&file),
            );
            assert!(
                out.status.success(),
                "{at} is not YAML: {}",
                text(&out.stderr)
            );
            let doc: Json = serde_json::from_slice(&out.stdout).expect("JSON");
            assert_eq!(
                doc,
                serde_json::json!({
                    "instance-id": "rackboot-525400123456",
                    "local-hostname": machine.name(),
                }),
                "{at}"
            );
        }
    }
}

#[test]
fn cloud_init_and_subiquity_schemas_reject_what_they_should() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        path
    };
    let good = write("good.yaml", "#cloud-config\nhostname: node01\n");
    assert_eq!(cloud_init_schema(&good), Ok(()));
    let wrong_type = write("wrong-type.yaml", "#cloud-config\nhostname: 3\n");
    let error = cloud_init_schema(&wrong_type).expect_err("a number for a hostname is refused");
    assert!(
        error.contains("hostname: 3 is not of type 'string'"),
        "{error}"
    );

    let nested = dir.path().join("nested");
    let good = write(
        "good-ai.yaml",
        "#cloud-config\nautoinstall:\n  version: 1\n  shutdown: reboot\n",
    );
    assert!(autoinstall(&good, &nested).is_ok());
    let bad = write(
        "bad-ai.yaml",
        "#cloud-config\nautoinstall:\n  version: 1\n  shutdown: restart\n",
    );
    let error = autoinstall(&bad, &nested).expect_err("an unknown shutdown is refused");
    assert!(
        error.contains("'restart' is not one of ['reboot', 'poweroff']"),
        "{error}"
    );
}

// ---------------------------------------------------------------- Flatcar

/// ignition-validate's verdict. An unknown key is only a warning (exit 0) to it;
/// here any word from it is a rejection.
fn ignition_validate(file: &Path) -> Result<(), String> {
    let tool = tool(
        &format!("{TOOLS}/ignition/usr/bin/ignition-validate"),
        "ignition-validate (Debian package ignition, unpacked by scripts/test)",
    );
    let out = run("ignition-validate", Command::new(tool).arg(file));
    if out.status.success() && out.stdout.is_empty() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        ))
    }
}

#[test]
fn flatcar_ignition_passes_ignition_validate_and_does_what_rackboot_needs() {
    for template in templates_of(|k| k == Kind::Ignition) {
        for machine in MACHINES {
            let (text, file) = render(machine, template);
            let at = format!(
                "{} for the {} machine ({})",
                template.file,
                machine.label,
                file.display()
            );
            ignition_validate(&file)
                .unwrap_or_else(|e| panic!("ignition-validate rejects {at}: {e}"));
            let config: Json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(config["ignition"]["version"], "3.3.0", "{at}");
            let users = config["passwd"]["users"].as_array().expect("users");
            assert_eq!(users.len(), 1, "{at}");
            assert_eq!(users[0]["name"], "core", "{at}");
            assert_eq!(
                users[0]["sshAuthorizedKeys"],
                serde_json::json!(machine.ssh_keys),
                "{at}"
            );
            let files = config["storage"]["files"].as_array().expect("files");
            let hostname = files
                .iter()
                .find(|f| f["path"] == "/etc/hostname")
                .expect("/etc/hostname");
            assert_eq!(
                hostname["contents"]["source"],
                format!("data:,{}", machine.name()),
                "{at}"
            );
            let units = config["systemd"]["units"].as_array().expect("units");
            match machine.done_url {
                Some(url) => {
                    assert_eq!(units.len(), 1, "{at}");
                    assert_eq!(units[0]["enabled"], true, "{at}");
                    let unit = units[0]["contents"].as_str().unwrap_or_default();
                    let exec: Vec<&str> = unit
                        .lines()
                        .filter(|l| l.starts_with("ExecStart="))
                        .collect();
                    assert_eq!(exec.len(), 1, "{at}: {unit}");
                    assert!(exec[0].ends_with(&format!(" \"{url}\"")), "{at}: {unit}");
                    assert!(
                        unit.contains("ConditionPathExists=!/var/lib/rackboot/done-reported"),
                        "{at}"
                    );
                    assert!(unit.contains("WantedBy=multi-user.target"), "{at}");
                }
                None => assert!(units.is_empty(), "{at}"),
            }
        }
    }
}

#[test]
fn ignition_validate_rejects_what_it_should() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        path
    };
    let good = write("good.ign", r#"{"ignition": {"version": "3.3.0"}}"#);
    assert_eq!(ignition_validate(&good), Ok(()));
    let relative = write(
        "relative.ign",
        r#"{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "etc/hostname"}]}}"#,
    );
    let error = ignition_validate(&relative).expect_err("a relative path is refused");
    assert!(error.contains("path not absolute"), "{error}");
    // A misspelt key: only a warning to ignition-validate, a rejection here.
    let unknown = write(
        "unknown.ign",
        r#"{"ignition": {"version": "3.3.0"}, "passwd": {"users": [{"name": "core", "sshAuthorisedKeys": []}]}}"#,
    );
    let error = ignition_validate(&unknown).expect_err("an unknown key is refused");
    assert!(error.contains("Unused key sshAuthorisedKeys"), "{error}");
}
