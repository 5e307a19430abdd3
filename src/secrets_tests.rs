//! The secrets rule as the routes apply it: every route that serves a secret, asked
//! from the machine's own address, another address, an expired lease's address and an
//! observed address (proxy mode) with and without the opt-in; the per-machine TFTP
//! directory over real sockets on loopback; and the spoofed-packet attack of the
//! hardening issue (17.1), in proxy and in full mode. No root, no namespaces.

use crate::clock;
use crate::config::{AnswerPolicy, Subnet};
use crate::dhcp::boot::BootConfig;
use crate::dhcp::leases::LeaseBook;
use crate::dhcp::policy::{self, Context, ProxyContext, ProxyPort};
use crate::dhcp::server::observed_lease;
use crate::dhcp::wire::{self, tests::Packet};
use crate::http::tests::{TestApp, app};
use crate::inventory;
use crate::mac::MacAddr;
use crate::secrets::{Neighbours, Policy, Rule};
use crate::service::machines::{NewMachine, add_in};
use crate::store::{self, DhcpBatch, LeaseOp, LeaseRecord, LeaseState, Store};
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const VICTIM: MacAddr = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
const IMAGELESS: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 2]);
const ATTACKER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x66]);

/// The routes that serve the test machine a secret: its install-mode boot script
/// (with the done-URL) and an install file (done-URL and SSH keys).
const ROUTES: [&str; 2] = [
    "/boot/52-54-00-12-34-56.ipxe",
    "/machines/52-54-00-12-34-56/files/preseed.cfg",
];

fn ip(d: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, d)
}

fn now_s() -> i64 {
    clock::now_ms() / 1000
}

/// A neighbour table the test writes.
#[derive(Default)]
struct Table(HashMap<Ipv4Addr, MacAddr>);

impl Neighbours for Table {
    fn mac_of(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.0.get(&ip).copied()
    }
}

fn rule(trust_observed: bool, neighbours: &[(Ipv4Addr, MacAddr)]) -> Rule {
    Rule::with_neighbours(
        Policy { trust_observed },
        Arc::new(Table(neighbours.iter().copied().collect())),
    )
}

fn strict() -> Rule {
    rule(false, &[])
}

fn trusting() -> Rule {
    rule(true, &[])
}

async fn put_leases(store: &Store, leases: Vec<LeaseRecord>) {
    let batch = DhcpBatch {
        leases: leases.into_iter().map(LeaseOp::Put).collect(),
        ..DhcpBatch::default()
    };
    store
        .call(move |conn| store::commit_dhcp_batch(conn, &batch, clock::now_ms()))
        .await
        .expect("commit");
}

fn lease(ip: Ipv4Addr, mac: MacAddr, state: LeaseState, expires_at: i64) -> LeaseRecord {
    LeaseRecord {
        ip,
        mac,
        expires_at,
        state,
        hostname: None,
        client_id: None,
    }
}

