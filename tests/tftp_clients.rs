//! Real TFTP clients (tftp-hpa's `tftp`, `atftp`, `curl`) fetch files from
//! `rackboot serve` across a veth pair between two namespaces, with each option
//! set, through 5% loss, past block 65535, and two hundred at once; every byte is
//! compared.

use harness::{
    FILES_CLIENT_IP, FILES_SERVER_IP, FileNet, peak_rss_kib, rss_kib, should_run, tail, test_bytes,
    thread_count, wait_until,
};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

const TOOLS: &[&str] = &["ip", "curl", "tftp", "atftp", "nft"];
const MACHINE: &str = "52:54:00:aa:bb:01";

/// A text file with LF, CR LF and bare CR: netascii must carry each back intact.
fn text() -> Vec<u8> {
    b"line one\nline two\r\nbare\rcr\n\n\r\r\nend"
        .repeat(500)
        .into_iter()
        .collect()
}

/// Serves a set of files and registers the client's address as a machine, so
/// transfers are recorded as its events.
fn serve(tag: &str) -> FileNet {
    let mut net = FileNet::new(RACKBOOT, tag);
    net.put("ipxe/snponly.efi", &test_bytes(173_792, 1));
    net.put("root/small.bin", &test_bytes(100_000, 2));
    net.put("root/exact1468.bin", &test_bytes(1468 * 64, 3));
    net.put("root/exact512.bin", &test_bytes(512 * 64, 4));
    net.put("root/empty", b"");
    net.put("root/text.txt", &text());
    net.put("root/sub/dir/nested.bin", &test_bytes(3000, 5));
    net.put("root/one-mib.bin", &test_bytes(1 << 20, 6));
    net.put("root/both", b"shared copy");
    net.put("root/52-54-00-aa-bb-01/both", b"this machine's copy");
    net.cli(&["machine", "add", MACHINE, "--ip", FILES_CLIENT_IP]);
    net.start();
    net
}

/// One fetch: a client command line that writes `out`, and the served file it
/// must equal.
struct Fetch {
    what: String,
    cmd: Command,
    out: std::path::PathBuf,
    expected: Vec<u8>,
}

fn curl(net: &FileNet, n: usize, file: &str, options: &[&str]) -> Fetch {
    let out = net.path(&format!("out/{n}"));
    let mut cmd = net.client("curl");
    cmd.args(["-sS", "--max-time", "120"])
        .args(options)
        .arg("-o")
        .arg(&out)
        .arg(format!("tftp://{FILES_SERVER_IP}/{file}"));
    Fetch {
        what: format!("curl {options:?} {file}"),
        cmd,
        out,
        expected: Vec::new(),
    }
}

fn atftp(net: &FileNet, n: usize, file: &str, options: &[&str]) -> Fetch {
    let out = net.path(&format!("out/{n}"));
    let mut cmd = net.client("atftp");
    cmd.args(["--tftp-timeout", "1"]);
    for option in options {
        cmd.args(["--option", option]);
    }
    cmd.args(["-g", "-r", file, "-l"])
        .arg(&out)
        .arg(FILES_SERVER_IP);
    Fetch {
        what: format!("atftp {options:?} {file}"),
        cmd,
        out,
        expected: Vec::new(),
    }
}

/// tftp-hpa reads its commands from stdin (its -c form cannot set rexmt).
fn tftp_hpa(net: &FileNet, n: usize, file: &str, mode: &str) -> Fetch {
    let out = net.path(&format!("out/{n}"));
    let script = format!("mode {mode}\nrexmt 1\nget {file} {}\nquit\n", out.display());
    let mut cmd = net.client("sh");
    cmd.arg("-c")
        .arg(format!("printf '%s' '{script}' | tftp {FILES_SERVER_IP}"));
    Fetch {
        what: format!("tftp-hpa mode {mode} {file}"),
        cmd,
        out,
        expected: Vec::new(),
    }
}

