//! Anonymous logins against a real `rackboot serve` on loopback, measured by the
//! server's peak memory (VmHWM):
//! - a 400 MB `POST /login` is refused without being held: under 100 MB. Before the
//!   panel had body limits per route group, this request took the process to 1.2 GB.
//! - 100 concurrent logins, from 100 loopback addresses so the per-address limit
//!   does not hold them back: at most two argon2 checks (19 MiB each) run at once,
//!   so under 150 MB. Before that bound, 100 logins took 1.9 GB.

use harness::{Proc, peak_rss_kib, serve_on_loopback, tail};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

const BODY_BYTES: usize = 400 << 20;
const CHUNK_BYTES: usize = 1 << 20;
const PEAK_LIMIT_KIB: u64 = 100 << 10;

/// Streams a `BODY_BYTES` login form in `CHUNK_BYTES` writes (declared with a
/// `Content-Length`, or chunked), reading the answer meanwhile. Returns the answer's
/// status line, if one came before the server closed the connection, and how much
/// of the body it took.
fn post_large_login(port: u16, chunked: bool) -> (Option<String>, usize) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut reader = stream.try_clone().expect("clone");
    reader
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let answer = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        // Until the server closes (or resets) the connection.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&bytes)
            .lines()
            .next()
            .map(str::to_string)
    });
    let length = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {BODY_BYTES}")
    };
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n{length}\r\n\r\n"
    );
    let mut sent = 0;
    let mut chunk = b"user=ann&password=".to_vec();
    chunk.resize(CHUNK_BYTES, b'a');
    let mut write = |bytes: &[u8]| stream.write_all(bytes).is_ok();
    if write(head.as_bytes()) {
        while sent < BODY_BYTES {
            let ok = if chunked {
                write(format!("{CHUNK_BYTES:x}\r\n").as_bytes()) && write(&chunk) && write(b"\r\n")
            } else {
                write(&chunk)
            };
            if !ok {
                break; // refused: the server stopped reading and closed
            }
            sent += CHUNK_BYTES;
            // Only the start of the body was for this request.
            if chunked && sent == BODY_BYTES {
                write(b"0\r\n\r\n");
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    (answer.join().expect("reader thread"), sent)
}

/// `rackboot serve` with HTTP (and the panel) on 127.0.0.1 only, on a port the
/// kernel picks, over a data directory in `dir`; the server and its port.
fn serve(dir: &Path) -> (Proc, u16) {
    // No [dhcp], no TFTP: HTTP on loopback only.
    serve_on_loopback(RACKBOOT, dir, "")
}

#[test]
fn a_400_mb_anonymous_login_leaves_peak_memory_under_100_mb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, port) = serve(dir.path());
    let pid = server.child.id();

    // Declared: refused before the body is read. Chunked: cut off at the form limit.
    let answers: Vec<_> = [false, true]
        .into_iter()
        .map(|chunked| {
            let (status, sent) = post_large_login(port, chunked);
            eprintln!("chunked={chunked}: answer {status:?} after {sent} bytes sent");
            (chunked, status, sent)
        })
        .collect();
    assert!(!server.exited(), "{}", tail(&server.log_text(), 40));
    let peak = peak_rss_kib(pid).expect("VmHWM");
    eprintln!("peak memory of rackboot serve: {peak} KiB");
    assert!(
        peak < PEAK_LIMIT_KIB,
        "peak memory {peak} KiB after a 400 MB login body"
    );
    for (chunked, status, sent) in answers {
        if let Some(status) = &status {
            assert!(status.contains(" 413 "), "chunked={chunked}: {status}");
        }
        assert!(
            status.is_some() || sent < BODY_BYTES,
            "chunked={chunked}: neither refused nor cut off"
        );
    }
    // Still serving.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

const LOGINS: u8 = 100;
const LOGINS_PEAK_LIMIT_KIB: u64 = 150 << 10;

/// One wrong login from `source` (a loopback address); the answer's status code.
async fn wrong_login(port: u16, source: Ipv4Addr, n: u8) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let mut stream = socket
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await?;
    // As a browser does: the login page first, for its form token and cookie.
    stream
        .write_all(
            format!("GET /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut page = Vec::new();
    stream.read_to_end(&mut page).await?;
    let page = String::from_utf8_lossy(&page);
    let field = |start: &str, end: char| {
        page.split(start)
            .nth(1)
            .and_then(|rest| rest.split(end).next())
            .map(str::to_string)
            .ok_or_else(|| std::io::Error::other(format!("no {start:?} in the login page")))
    };
    let cookie = field("rackboot_login=", ';')?;
    let token = field("name=\"login_csrf\" value=\"", '"')?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let mut stream = socket
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await?;
    let form = format!("user=nobody{n}&password=wrong-password&login_csrf={token}");
    stream
        .write_all(
            format!(
                "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
                 Cookie: rackboot_login={cookie}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\n\r\n{form}",
                form.len()
            )
            .as_bytes(),
        )
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {answer:?}")))
}

#[test]
fn a_hundred_concurrent_logins_leave_peak_memory_under_150_mb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, port) = serve(dir.path());
    let pid = server.child.id();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let codes: Vec<u16> = runtime.block_on(async {
        // All of 127.0.0.0/8 is already local on `lo`: binding a source address in
        // it adds nothing to the network. One address each keeps the per-address
        // login limit from turning most of them away before a check.
        let logins: Vec<_> = (0..LOGINS)
            .map(|n| tokio::spawn(wrong_login(port, Ipv4Addr::new(127, 0, 1, n + 1), n)))
            .collect();
        let mut codes = Vec::new();
        for login in logins {
            let code = tokio::time::timeout(Duration::from_secs(60), login)
                .await
                .expect("answered in time")
                .expect("task")
                .expect("login answered");
            codes.push(code);
        }
        codes
    });
    assert!(!server.exited(), "{}", tail(&server.log_text(), 40));
    let peak = peak_rss_kib(pid).expect("VmHWM");
    let checked = codes.iter().filter(|c| **c == 401).count();
    let busy = codes.iter().filter(|c| **c == 503).count();
    eprintln!(
        "{LOGINS} concurrent logins: {checked} checked (401), {busy} busy (503); \
         peak memory of rackboot serve: {peak} KiB"
    );
    assert_eq!(checked + busy, usize::from(LOGINS), "answers: {codes:?}");
    assert!(checked >= 2, "some were checked: {codes:?}");
    assert!(
        peak < LOGINS_PEAK_LIMIT_KIB,
        "peak memory {peak} KiB after {LOGINS} concurrent logins"
    );
}