/// GETs `uri` from `peer` through the app's router under `secrets`.
async fn get_from(
    app: &TestApp,
    peer: Ipv4Addr,
    secrets: &Rule,
    uri: &str,
) -> (StatusCode, String) {
    let mut state = app.state.clone();
    state.secrets = secrets.clone();
    let router = crate::panel::app(state, app._dir.path().to_path_buf())
        .layer(MockConnectInfo(SocketAddr::from((peer, 40000))));
    let request = axum::http::Request::builder()
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let response = router.oneshot(request).await.expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Asserts what every secret-bearing route answers `peer`; a served one must carry
/// the done-URL (it is the secret).
async fn expect_routes(app: &TestApp, peer: Ipv4Addr, secrets: &Rule, served: bool, case: &str) {
    for route in ROUTES {
        let (status, body) = get_from(app, peer, secrets, route).await;
        if served {
            assert_eq!(status, StatusCode::OK, "{case}: {route}: {body}");
            assert!(body.contains("/done/"), "{case}: {route}: {body}");
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{case}: {route}: {body}");
            assert!(!body.contains("/done/"), "{case}: {route}: {body}");
        }
    }
}

async fn clear_fixed_address(app: &TestApp) {
    app.state
        .store
        .transaction(|tx| {
            crate::service::machines::update_in(
                tx,
                VICTIM,
                &inventory::MachinePatch {
                    ip: Some(None),
                    ..Default::default()
                },
                &[],
                "test",
                0,
            )
        })
        .await
        .expect("update");
}

#[tokio::test]
async fn each_secret_route_follows_the_rule() {
    let app = app().await;
    let now = now_s();
    put_leases(
        &app.state.store,
        vec![
            lease(ip(51), VICTIM, LeaseState::Bound, now + 3600),
            lease(ip(50), VICTIM, LeaseState::Bound, now - 10),
            lease(ip(52), IMAGELESS, LeaseState::Bound, now + 3600),
            lease(ip(53), VICTIM, LeaseState::Released, now + 3600),
            observed_lease(VICTIM, ip(60), clock::now_ms()),
        ],
    )
    .await;
    let own = Ipv4Addr::from(crate::http::tests::OWN_IP);
    let cases: Vec<(&str, Ipv4Addr, Rule, bool)> = vec![
        ("the machine's fixed address", own, strict(), true),
        ("the machine's bound lease", ip(51), strict(), true),
        ("another address", ip(99), trusting(), false),
        ("another machine's lease", ip(52), trusting(), false),
        ("an expired lease's address", ip(50), trusting(), false),
        ("a released lease's address", ip(53), trusting(), false),
        ("observed, no opt-in", ip(60), strict(), false),
        ("observed, opted in", ip(60), trusting(), true),
        (
            "observed, the neighbour entry names the machine",
            ip(60),
            rule(false, &[(ip(60), VICTIM)]),
            true,
        ),
        (
            "observed, the neighbour entry names another MAC",
            ip(60),
            rule(true, &[(ip(60), ATTACKER_MAC)]),
            false,
        ),
    ];
    for (case, peer, secrets, served) in &cases {
        expect_routes(&app, *peer, secrets, *served, case).await;
    }
}

#[tokio::test]
async fn a_script_without_a_secret_goes_to_anyone() {
    let app = app().await;
    let (status, body) = get_from(&app, ip(99), &strict(), "/boot/52-54-00-00-00-02.ipxe").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn the_inventory_describes_an_address() {
    let store = Store::open_in_memory().expect("store");
    let now = now_s();
    store
        .transaction(|conn| {
            add_in(
                conn,
                &NewMachine {
                    ip: Some(ip(10)),
                    ..NewMachine::new(VICTIM)
                },
                &Default::default(),
                &[],
                "test",
                0,
            )
        })
        .await
        .expect("add");
    put_leases(
        &store,
        vec![lease(ip(60), IMAGELESS, LeaseState::Observed, now + 5)],
    )
    .await;
    let records = |addr| {
        let store = store.clone();
        async move {
            store
                .call(move |conn| store::address_records(conn, addr))
                .await
                .expect("query")
        }
    };
    let fixed = records(ip(10)).await;
    assert_eq!((fixed.fixed_owner, fixed.lease), (Some(VICTIM), None));
    let observed = records(ip(60)).await;
    assert_eq!(observed.fixed_owner, None);
    let lease = observed.lease.expect("lease");
    assert_eq!((lease.mac, lease.state), (IMAGELESS, LeaseState::Observed));
    assert_eq!(records(ip(99)).await, store::AddressRecords::default());
    // The neighbour table is read for an observed lease only, and decides there.
    let evidence = rule(false, &[(ip(60), IMAGELESS), (ip(10), ATTACKER_MAC)]);
    let seen = evidence
        .evidence(&store, ip(60), now)
        .await
        .expect("evidence");
    assert_eq!(seen.neighbour, Some(IMAGELESS));
    let seen = evidence
        .evidence(&store, ip(10), now)
        .await
        .expect("evidence");
    assert_eq!(seen.neighbour, None);
    assert_eq!(
        evidence
            .machine_at(&store, ip(60), now)
            .await
            .expect("owner"),
        Some((IMAGELESS, crate::secrets::Grant::ObservedConfirmed))
    );
}

// ---- TFTP: a machine's own directory ----

/// Reads `path` from the TFTP server at `server`, from the address `from`.
/// Err carries the server's error code.
fn tftp_get(server: SocketAddr, from: Ipv4Addr, path: &str) -> Result<Vec<u8>, u16> {
    let socket = UdpSocket::bind((from, 0)).expect("bind on loopback");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(path.as_bytes());
    rrq.push(0);
    rrq.extend_from_slice(b"octet\0");
    socket.send_to(&rrq, server).expect("send");
    let mut data = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let (len, peer) = socket.recv_from(&mut buf).expect("a reply within 5 s");
        let packet = &buf[..len];
        match packet.get(..2) {
            Some([0, 3]) => {
                data.extend_from_slice(&packet[4..]);
                socket
                    .send_to(&[0, 4, packet[2], packet[3]], peer)
                    .expect("ack");
                if len - 4 < 512 {
                    return Ok(data);
                }
            }
            Some([0, 5]) => return Err(u16::from_be_bytes([packet[2], packet[3]])),
            other => panic!("unexpected TFTP packet {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_machines_tftp_directory_goes_to_that_machine_only() {
    // Every 127/8 address is this host's: clients with distinct addresses, no root.
    let own = Ipv4Addr::new(127, 0, 0, 5);
    let leased = Ipv4Addr::new(127, 0, 0, 6);
    let expired = Ipv4Addr::new(127, 0, 0, 7);
    let observed = Ipv4Addr::new(127, 0, 0, 8);
    let other = Ipv4Addr::new(127, 0, 0, 9);
    let dir = tempfile::tempdir().expect("tempdir");
    let ipxe = dir.path().join("ipxe");
    let root = dir.path().join("root");
    let machine_dir = root.join(VICTIM.dashed());
    std::fs::create_dir_all(&ipxe).expect("mkdir");
    std::fs::create_dir_all(&machine_dir).expect("mkdir");
    std::fs::write(machine_dir.join("autoexec.ipxe"), b"#!ipxe\n# node1 secret").expect("write");
    std::fs::write(root.join("autoexec.ipxe"), b"#!ipxe\n# everyone").expect("write");
    let store = Store::open_in_memory().expect("store");
    store
        .transaction(move |conn| {
            add_in(
                conn,
                &NewMachine {
                    ip: Some(own),
                    ..NewMachine::new(VICTIM)
                },
                &Default::default(),
                &[],
                "test",
                0,
            )
        })
        .await
        .expect("add");
    let now = now_s();
    put_leases(
        &store,
        vec![
            lease(leased, VICTIM, LeaseState::Bound, now + 3600),
            lease(expired, VICTIM, LeaseState::Bound, now - 10),
            observed_lease(VICTIM, observed, clock::now_ms()),
        ],
    )
    .await;
    let start = |secrets: Rule| {
        crate::tftp::start(
            crate::tftp::Settings {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                ipxe_dir: ipxe.clone(),
                root: Some(root.clone()),
                secrets,
                max_transfers: 16,
                boot: None,
            },
            store.clone(),
        )
        .expect("TFTP server")
    };
    let strict_server = start(strict());
    let trusting_server = start(trusting());
    let cases: Vec<(&str, SocketAddr, Ipv4Addr, bool)> = vec![
        ("the machine's fixed address", strict_server, own, true),
        ("the machine's bound lease", strict_server, leased, true),
        (
            "an expired lease's address",
            trusting_server,
            expired,
            false,
        ),
        ("another address", trusting_server, other, false),
        ("observed, no opt-in", strict_server, observed, false),
        ("observed, opted in", trusting_server, observed, true),
    ];
    let outcomes = tokio::task::spawn_blocking(move || {
        cases
            .into_iter()
            .map(|(case, server, from, allowed)| {
                let implicit = tftp_get(server, from, "autoexec.ipxe");
                let named = tftp_get(server, from, "52-54-00-12-34-56/autoexec.ipxe");
                (case, allowed, implicit, named)
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("client");
    for (case, allowed, implicit, named) in outcomes {
        let text = |r: &Result<Vec<u8>, u16>| {
            r.clone()
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        };
        if allowed {
            assert_eq!(
                text(&implicit),
                Ok("#!ipxe\n# node1 secret".into()),
                "{case}"
            );
            assert_eq!(text(&named), Ok("#!ipxe\n# node1 secret".into()), "{case}");
        } else {
            // The shared file instead of the machine's, and its directory refused
            // with "access violation".
            assert_eq!(text(&implicit), Ok("#!ipxe\n# everyone".into()), "{case}");
            assert_eq!(named, Err(2), "{case}");
        }
    }
}

// ---- 17.1: one spoofed packet must not hand over another machine's secrets ----

fn boot_config() -> BootConfig {
    BootConfig {
        default_loader_amd64: crate::lifecycle::Loader::Ipxe,
        default_loader_arm64: crate::lifecycle::Loader::Ipxe,
        server_ip: ip(1),
        http_url: "http://192.0.2.1:8080".into(),
        bios_file: "undionly.kpxe".into(),
        uefi_x64_file: "snponly.efi".into(),
        uefi_arm64_file: "arm64-efi/snponly.efi".into(),
        arm64_available: false,
    }
}

/// A UEFI firmware's PXE packet with the victim's MAC, as an attacker writes it.
fn spoofed(msg_type: u8) -> Packet {
    Packet::new(msg_type, VICTIM.0)
        .option(60, b"PXEClient:Arch:00007:UNDI:003000")
        .option(93, &[0, 7])
}

#[tokio::test]
async fn proxy_mode_a_spoofed_pxe_packet_hands_over_no_secret() {
    let app = app().await;
    // In proxy mode the victim's address comes from the network's DHCP server.
    clear_fixed_address(&app).await;
    let attacker = ip(66);
    let machine = app
        .state
        .store
        .call(|conn| store::get_machine(conn, VICTIM))
        .await
        .expect("query")
        .expect("victim");
    let boot = boot_config();
    for (msg_type, port) in [(1, ProxyPort::Dhcp), (3, ProxyPort::BootServer)] {
        let request = wire::parse_request(&spoofed(msg_type).ciaddr(attacker.octets()).end())
            .expect("parses");
        let ctx = ProxyContext {
            server_ip: ip(1),
            machine: Some(&machine),
            boot: &boot,
            policy: AnswerPolicy::All,
            port,
        };
        let decision = policy::decide_proxy(&request, &ctx);
        // The packet is taken at its word, as the proxy must: it records the address...
        assert_eq!(decision.observed, Some(attacker));
        put_leases(
            &app.state.store,
            vec![observed_lease(VICTIM, attacker, clock::now_ms())],
        )
        .await;
    }
    // ...but the record alone opens nothing, and where the link answers for the
    // address, its answer (the attacker's MAC) refuses even with the opt-in.
    expect_routes(&app, attacker, &strict(), false, "no neighbour entry").await;
    let attacker_seen = [(attacker, ATTACKER_MAC)];
    expect_routes(
        &app,
        attacker,
        &rule(false, &attacker_seen),
        false,
        "strict, neighbour",
    )
    .await;
    expect_routes(
        &app,
        attacker,
        &rule(true, &attacker_seen),
        false,
        "opt-in, neighbour",
    )
    .await;
    // What the opt-in means, and why it is documented as spoofable.
    expect_routes(
        &app,
        attacker,
        &trusting(),
        true,
        "opt-in, no neighbour entry",
    )
    .await;
    // The victim itself, at the address the neighbour table confirms, still boots.
    let victim = ip(70);
    put_leases(
        &app.state.store,
        vec![observed_lease(VICTIM, victim, clock::now_ms())],
    )
    .await;
    expect_routes(
        &app,
        victim,
        &rule(false, &[(victim, VICTIM)]),
        true,
        "victim",
    )
    .await;
}

#[tokio::test]
async fn full_mode_spoofed_packets_hand_over_no_secret() {
    let app = app().await;
    clear_fixed_address(&app).await;
    let attacker = ip(66);
    let server = ip(1).octets();
    let subnet = Subnet {
        network: ip(0),
        prefix_len: 24,
        pool_start: ip(100),
        pool_end: ip(102),
        known_pool: None,
        router: Some(ip(1)),
        dns: vec![],
        domain: None,
        lease_secs: 3600,
        renew_secs: 1800,
        rebind_secs: 3150,
    };
    let boot = boot_config();
    let fixed = HashMap::new();
    let reserved: HashSet<Ipv4Addr> = [ip(1)].into_iter().collect();
    let mut book = LeaseBook::load(false, &subnet.pools(), reserved, Vec::new());
    let machine = app
        .state
        .store
        .call(|conn| store::get_machine(conn, VICTIM))
        .await
        .expect("query")
        .expect("victim");
    let now = now_s();
    // The victim's own DORA first, then everything an attacker might send with the
    // victim's MAC and its own address.
    let packets = [
        spoofed(1),
        spoofed(3).option(54, &server).option(50, &ip(100).octets()),
        spoofed(3).ciaddr(attacker.octets()),
        spoofed(3)
            .option(54, &server)
            .option(50, &attacker.octets()),
        spoofed(3).option(50, &attacker.octets()),
        spoofed(1).option(50, &attacker.octets()),
        spoofed(8).ciaddr(attacker.octets()),
    ];
    for packet in packets {
        let request = wire::parse_request(&packet.end()).expect("parses");
        let ctx = Context {
            server_ip: ip(1),
            subnet: &subnet,
            machine: Some(&machine),
            fixed: &fixed,
            boot: &boot,
            policy: AnswerPolicy::All,
            now,
        };
        let decision = policy::decide(&request, &ctx, &book);
        let key = book.key_of(request.mac, request.client_id.as_deref());
        if let Some(record) = decision.commit {
            let ops = book.apply(record);
            let batch = DhcpBatch {
                leases: ops,
                ..DhcpBatch::default()
            };
            app.state
                .store
                .call(move |conn| store::commit_dhcp_batch(conn, &batch, clock::now_ms()))
                .await
                .expect("commit");
        }
        if let Some((ip, until)) = decision.hold_offer {
            book.hold_offer(ip, key, until);
        }
    }
    for secrets in [strict(), trusting(), rule(true, &[(attacker, VICTIM)])] {
        expect_routes(&app, attacker, &secrets, false, "attacker").await;
    }
    // The victim's lease is where its secrets go.
    expect_routes(&app, ip(100), &strict(), true, "the victim's lease").await;
}
