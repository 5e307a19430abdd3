//! Chaos in the store while clients ask for leases, and nothing acknowledged lost:
//! - the database file locked by another process: a lock shorter than the store's
//!   10 s busy timeout makes the ACK wait for its commit; a longer one makes the commit
//!   fail: no ACK, the server says why, and the client's retry after is acknowledged;
//! - the disk full (a small tmpfs under the data directory): no ACK for a lease that
//!   could not be committed, the reason logged, and service again once space returns.
//!
//! The server is never restarted.

use harness::{DhcpNet, Proc, RawDhcp, dhcp_exchange, should_run, tail, wait_until};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

const DHCP: &str = r#"
[[dhcp.subnets]]
cidr = "198.18.0.0/20"
pool = "198.18.0.10-198.18.0.250"
lease_secs = 3600
"#;

const RELAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// Holds an exclusive (write) lock on the SQLite file for `secs`, from a process of
/// its own, as a backup tool or an operator's `sqlite3` session would.
fn lock_database(net: &DhcpNet, secs: u32) -> Proc {
    let db = net.dir.path().join("data/rackboot.db");
    let script = format!(
        "import sqlite3, time\n\
         c = sqlite3.connect({db:?}, isolation_level=None)\n\
         c.execute('BEGIN EXCLUSIVE')\n\
         print('locked', flush=True)\n\
         time.sleep({secs})\n\
         c.execute('COMMIT')\n\
         print('unlocked', flush=True)\n",
        db = db.display().to_string()
    );
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script);
    let log = net.dir.path().join(format!("lock-{secs}.log"));
    let locker = Proc::spawn(cmd, &log);
    assert!(
        wait_until(Duration::from_secs(10), || locker
            .log_text()
            .contains("locked")),
        "the lock was not taken: {}",
        locker.log_text()
    );
    locker
}

/// DISCOVER then REQUEST through the relay; the ACK (if any) and how long it took.
fn lease(net: &DhcpNet, mac: [u8; 6], xid: u32, wait: Duration) -> (Option<Ipv4Addr>, Duration) {
    let exchange = |packet, xid| {
        dhcp_exchange(
            &net.client_ns,
            "rbc",
            Some(RELAY),
            SERVER,
            packet,
            xid,
            wait,
        )
    };
    let offers = exchange(RawDhcp::new(1, mac, xid).giaddr(RELAY).end(), xid);
    let offer = offers
        .iter()
        .find(|r| r.msg_type == Some(2))
        .unwrap_or_else(|| panic!("no offer (offers never wait for the disk)"));
    let request = RawDhcp::new(3, mac, xid + 1)
        .giaddr(RELAY)
        .option(50, &offer.yiaddr.octets())
        .option(54, &SERVER.octets())
        .end();
    let started = Instant::now();
    let replies = exchange(request, xid + 1);
    let ack = replies
        .iter()
        .find(|r| r.msg_type == Some(5))
        .map(|r| r.yiaddr);
    (ack, started.elapsed())
}

fn bound(net: &DhcpNet, ip: Ipv4Addr, mac: &str) -> bool {
    net.leases()
        .iter()
        .any(|(i, m, state)| *i == ip.to_string() && m == mac && state == "bound")
}