fn expect(mut fetch: Fetch, net: &FileNet, served: &str) -> Fetch {
    fetch.expected = std::fs::read(net.path(served)).expect("served file");
    fetch
}

fn run_fetch(net: &FileNet, mut fetch: Fetch) {
    let started = Instant::now();
    let output = fetch
        .cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{}: cannot run: {e}", fetch.what));
    let got = std::fs::read(&fetch.out).unwrap_or_default();
    assert!(
        output.status.success() && fetch.out.exists() && got == fetch.expected,
        "{}: got {} bytes, expected {} (exit {}, {:?})\nstderr: {}\nserver log:\n{}",
        fetch.what,
        got.len(),
        fetch.expected.len(),
        output.status,
        started.elapsed(),
        String::from_utf8_lossy(&output.stderr),
        tail(&net.server_log(), 30)
    );
}

#[test]
fn real_clients_fetch_files_with_each_option_set() {
    if !should_run("tftp_clients", TOOLS) {
        return;
    }
    let mut net = serve("tcli");
    let cases = vec![
        expect(curl(&net, 0, "snponly.efi", &[]), &net, "ipxe/snponly.efi"),
        expect(
            curl(&net, 1, "small.bin", &["--tftp-blksize", "1468"]),
            &net,
            "root/small.bin",
        ),
        expect(
            curl(&net, 2, "small.bin", &["--tftp-blksize", "8"]),
            &net,
            "root/small.bin",
        ),
        // More than the veth's MTU carries: the OACK grants 1468.
        expect(
            curl(&net, 3, "small.bin", &["--tftp-blksize", "65464"]),
            &net,
            "root/small.bin",
        ),
        expect(
            curl(&net, 4, "small.bin", &["--tftp-no-options"]),
            &net,
            "root/small.bin",
        ),
        expect(
            curl(&net, 5, "exact1468.bin", &["--tftp-blksize", "1468"]),
            &net,
            "root/exact1468.bin",
        ),
        expect(
            curl(&net, 6, "exact512.bin", &[]),
            &net,
            "root/exact512.bin",
        ),
        expect(curl(&net, 7, "empty", &[]), &net, "root/empty"),
        expect(
            curl(&net, 8, "sub/dir/nested.bin", &[]),
            &net,
            "root/sub/dir/nested.bin",
        ),
        expect(
            tftp_hpa(&net, 9, "small.bin", "octet"),
            &net,
            "root/small.bin",
        ),
        expect(
            tftp_hpa(&net, 10, "text.txt", "netascii"),
            &net,
            "root/text.txt",
        ),
        // Binary bytes survive netascii both ways too.
        expect(
            tftp_hpa(&net, 11, "snponly.efi", "netascii"),
            &net,
            "ipxe/snponly.efi",
        ),
        expect(
            tftp_hpa(&net, 12, "exact512.bin", "octet"),
            &net,
            "root/exact512.bin",
        ),
        expect(
            atftp(&net, 13, "one-mib.bin", &["blksize 1468", "windowsize 16"]),
            &net,
            "root/one-mib.bin",
        ),
        expect(
            atftp(&net, 14, "small.bin", &["windowsize 4"]),
            &net,
            "root/small.bin",
        ),
        expect(
            atftp(&net, 15, "small.bin", &["tsize 0", "blksize 1024"]),
            &net,
            "root/small.bin",
        ),
        expect(
            atftp(&net, 16, "small.bin", &["timeout 2", "blksize 512"]),
            &net,
            "root/small.bin",
        ),
        // Asks 64 blocks of 1468 per window: more than the byte cap, still intact.
        expect(
            atftp(&net, 17, "one-mib.bin", &["blksize 1468", "windowsize 64"]),
            &net,
            "root/one-mib.bin",
        ),
        expect(
            atftp(&net, 18, "exact1468.bin", &["blksize 1468", "windowsize 8"]),
            &net,
            "root/exact1468.bin",
        ),
        expect(
            atftp(&net, 19, "empty", &["windowsize 8"]),
            &net,
            "root/empty",
        ),
        // The client's lease (here its fixed address) names the machine: its own
        // copy under root/<mac>/ comes first.
        expect(
            curl(&net, 20, "both", &[]),
            &net,
            "root/52-54-00-aa-bb-01/both",
        ),
    ];
    for fetch in cases {
        run_fetch(&net, fetch);
    }
    net.assert_server_healthy();

    // Each completed transfer is recorded for the machine, with what was agreed.
    let mut events = String::new();
    wait_until(Duration::from_secs(10), || {
        events = net.cli(&["event", "list", "--mac", MACHINE, "--limit", "1000"]);
        events.lines().filter(|l| l.contains("tftp.read")).count() >= 21
    });
    let reads = events.lines().filter(|l| l.contains("tftp.read")).count();
    assert!(reads >= 21, "expected a tftp.read per fetch:\n{events}");
    assert!(
        events.contains("file=small.bin size=100000 from=root blksize=1468 windowsize=1"),
        "blksize 65464 clamped to the path's 1468:\n{events}"
    );
    assert!(
        events.contains("blksize=8 windowsize=1"),
        "blksize 8 granted:\n{events}"
    );
    assert!(
        events.contains("file=one-mib.bin size=1048576 from=root blksize=1468 windowsize=16"),
        "{events}"
    );
    assert!(
        events.contains("blksize=1468 windowsize=64"),
        "windowsize 64 granted at 1468:\n{events}"
    );
    assert!(
        events.contains("file=both size=19 from=machine"),
        "{events}"
    );
}

