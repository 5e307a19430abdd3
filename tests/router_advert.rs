//! rackboot's IPv6 router advertisement, seen by a real client (`rdisc6`): it answers
//! a solicitation with router lifetime 0 and no prefix, and it stays silent once
//! another router (`radvd`) advertises on the link.

use harness::{BootNet, Netns, Proc, should_run, wait_until};
use std::time::Duration;

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

/// One router solicitation from the client namespace; every advertisement heard.
fn solicit(client: &Netns) -> String {
    let out = client
        .command("rdisc6")
        .args(["-n", "-m", "-r", "1", "-w", "1500", "vc0"])
        .output()
        .expect("run rdisc6");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The router lifetimes of every advertisement `rdisc6` printed.
fn lifetimes(heard: &str) -> Vec<u32> {
    heard
        .lines()
        .filter(|l| l.trim_start().starts_with("Router lifetime"))
        .filter_map(|l| l.split(':').nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Connects a new namespace to the boot network's bridge through a veth pair.
fn attach(net: &BootNet, tag: &str, inner: &str, outer: &str) -> Netns {
    let ns = Netns::new(tag);
    net.ns
        .ip(&["link", "add", outer, "type", "veth", "peer", "name", inner]);
    net.ns.ip(&["link", "set", inner, "netns", &ns.name]);
    net.ns.ip(&["link", "set", outer, "master", "br0"]);
    net.ns.ip(&["link", "set", outer, "up"]);
    ns.ip(&["link", "set", inner, "up"]);
    ns
}

#[test]
fn answers_solicitations_and_yields_to_a_real_router() {
    if !should_run("router_advert", &["ip", "rdisc6", "radvd"]) {
        return;
    }
    let mut net = BootNet::new(RACKBOOT, "ra", &[]);
    let client = attach(&net, "ra-client", "vc0", "vs0");
    // Wait for link-local addresses (duplicate address detection) on both sides.
    let ready = wait_until(Duration::from_secs(10), || {
        let out = client
            .command("ip")
            .args(["-6", "addr", "show", "dev", "vc0"])
            .output();
        out.is_ok_and(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            text.contains("fe80::") && !text.contains("tentative")
        })
    });
    assert!(ready, "no link-local address on the client");
    std::thread::sleep(Duration::from_secs(2));
    net.start();

    let heard = solicit(&client);
    assert_eq!(
        lifetimes(&heard),
        [0],
        "one advertisement, lifetime 0: {heard}\n{}",
        net.server_log()
    );
    assert!(!heard.contains("Prefix"), "no prefix announced: {heard}");

    // Another router comes up on the link.
    let router = attach(&net, "ra-router", "vr0", "vsr0");
    let conf = net.dir.path().join("radvd.conf");
    std::fs::write(
        &conf,
        "interface vr0 {\n  AdvSendAdvert on;\n  MinRtrAdvInterval 3;\n  MaxRtrAdvInterval 4;\n  \
         AdvDefaultLifetime 1800;\n  prefix 2001:db8:1::/64 { };\n};\n",
    )
    .expect("radvd config");
    let mut radvd = router.command("radvd");
    radvd
        .args(["--nodaemon", "-m", "stderr", "-C"])
        .arg(&conf)
        .args(["-p"])
        .arg(net.dir.path().join("radvd.pid"));
    let _radvd = Proc::spawn(radvd, &net.dir.path().join("radvd.log"));
    let silent = wait_until(Duration::from_secs(20), || {
        net.server_log().contains("another IPv6 router advertises")
    });
    assert!(
        silent,
        "rackboot did not notice radvd:\n{}",
        net.server_log()
    );
    let heard = solicit(&client);
    let heard_lifetimes = lifetimes(&heard);
    assert!(heard_lifetimes.contains(&1800), "radvd answers: {heard}");
    assert!(
        !heard_lifetimes.contains(&0),
        "rackboot must stay silent beside a real router: {heard}"
    );
}
