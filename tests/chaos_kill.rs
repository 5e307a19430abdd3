//! `kill -9` in the middle of long work: a catalog fetch cut off mid-download, and a
//! panel image upload cut off mid-body. Each time nothing half done is registered, the
//! next `serve` starts clean (the abandoned staging directory goes), and the fetch
//! resumes its download where it stopped.

use harness::{Proc, serve_on_loopback, wait_until};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

const KERNEL_LEN: usize = 8 << 20;
/// What the server sends of the kernel before it stalls, the first time.
const FIRST_PART: usize = 1 << 20;

fn kernel_bytes() -> Vec<u8> {
    (0..KERNEL_LEN).map(|i| (i % 251) as u8).collect()
}

fn cli(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(RACKBOOT)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rackboot")
}

fn image_names(config: &Path) -> String {
    let out = cli(config, &["image", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn staging_dirs(data: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data.join("uploads"))
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// A mirror of one file on loopback: the first request gets `FIRST_PART` bytes and
/// then nothing (until the client is killed); later ones are answered whole, or from
/// the offset a `Range: bytes=N-` asks for.
struct Mirror {
    port: u16,
    sent_first_part: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Mirror {
    fn start(body: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let sent_first_part = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::new(AtomicUsize::new(0));
        let (flag, log) = (Arc::clone(&sent_first_part), Arc::clone(&requests));
        let body = Arc::new(body);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (flag, log, body, served) = (
                    Arc::clone(&flag),
                    Arc::clone(&log),
                    Arc::clone(&body),
                    Arc::clone(&served),
                );
                std::thread::spawn(move || answer(stream, &body, &flag, &log, &served));
            }
        });
        Mirror {
            port,
            sent_first_part,
            requests,
        }
    }
}

fn answer(
    mut stream: TcpStream,
    body: &[u8],
    flag: &AtomicBool,
    log: &Mutex<Vec<String>>,
    served: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    if let Ok(mut log) = log.lock() {
        log.push(head.clone());
    }
    let from = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("range: bytes=")
                .or(l.strip_prefix("Range: bytes="))
        })
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
    let first = served.fetch_add(1, Ordering::SeqCst) == 0;
    let (status, start) = match from {
        Some(start) if start < body.len() => ("206 Partial Content", start),
        _ => ("200 OK", 0),
    };
    let rest = &body[start..];
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        rest.len()
    );
    if first {
        let _ = stream.write_all(&rest[..FIRST_PART]);
        let _ = stream.flush();
        flag.store(true, Ordering::SeqCst);
        // Stall: the client is killed while it waits for the rest.
        std::thread::sleep(Duration::from_secs(120));
    } else {
        let _ = stream.write_all(rest);
    }
}