#[test]
fn block_numbers_roll_over_past_65535() {
    if !should_run("tftp_clients", TOOLS) {
        return;
    }
    let mut net = serve("troll");
    // 65,537 blocks of 512 and a short one: the counter wraps to 0 and goes on.
    net.put("root/roll.bin", &test_bytes(65_537 * 512 + 300, 7));
    let cases = vec![
        expect(curl(&net, 0, "roll.bin", &[]), &net, "root/roll.bin"),
        expect(
            atftp(&net, 1, "roll.bin", &["blksize 512", "windowsize 16"]),
            &net,
            "root/roll.bin",
        ),
    ];
    for fetch in cases {
        run_fetch(&net, fetch);
    }
    net.assert_server_healthy();
}

#[test]
fn transfers_complete_intact_through_5_percent_loss() {
    if !should_run("tftp_clients", TOOLS) {
        return;
    }
    let mut net = serve("tloss");
    net.put("root/lossy.bin", &test_bytes(60_000, 8));
    net.put("root/lossy-big.bin", &test_bytes(400_000, 9));
    net.udp_loss(5);
    let cases = vec![
        expect(curl(&net, 0, "lossy.bin", &[]), &net, "root/lossy.bin"),
        expect(
            curl(&net, 1, "lossy-big.bin", &["--tftp-blksize", "1468"]),
            &net,
            "root/lossy-big.bin",
        ),
        expect(
            tftp_hpa(&net, 2, "lossy.bin", "octet"),
            &net,
            "root/lossy.bin",
        ),
        expect(
            atftp(&net, 3, "lossy-big.bin", &["blksize 1468", "windowsize 16"]),
            &net,
            "root/lossy-big.bin",
        ),
    ];
    for fetch in cases {
        run_fetch(&net, fetch);
    }
    net.assert_server_healthy();
    assert!(
        net.server_log().contains("retransmits="),
        "the loss was real: {}",
        tail(&net.server_log(), 20)
    );
    let log = net.server_log();
    let retransmitted = log
        .lines()
        .filter(|l| l.contains("TFTP read") && !l.contains("retransmits=0"))
        .count();
    assert!(retransmitted > 0, "no transfer saw a loss:\n{log}");
}

