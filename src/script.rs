//! Boot scripts (iPXE) and grub configurations: templates from `ipxe/`, built into
//! the binary, each overridable by a file of the same name in `data_dir/ipxe/`. Rendered at run time with minijinja, so
//! an operator's edit applies to the next boot without a restart.

use minijinja::{Environment, UndefinedBehavior, Value};
use std::path::PathBuf;

const BUILTIN: &[(&str, &str)] = &[
    ("boot.ipxe", include_str!("../ipxe/boot.ipxe")),
    ("local.ipxe", include_str!("../ipxe/local.ipxe")),
    ("unknown.ipxe", include_str!("../ipxe/unknown.ipxe")),
    ("boot.grub", include_str!("../ipxe/boot.grub")),
    ("local.grub", include_str!("../ipxe/local.grub")),
    ("unknown.grub", include_str!("../ipxe/unknown.grub")),
];

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("no template named {0}")]
    Missing(String),
    #[error("cannot read override {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("template {name}: {source}")]
    Render {
        name: String,
        source: minijinja::Error,
    },
    #[error("template {name}: the output is over {MAX_OUTPUT_BYTES} bytes")]
    TooLong { name: String },
}

#[derive(Debug, Clone)]
pub struct Scripts {
    override_dir: PathBuf,
}

impl Scripts {
    pub fn new(override_dir: PathBuf) -> Self {
        Scripts { override_dir }
    }

    /// The template text: the operator's override if present, else the built-in one.
    fn source(&self, name: &str) -> Result<String, ScriptError> {
        let path = self.override_dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ScriptError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        }
        BUILTIN
            .iter()
            .find(|(builtin, _)| *builtin == name)
            .map(|(_, text)| text.to_string())
            .ok_or_else(|| ScriptError::Missing(name.to_string()))
    }

    /// Renders `name` with `context`. Blocking (reads the override directory): call it
    /// off the async workers.
    pub fn render(&self, name: &str, context: Value) -> Result<String, ScriptError> {
        render_source(name, self.source(name)?, context)
    }
}

/// Renders a template given as text: the engine shared by iPXE scripts and image
/// install files.
/// Steps a template may take: far more than any boot script or preseed needs, and a
/// loop that never ends (or runs for minutes) stops at it.
pub const MAX_FUEL: u64 = 1_000_000;
/// The most a rendered template may hold.
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;

/// A writer that refuses to grow past `MAX_OUTPUT_BYTES`.
#[derive(Default)]
struct Bounded {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + bytes.len() > MAX_OUTPUT_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("output too long"));
        }
        self.bytes.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Compiles a template without rendering it: a syntax error names the template and
/// the line, at registration rather than at the machine's first boot.
pub fn check_syntax(name: &str, source: &str) -> Result<(), ScriptError> {
    let mut env = Environment::new();
    env.add_template_owned(name.to_string(), source.to_string())
        .map_err(|source| ScriptError::Render {
            name: name.to_string(),
            source,
        })
}

pub fn render_source(name: &str, source: String, context: Value) -> Result<String, ScriptError> {
    {
        let mut env = Environment::new();
        // Templates are written by operators and rendered per request: bounded in
        // the steps they take and the text they make.
        env.set_fuel(Some(MAX_FUEL));
        // A typo in an operator's template is an error, not an empty string in a
        // kernel command line.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Install files are not HTML: nothing is escaped, whatever a file is named
        // (minijinja would escape `*.yaml` and `*.json` templates by default).
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        // iPXE reads the last line only when it ends with a newline.
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        let render_error = |source| ScriptError::Render {
            name: name.to_string(),
            source,
        };
        env.add_template_owned(name.to_string(), source)
            .map_err(render_error)?;
        let template = env.get_template(name).map_err(render_error)?;
        let mut out = Bounded::default();
        let rendered = template.render_captured_to(context, &mut out);
        if out.overflowed {
            return Err(ScriptError::TooLong {
                name: name.to_string(),
            });
        }
        rendered.map_err(render_error)?;
        // Every piece written came from a `str`.
        Ok(String::from_utf8_lossy(&out.bytes).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    fn boot_context() -> Value {
        context! {
            mac => "52:54:00:12:34:56",
            hostname => "node1",
            mode => "install",
            image => context! { name => "debian", cmdline => "console=ttyS0 quiet" },
            done_url => "http://192.0.2.1:8080/done/abc",
            kernel_url => "http://192.0.2.1:8080/boot/52-54-00-12-34-56/kernel",
            initrd_url => "http://192.0.2.1:8080/boot/52-54-00-12-34-56/initrd",
        }
    }

    #[test]
    fn boot_script_fetches_kernel_and_initrd_over_http_with_initrd_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = Scripts::new(dir.path().to_path_buf())
            .render("boot.ipxe", boot_context())
            .expect("renders");
        assert!(script.starts_with("#!ipxe\n"), "{script}");
        assert!(script.contains(
            "kernel http://192.0.2.1:8080/boot/52-54-00-12-34-56/kernel initrd=initrd console=ttyS0 quiet rackboot.done=http://192.0.2.1:8080/done/abc\n"
        ));
        assert!(script.contains("initrd http://192.0.2.1:8080/boot/52-54-00-12-34-56/initrd\n"));
        assert!(script.contains("node1"));
        assert!(script.trim_end().ends_with("boot"));
    }

    #[test]
    fn unknown_script_says_so_and_exits_to_local_boot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = Scripts::new(dir.path().to_path_buf())
            .render("unknown.ipxe", context! { mac => "52:54:00:12:34:56" })
            .expect("renders");
        assert!(script.contains("not in the inventory"));
        assert!(script.trim_end().ends_with("exit"));
    }

    #[test]
    fn operator_override_wins_and_applies_without_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let scripts = Scripts::new(dir.path().to_path_buf());
        let before = scripts
            .render("boot.ipxe", boot_context())
            .expect("renders");
        assert!(before.contains("kernel "));
        std::fs::write(
            dir.path().join("boot.ipxe"),
            "#!ipxe\necho custom {{ mac }}\n",
        )
        .expect("write");
        let after = scripts
            .render("boot.ipxe", boot_context())
            .expect("renders");
        assert_eq!(after, "#!ipxe\necho custom 52:54:00:12:34:56\n");
    }

    #[test]
    fn typo_in_template_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("boot.ipxe"),
            "#!ipxe\necho {{ hostnme.x }}\n",
        )
        .expect("write");
        let err = Scripts::new(dir.path().to_path_buf())
            .render("boot.ipxe", boot_context())
            .expect_err("strict");
        assert!(err.to_string().contains("boot.ipxe"), "{err}");
    }

    #[test]
    fn templates_are_bounded_in_steps_and_output() {
        let started = std::time::Instant::now();
        let endless = render_source(
            "loop.cfg",
            // Each range is within minijinja's own limit; together they are 10^8 steps.
            "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}".into(),
            Value::from(()),
        );
        let why = endless
            .expect_err("a loop that runs for minutes is stopped")
            .to_string();
        assert!(why.contains("fuel"), "{why}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        let huge = render_source(
            "huge.cfg",
            "{% for i in range(3000) %}{{ big }}{% endfor %}".into(),
            minijinja::context! { big => "x".repeat(1000) },
        );
        assert!(matches!(huge, Err(ScriptError::TooLong { .. })), "{huge:?}");
        let fine = render_source(
            "ok.cfg",
            "host {{ name }}\n".into(),
            minijinja::context! { name => "node1" },
        )
        .expect("renders");
        assert_eq!(fine, "host node1\n");
    }
}
