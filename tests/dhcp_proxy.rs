//! proxyDHCP: beside a router that hands out addresses (dnsmasq, in its own namespace
//! on the same bridge), rackboot in `mode = "proxy"` answers PXE clients with boot
//! information only, and a UEFI VM (OVMF's own PXE, then iPXE) boots its image. Every
//! reply rackboot sends carries no address; the PXE boot server port 4011 answers too.

use harness::{
    BootNet, Capture, Firmware, Proc, RawDhcp, Vm, boot_fixtures, dhcp_send_from, read_dhcp,
    read_pcap_udp, should_run, tail,
};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

const MARKER: &str = "RACKBOOT-MARKER-BOOTED";
const VM_MAC: &str = "52:54:00:bb:0c:01";
const BOOT_DEADLINE: Duration = Duration::from_secs(300);

#[test]
fn proxy_mode_boots_a_vm_beside_another_dhcp_server() {
    if !should_run(
        "dhcp_proxy",
        &[
            "ip",
            "qemu-system-x86_64",
            "cpio",
            "busybox",
            "apt-get",
            "dnsmasq",
            "tcpdump",
        ],
    ) {
        return;
    }
    let fixtures = boot_fixtures();
    let mut net = BootNet::new(RACKBOOT, "proxy", &["tap0"]);
    net.set_dhcp_section(
        "[dhcp]\ninterface = \"br0\"\nmode = \"proxy\"\npolicy = \"known_only\"\n",
    );

    // The network's own DHCP server: dnsmasq, addresses only, no boot options.
    let router = net.attach_namespace("proxy-r");
    router.ip(&["addr", "add", "192.0.2.254/24", "dev", "veth-r"]);
    router.ip(&["link", "set", "veth-r", "up"]);
    let dnsmasq_leases = net.dir.path().join("dnsmasq.leases");
    let mut dnsmasq_cmd = router.command("dnsmasq");
    dnsmasq_cmd
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            "--interface=veth-r",
            "--bind-interfaces",
            "--no-ping",
            "--log-dhcp",
            "--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,1h",
        ])
        .arg(format!("--dhcp-leasefile={}", dnsmasq_leases.display()))
        .arg(format!(
            "--pid-file={}",
            net.dir.path().join("dnsmasq.pid").display()
        ));
    let dnsmasq = Proc::spawn(dnsmasq_cmd, &net.dir.path().join("dnsmasq.log"));

    let kernel = fixtures.join("vmlinuz");
    let initrd = fixtures.join("initrd.img");
    net.cli(&[
        "image",
        "add",
        "marker",
        "--kernel",
        kernel.to_str().expect("utf8 path"),
        "--initrd",
        initrd.to_str().expect("utf8 path"),
        "--cmdline",
        "console=ttyS0 panic=-1",
    ]);
    net.cli(&["machine", "add", VM_MAC, "--image", "marker"]);
    net.start();
    let pcap = net.dir.path().join("proxy.pcap");
    let mut capture = Capture::start(&net.ns, "br0", "udp port 67 or udp port 4011", &pcap);

    let mut vm = Vm::start(&net, Firmware::Uefi, "tap0", VM_MAC, "uefi");
    let booted = vm.wait_for(MARKER, BOOT_DEADLINE);
    capture.stop();
    assert!(
        booted,
        "VM did not boot\n--- serial ---\n{}\n--- rackboot ---\n{}\n--- dnsmasq ---\n{}",
        tail(&vm.serial_text(), 40),
        tail(&net.server_log(), 60),
        tail(&dnsmasq.log_text(), 30)
    );

    // The address came from dnsmasq.
    let leases = harness::read_lossy(&dnsmasq_leases);
    assert!(leases.contains(VM_MAC), "dnsmasq leases: {leases}");
    // rackboot handed out none: it only learned where the VM is.
    let ours = net.cli(&["lease", "list"]);
    assert!(
        ours.lines()
            .skip(1)
            .all(|l| l.split_whitespace().nth(2) == Some("observed")),
        "{ours}"
    );
    assert!(ours.contains(VM_MAC), "learned address: {ours}");
    let events = net.cli(&["event", "list", "--mac", VM_MAC]);
    assert!(events.contains("dhcp.proxy-offer"), "{events}");
    assert!(events.contains("tftp.read"), "{events}");
    assert!(events.contains("http.kernel"), "{events}");

    // On the wire: rackboot's replies (from 192.0.2.1) never carry an address, carry
    // vendor class PXEClient and PXE discovery control "use this file".
    let server = Ipv4Addr::new(192, 0, 2, 1);
    let replies: Vec<_> = read_pcap_udp(&pcap)
        .into_iter()
        .filter(|d| *d.src.ip() == server)
        .collect();
    assert!(!replies.is_empty());
    for reply in &replies {
        let dhcp = read_dhcp(&reply.payload).expect("DHCP");
        assert_eq!(dhcp.yiaddr, Ipv4Addr::UNSPECIFIED, "{dhcp:?}");
        assert!(
            dhcp.options
                .iter()
                .any(|(c, v)| *c == 60 && v.starts_with(b"PXEClient")),
            "{dhcp:?}"
        );
        assert!(
            !dhcp.options.iter().any(|(c, _)| *c == 51),
            "no lease time: {dhcp:?}"
        );
        assert!(dhcp.options.contains(&(43, vec![6, 1, 8, 255])), "{dhcp:?}");
    }

    // The PXE boot server port answers a firmware's boot file request (as firmware
    // that does not take the file from the offer sends it), from the client's address.
    let xid = 0x4011;
    let mac = [0x52, 0x54, 0x00, 0xbb, 0x0c, 0x01];
    let mut request = RawDhcp::new(3, mac, xid)
        .option(93, &[0, 7])
        .option(60, b"PXEClient:Arch:00007:UNDI:003000")
        .option(97, &[0; 17])
        .end();
    request[10] = 0; // no broadcast flag: the client has its address
    request[12..16].copy_from_slice(&[192, 0, 2, 254]);
    let replies = dhcp_send_from(
        &router,
        "veth-r",
        SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 254), 68),
        SocketAddrV4::new(server, 4011),
        request,
        xid,
        Duration::from_secs(3),
    );
    let ack = replies.first().expect("an answer from port 4011");
    assert_eq!(ack.msg_type, Some(5));
    assert_eq!(ack.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(ack.file, "snponly.efi");
    assert!(
        ack.options.contains(&(97, vec![0; 17])),
        "97 echoed: {ack:?}"
    );

    // That request was the hardening issue's attack (17.1): another host (the
    // router) sent the VM's MAC with its own address as ciaddr. rackboot records it
    // as observed, but the kernel's neighbour entry for 192.0.2.254 names the
    // router's MAC, so the VM's secrets stay refused there; the VM itself fetched its
    // install script (with its done-URL) above through the same rule.
    assert!(
        harness::wait_until(Duration::from_secs(5), || net
            .cli(&["lease", "list"])
            .lines()
            .any(|l| l.contains("192.0.2.254") && l.contains(VM_MAC))),
        "the spoofed address was not recorded: {}",
        net.cli(&["lease", "list"])
    );
    for path in [
        "/boot/52-54-00-bb-0c-01.ipxe",
        "/machines/52-54-00-bb-0c-01/files/preseed.cfg",
    ] {
        let status = harness::run(router.command("curl").args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            &format!("http://192.0.2.1:8080{path}"),
        ]));
        assert_eq!(status.trim(), "403", "{path} from the spoofing host");
    }
}
