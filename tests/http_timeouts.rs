//! The HTTP listener's limits against a real `rackboot serve` on loopback, with small
//! values set in its config: a half-sent request is closed by the header-read
//! timeout, `max_connections` idle connections hold the cap until one closes, and a
//! slow but steady download outlives the idle timeout while a stalled one does not.

use harness::{Proc, serve_on_loopback, tail, wait_until};
use socket2::{Domain, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

/// Starts `rackboot serve` with `http` appended to its `[http]` section (and the iPXE
/// directory `ipxe_dir`, served at `/ipxe/`), and returns it with its HTTP port.
fn start(dir: &Path, http: &str, ipxe_dir: Option<&Path>) -> (Proc, u16) {
    let tftp = match ipxe_dir {
        // TFTP on a loopback port of its own: only for its ipxe_dir key.
        Some(ipxe) => format!(
            "[tftp]\nlisten = \"127.0.0.1:0\"\nipxe_dir = \"{}\"\n",
            ipxe.display()
        ),
        None => String::new(),
    };
    serve_on_loopback(RACKBOOT, dir, &format!("{http}\n{tftp}"))
}

fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).expect("connect")
}

/// How long until the server ends `stream` (EOF or reset), reading whatever it sends.
fn time_until_closed(mut stream: TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("still open after {limit:?}")
            }
            Err(_) => return started.elapsed(),
        }
    }
}

fn get(stream: &mut TcpStream, path: &str) {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("write request");
}

/// The whole answer to `GET path`, within `limit`.
fn fetch(port: u16, path: &str, limit: Duration) -> String {
    let mut stream = connect(port);
    stream.set_read_timeout(Some(limit)).expect("timeout");
    get(&mut stream, path);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn a_half_sent_request_and_a_silent_connection_are_closed_by_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, port) = start(
        dir.path(),
        "header_read_timeout_secs = 1\nidle_timeout_secs = 30\n",
        None,
    );
    let mut half = connect(port);
    half.write_all(b"GET /healthz HT").expect("write");
    let silent = connect(port);
    let silent = std::thread::spawn(move || time_until_closed(silent, Duration::from_secs(10)));
    let half = time_until_closed(half, Duration::from_secs(10));
    let silent = silent.join().expect("thread");
    eprintln!("half request closed after {half:?}, silent one after {silent:?}");
    // One second, with room for a loaded machine; the idle timeout is 30 s.
    for (what, took) in [("half request", half), ("silent connection", silent)] {
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{what} closed after {took:?}"
        );
    }
    assert!(fetch(port, "/healthz", Duration::from_secs(10)).starts_with("HTTP/1.1 200"));
    assert!(!server.exited(), "{}", tail(&server.log_text(), 40));
}

#[test]
fn idle_connections_hold_the_cap_until_one_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Timeouts long enough that nothing here is closed by them.
    let (mut server, port) = start(
        dir.path(),
        "header_read_timeout_secs = 30\nidle_timeout_secs = 30\nmax_connections = 20\n",
        None,
    );
    let mut holders: Vec<TcpStream> = (0..20).map(|_| connect(port)).collect();
    // Logged when the accept loop finds no free slot, so all 20 are being served.
    assert!(
        wait_until(Duration::from_secs(10), || server
            .log_text()
            .contains("connection cap reached")),
        "{}",
        tail(&server.log_text(), 40)
    );

    // The 21st connects (the kernel's backlog takes it) but is not served...
    let mut waiting = connect(port);
    get(&mut waiting, "/healthz");
    waiting
        .set_read_timeout(Some(Duration::from_millis(700)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    match waiting.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the 21st connection was answered at the cap: {other:?}"),
    }
    // ...until one of the 20 closes.
    drop(holders.remove(0));
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = waiting.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    drop(holders);
    assert!(fetch(port, "/healthz", Duration::from_secs(10)).starts_with("HTTP/1.1 200"));
    assert!(!server.exited(), "{}", tail(&server.log_text(), 40));
}

const FILE_BYTES: usize = 8 << 20;

/// A connection with a small receive buffer, so the server's writes track how fast
/// this side reads.
fn slow_connect(port: u16) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(32 << 10).expect("rcvbuf");
    socket
        .connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .expect("connect");
    socket.into()
}

/// Reads the answer to `GET path` in `chunk`-byte reads with `pause` between them,
/// until the server closes; returns the bytes of the answer.
fn read_slowly(port: u16, path: &str, chunk: usize, pause: Duration) -> usize {
    let mut stream = slow_connect(port);
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    get(&mut stream, path);
    let mut buf = vec![0u8; chunk];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n,
        }
        std::thread::sleep(pause);
    }
}

#[test]
fn a_slow_steady_download_outlives_the_idle_timeout_and_a_stalled_one_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ipxe = dir.path().join("ipxe");
    std::fs::create_dir(&ipxe).expect("ipxe dir");
    let body: Vec<u8> = (0..FILE_BYTES).map(|i| (i % 251) as u8).collect();
    std::fs::write(ipxe.join("kernel"), &body).expect("kernel");
    let (mut server, port) = start(
        dir.path(),
        "header_read_timeout_secs = 1\nidle_timeout_secs = 1\n",
        Some(&ipxe),
    );

    // About 3 MB/s: several idle timeouts long, never a second without a byte.
    let started = Instant::now();
    let got = read_slowly(port, "/ipxe/kernel", 32 << 10, Duration::from_millis(10));
    let took = started.elapsed();
    eprintln!("slow download: {got} bytes in {took:?}");
    assert!(got > FILE_BYTES, "cut after {got} bytes and {took:?}");
    assert!(
        took > Duration::from_secs(2),
        "the download was not slow enough to test anything ({took:?})"
    );

    // A reader that stops for longer than the idle timeout is cut: what it then
    // finds is what the socket buffers held, not the whole file.
    let mut stalled = slow_connect(port);
    get(&mut stalled, "/ipxe/kernel");
    std::thread::sleep(Duration::from_secs(3));
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    eprintln!("stalled download: {} bytes", rest.len());
    assert!(rest.len() < FILE_BYTES, "a stalled reader was not cut");
    assert!(!server.exited(), "{}", tail(&server.log_text(), 40));
}