#[test]
fn a_locked_database_delays_or_withholds_acks_and_loses_nothing() {
    if !should_run("chaos_db_locked", &["ip", "python3"]) {
        return;
    }
    let mut net = DhcpNet::new(RACKBOOT, "dblock", DHCP);
    net.server_ns
        .ip(&["addr", "add", "198.18.0.1/20", "dev", "rbs"]);
    net.client_ns
        .ip(&["addr", "add", "198.18.0.2/20", "dev", "rbc"]);
    net.start();

    // Unlocked first: served at once.
    let (ack, took) = lease(
        &net,
        [0x02, 0, 0, 0, 0xd1, 9],
        0x0d00_0000,
        Duration::from_secs(3),
    );
    assert!(
        ack.is_some(),
        "baseline {took:?}\n{}",
        tail(&net.server_log(), 20)
    );

    // Locked for 4 s, within the busy timeout: the ACK waits for its commit.
    let locker = lock_database(&net, 4);
    let locked_at = Instant::now();
    let (ack, _) = lease(
        &net,
        [0x02, 0, 0, 0, 0xd1, 1],
        0x0d10_0000,
        Duration::from_secs(9),
    );
    let acked_after = locked_at.elapsed();
    let ip = ack.unwrap_or_else(|| panic!("no ACK\n{}", tail(&net.server_log(), 20)));
    assert!(
        acked_after >= Duration::from_millis(3500),
        "the ACK left {acked_after:?} into a 4 s lock: before its commit"
    );
    drop(locker);
    assert!(bound(&net, ip, "02:00:00:00:d1:01"), "{:?}", net.leases());

    // Locked for 13 s, past the busy timeout: the commit fails, no ACK leaves, and
    // the server says why.
    let locker = lock_database(&net, 13);
    let mac = [0x02, 0, 0, 0, 0xd1, 2];
    let (ack, _) = lease(&net, mac, 0x0d20_0000, Duration::from_secs(11));
    assert_eq!(ack, None, "an ACK without a commit");
    assert!(
        wait_until(Duration::from_secs(5), || net.server_log().contains(
            "DHCP leases not committed, their acknowledgements are not sent"
        )),
        "{}",
        tail(&net.server_log(), 20)
    );
    assert!(
        wait_until(Duration::from_secs(10), || locker
            .log_text()
            .contains("unlocked")),
        "{}",
        locker.log_text()
    );
    drop(locker);
    // The client tries again, as clients do: served, committed, no restart.
    let (ack, _) = lease(&net, mac, 0x0d30_0000, Duration::from_secs(5));
    let ip2 =
        ack.unwrap_or_else(|| panic!("no ACK after the lock\n{}", tail(&net.server_log(), 20)));
    assert!(bound(&net, ip2, "02:00:00:00:d1:02"), "{:?}", net.leases());
    assert!(
        bound(&net, ip, "02:00:00:00:d1:01"),
        "the first lease is kept"
    );
    assert_ne!(ip, ip2);
}

/// A small tmpfs mounted on a directory of the test's, unmounted when dropped (lazily:
/// the killed server may still hold files there for a moment).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the filesystem is full.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let block = vec![0u8; 64 << 10];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
}

#[test]
fn a_full_disk_withholds_acks_until_space_returns() {
    if !should_run("chaos_disk_full", &["ip", "mount", "umount"]) {
        return;
    }
    let mut net = DhcpNet::new(RACKBOOT, "dfull", DHCP);
    let disk = Tmpfs::mount(&net.dir.path().join("data"), "8m");
    net.server_ns
        .ip(&["addr", "add", "198.18.0.1/20", "dev", "rbs"]);
    net.client_ns
        .ip(&["addr", "add", "198.18.0.2/20", "dev", "rbc"]);
    net.start();
    let (first, _) = lease(
        &net,
        [0x02, 0, 0, 0, 0xdf, 1],
        0x0df1_0000,
        Duration::from_secs(3),
    );
    let first = first.unwrap_or_else(|| panic!("no ACK\n{}", tail(&net.server_log(), 20)));

    let filler = net.dir.path().join("data/filler");
    fill(&filler);
    let mac = [0x02, 0, 0, 0, 0xdf, 2];
    let mut refused = false;
    // A few clients, so the commit needs new pages whatever the WAL had free.
    for n in 0..20u32 {
        let (ack, _) = lease(
            &net,
            [0x02, 0, 0, 1, 0xdf, n as u8],
            0x0df2_0000 + n * 16,
            Duration::from_secs(2),
        );
        if ack.is_none() {
            refused = true;
            break;
        }
    }
    assert!(refused, "a full disk acknowledged every lease");
    assert!(
        wait_until(Duration::from_secs(5), || net.server_log().contains(
            "DHCP leases not committed, their acknowledgements are not sent"
        )),
        "{}",
        tail(&net.server_log(), 20)
    );
    assert!(
        net.server_log().contains("full"),
        "the reason is said: {}",
        tail(&net.server_log(), 20)
    );

    std::fs::remove_file(&filler).expect("free the space");
    let (ack, _) = lease(&net, mac, 0x0df3_0000, Duration::from_secs(5));
    let ip = ack.unwrap_or_else(|| {
        panic!(
            "no ACK once space returned\n{}",
            tail(&net.server_log(), 20)
        )
    });
    assert!(bound(&net, ip, "02:00:00:00:df:02"), "{:?}", net.leases());
    assert!(
        bound(&net, first, "02:00:00:00:df:01"),
        "the first lease is kept"
    );
    net.kill9();
    drop(disk);
}
