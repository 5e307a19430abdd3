//! The panel and API on their own address with TLS (a management network), apart from
//! the boot-serving HTTP: checked with curl against a real `rackboot serve`.

use harness::{Proc, run, should_run, wait_until};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn panel_serves_tls_on_its_own_address_and_boot_files_stay_apart() {
    if !should_run("panel_tls", &["openssl", "curl"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("panel.crt");
    let key = dir.path().join("panel.key");
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null()));
    let (boot_port, panel_port) = (free_port(), free_port());
    let config = dir.path().join("rackboot.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{boot_port}\"\n\
             [panel]\nlisten = \"127.0.0.1:{panel_port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            dir.path().join("data").display(),
            cert.display(),
            key.display()
        ),
    )
    .expect("config");
    let mut add = Command::new(RACKBOOT)
        .arg("--config")
        .arg(&config)
        .args(["user", "add", "ann", "--role", "admin"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn user add");
    {
        use std::io::Write;
        let stdin = add.stdin.as_mut().expect("stdin");
        stdin.write_all(b"a-long-password\n").expect("password");
    }
    assert!(add.wait().expect("wait").success());

    let mut serve = Command::new(RACKBOOT);
    serve.arg("--config").arg(&config).arg("serve");
    let mut server = Proc::spawn(serve, &dir.path().join("serve.log"));
    let ready = wait_until(Duration::from_secs(20), || {
        server.log_text().contains("rackboot ready") || server.exited()
    });
    assert!(ready && !server.exited(), "{}", server.log_text());

    let panel = format!("https://127.0.0.1:{panel_port}");
    let login_page = curl(&["-k", &format!("{panel}/login")]);
    assert!(login_page.contains("Log in"), "{login_page}");
    // Over TLS the session cookie is Secure as well as HttpOnly and SameSite=Strict.
    // The login form's token comes with the page, its cookie in the jar.
    let jar = dir.path().join("cookies");
    let jar = jar.to_str().expect("utf8");
    let form_page = curl(&["-k", "-c", jar, &format!("{panel}/login")]);
    let login_csrf = form_page
        .split("name=\"login_csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("login token");
    let headers = curl(&[
        "-k",
        "-b",
        jar,
        "-D",
        "-",
        "-o",
        "/dev/null",
        "--data",
        &format!("user=ann&password=a-long-password&login_csrf={login_csrf}"),
        &format!("{panel}/login"),
    ]);
    let cookie = headers
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: rackboot_session=")
        })
        .unwrap_or_else(|| panic!("no session cookie: {headers}"));
    assert!(
        cookie.contains("Secure")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    // Plain HTTP to the panel port gets no panel.
    let plain = curl(&[&format!("http://127.0.0.1:{panel_port}/login")]);
    assert!(!plain.contains("Log in"), "{plain}");
    // The boot-serving address has the boot files but not the panel or API.
    let boot = format!("http://127.0.0.1:{boot_port}");
    assert_eq!(curl(&[&format!("{boot}/healthz")]), "ok\n");
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{boot}/login"),
    ]);
    assert_eq!(code, "404");
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{boot}/api/v1/machines"),
    ]);
    assert_eq!(code, "404");
    let script = curl(&[&format!("{boot}/boot/52-54-00-00-00-01.ipxe")]);
    assert!(script.starts_with("#!ipxe"), "{script}");
}