#[test]
fn two_hundred_clients_at_once_share_one_copy_without_a_thread_each() {
    if !should_run("tftp_clients", TOOLS) {
        return;
    }
    let mut net = serve("tstorm");
    const CLIENTS: usize = 200;
    let script = format!(
        "for i in $(seq 1 {CLIENTS}); do curl -sS --max-time 60 -o {out}/storm$i \
         tftp://{FILES_SERVER_IP}/snponly.efi & done; wait",
        out = net.path("out").display()
    );
    let mut storm = net
        .client("sh")
        .arg("-c")
        .arg(&script)
        .stdout(Stdio::null())
        .spawn()
        .expect("start the clients");
    // Watch the server's threads while the storm runs.
    let pid = net.server_pid();
    let mut max_threads = 0;
    let started = Instant::now();
    loop {
        max_threads = max_threads.max(thread_count(pid).unwrap_or(0));
        if storm.try_wait().expect("clients").is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the storm did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let expected = std::fs::read(net.path("ipxe/snponly.efi")).expect("served");
    let complete = (1..=CLIENTS)
        .filter(|i| {
            std::fs::read(net.path(&format!("out/storm{i}"))).unwrap_or_default() == expected
        })
        .count();
    assert_eq!(
        complete,
        CLIENTS,
        "every client gets every byte\n{}",
        tail(&net.server_log(), 30)
    );
    net.assert_server_healthy();
    // Tasks, not threads: the main runtime's workers (one per core), the database
    // thread, the TFTP thread and small blocking pools, whatever the number of
    // clients.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert!(
        max_threads <= cores + 20,
        "{max_threads} threads for {CLIENTS} transfers on {cores} cores"
    );
    let peak = peak_rss_kib(pid).expect("VmHWM");
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB");
    println!(
        "{CLIENTS} clients in {:?}, at most {max_threads} threads, peak RSS {peak} KiB",
        started.elapsed()
    );
}

/// 32 MiB, as in the hardening issue: read once into the buffer transfers share (it
/// peaked the process at 79 MB when the file was copied once more while read), and
/// its netascii conversion is dropped when its transfer ends.
const BIG: usize = 32 << 20;

#[test]
fn a_large_file_is_held_once_and_its_netascii_copy_only_while_sent() {
    if !should_run("tftp_clients", TOOLS) {
        return;
    }
    let mut net = FileNet::new(RACKBOOT, "tftp-big");
    net.put("root/big.bin", &test_bytes(BIG, 7));
    net.start();
    let pid = net.server_pid();
    let before = rss_kib(pid).expect("VmRSS");
    run_fetch(
        &net,
        expect(
            curl(&net, 1, "big.bin", &["--tftp-blksize", "65464"]),
            &net,
            "root/big.bin",
        ),
    );
    let peak = peak_rss_kib(pid).expect("VmHWM");
    let big_kib = (BIG >> 10) as u64;
    // One copy of the file and the process's own few MB; two copies would be 64 MiB.
    assert!(
        peak < before + big_kib + 12 * 1024,
        "peak {peak} KiB, {before} KiB before a {big_kib} KiB file"
    );
    let netascii = net.path("out/netascii");
    let mut cmd = net.client("curl");
    let output = cmd
        .args(["-sS", "--max-time", "120", "--tftp-blksize", "65464", "-o"])
        .arg(&netascii)
        .arg(format!("tftp://{FILES_SERVER_IP}/big.bin;mode=netascii"))
        .output()
        .expect("curl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let received = std::fs::metadata(&netascii).expect("netascii copy").len() as usize;
    assert!(received > BIG, "converted: {received} bytes");
    // The octet copy stays cached; the netascii one went with its transfer.
    let after = rss_kib(pid).expect("VmRSS");
    assert!(
        after < before + big_kib + 12 * 1024,
        "{after} KiB resident after the netascii transfer ({before} KiB before)"
    );
    net.assert_server_healthy();
    println!("before {before} KiB, peak after octet {peak} KiB, after netascii {after} KiB");
}