#[test]
fn a_fetch_killed_mid_download_registers_nothing_and_resumes_after_a_clean_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("rackboot.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
            data.display()
        ),
    )
    .expect("config");
    let kernel = kernel_bytes();
    let sha = hex::encode(Sha256::digest(&kernel));
    std::fs::create_dir_all(data.join("images")).expect("mkdir");
    std::fs::write(
        data.join("images/site-tool.toml"),
        format!(
            r#"os = "Site tool"
version = "1"
kind = "live"
architectures = ["amd64"]
firmware = ["uefi"]
memory_mib = 64
cmdline = ""
[mirror]
base = "http://mirror.invalid"
family = "site"
[chain]
kind = "pinned"
sha256 = {{ "tool/kernel" = "{sha}" }}
[files]
kernel = "tool/kernel"
"#
        ),
    )
    .expect("definition");
    let mirror = Mirror::start(kernel.clone());
    let url = format!("http://127.0.0.1:{}", mirror.port);

    let mut fetch = Command::new(RACKBOOT);
    fetch
        .arg("--config")
        .arg(&config)
        .args(["image", "fetch", "site-tool", "--mirror", &url]);
    let fetch = Proc::spawn(fetch, &dir.path().join("fetch.log"));
    let partial = data.join("cache/partial").join(&sha);
    assert!(
        wait_until(Duration::from_secs(30), || {
            mirror.sent_first_part.load(Ordering::SeqCst)
                && std::fs::metadata(&partial).is_ok_and(|m| m.len() == FIRST_PART as u64)
        }),
        "the first part arrived: {}",
        fetch.log_text()
    );
    // kill -9, as a power cut or the OOM killer would.
    drop(fetch);
    assert!(
        !image_names(&config).contains("site-tool"),
        "nothing registered"
    );
    assert_eq!(
        staging_dirs(&data).len(),
        1,
        "the killed fetch left its staging"
    );

    // The next start removes what the dead process left, and serves.
    let (server, _port) = serve_on_loopback(RACKBOOT, dir.path(), "");
    assert!(staging_dirs(&data).is_empty(), "{}", server.log_text());
    drop(server);

    let out = cli(&config, &["image", "fetch", "site-tool", "--mirror", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(image_names(&config).contains("site-tool"));
    let requests = mirror.requests.lock().expect("log").clone();
    assert!(
        requests.iter().any(|r| r
            .to_ascii_lowercase()
            .contains(&format!("range: bytes={FIRST_PART}-"))),
        "the download resumed where it stopped: {requests:?}"
    );
    let registered = std::fs::read(data.join("images/site-tool/kernel")).expect("kernel");
    assert_eq!(registered, kernel);
    assert!(staging_dirs(&data).is_empty());
}

/// Runs curl with the given arguments and returns its stdout.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn field(page: &str, name: &str) -> String {
    page.split(&format!("name=\"{name}\" value=\""))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        .to_string()
}

#[test]
fn a_server_killed_mid_upload_registers_nothing_and_starts_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (server, port) = serve_on_loopback(RACKBOOT, dir.path(), "");
    let config = dir.path().join("rackboot.toml");
    let mut add = Command::new(RACKBOOT)
        .arg("--config")
        .arg(&config)
        .args(["user", "add", "ann", "--role", "operator"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("user add");
    add.stdin
        .take()
        .expect("stdin")
        .write_all(b"a-long-password\n")
        .expect("password");
    assert!(add.wait().expect("user add").success());

    let panel = format!("http://127.0.0.1:{port}");
    let jar = dir.path().join("cookies");
    let jar = jar.to_str().expect("utf8");
    let login_page = curl(&["-c", jar, &format!("{panel}/login")]);
    let token = field(&login_page, "login_csrf");
    curl(&[
        "-b",
        jar,
        "-c",
        jar,
        "--data",
        &format!("user=ann&password=a-long-password&login_csrf={token}"),
        &format!("{panel}/login"),
    ]);
    let images = curl(&["-b", jar, &format!("{panel}/images")]);
    let csrf = field(&images, "csrf");
    let kernel = dir.path().join("kernel");
    std::fs::write(&kernel, kernel_bytes()).expect("kernel");
    let kernel_arg = format!("kernel=@{}", kernel.display());
    let initrd_arg = format!("initrd=@{}", kernel.display());
    // 8 MiB twice at 256 KiB/s: the server is killed a second or two into the body.
    let mut upload = Command::new("curl")
        .args(["-s", "--limit-rate", "256k", "-b", jar])
        .args([
            "-F",
            &format!("csrf={csrf}"),
            "-F",
            "name=half",
            "-F",
            &kernel_arg,
        ])
        .args(["-F", &initrd_arg])
        .arg(format!("{panel}/images"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl upload");
    assert!(
        wait_until(Duration::from_secs(20), || {
            staging_dirs(&data)
                .iter()
                .any(|d| std::fs::metadata(d.join("kernel")).is_ok_and(|m| m.len() > 256 << 10))
        }),
        "the upload is under way"
    );
    drop(server); // kill -9
    let _ = upload.wait();
    assert!(!image_names(&config).contains("half"), "nothing registered");
    assert!(!data.join("images/half").exists());
    assert_eq!(staging_dirs(&data).len(), 1, "the upload's staging stayed");

    let (server, _) = serve_on_loopback(RACKBOOT, dir.path(), "");
    assert!(staging_dirs(&data).is_empty(), "{}", server.log_text());
    assert!(!image_names(&config).contains("half"));
    drop(server);
}
