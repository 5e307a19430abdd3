//! Defects of the hardening issue, reproduced as an attacker or a low-privileged
//! user would and shown closed.

use crate::fake_redfish::{FakeRedfish, GOOD_AUTH};
use crate::support::{api, app, send, token};
use axum::http::{Method, StatusCode};
use rackboot::auth::Role;

const POWER: &str = "/api/v1/machines/52-54-00-12-34-56/power";

/// 17.2: an operator who points an admin's Redfish controller at a BMC of their own,
/// without giving the password, must not receive the stored password there.
#[tokio::test]
async fn an_operator_cannot_send_a_stored_bmc_password_elsewhere() {
    let app = app().await;
    let real = FakeRedfish::start().await;
    let attacker = FakeRedfish::start().await;
    let admin = token(&app, "root", Role::Admin).await;
    let operator = token(&app, "op", Role::Operator).await;
    let set = send(
        &app,
        api(
            Method::PUT,
            POWER,
            Some(&admin),
            Some(&format!(
                r#"{{"kind":"redfish","url":"{}","user":"root","password":"calvin","system_id":"1"}}"#,
                real.url
            )),
        ),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);

    for moved in [
        format!(
            r#"{{"kind":"redfish","url":"{}","user":"root","system_id":"1"}}"#,
            attacker.url
        ),
        format!(
            r#"{{"kind":"redfish","url":"{}","user":"root","system_id":"1","verify_tls":false}}"#,
            real.url
        ),
        // Another kind of controller never inherits the password either.
        r#"{"kind":"ipmi","host":"127.0.0.1","user":"root"}"#.to_string(),
    ] {
        let refused = send(&app, api(Method::PUT, POWER, Some(&operator), Some(&moved))).await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{moved}: {}",
            refused.body
        );
        assert!(
            refused.body.contains("password is required"),
            "{}",
            refused.body
        );
    }
    let status = send(
        &app,
        api(
            Method::POST,
            &format!("{POWER}/status"),
            Some(&operator),
            None,
        ),
    )
    .await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    assert!(
        attacker.seen().is_empty(),
        "the attacker's BMC was asked: {:?}",
        attacker.seen()
    );
    let asked = real.seen();
    assert!(!asked.is_empty(), "the real BMC is still the one asked");
    assert!(
        asked
            .iter()
            .all(|r| r.authorization.as_deref() == Some(GOOD_AUTH)),
        "the stored password still works where it belongs"
    );
}

/// 17.11: an unknown PXE client's vendor class (option 60) and host name (option 12)
/// reach `machine list`, `lease list` and `event list` as text, never as terminal
/// control sequences.
#[tokio::test]
async fn terminal_escapes_from_the_network_do_not_reach_the_cli() {
    use rackboot::store::{
        DhcpBatch, Discovered, LeaseOp, LeaseRecord, LeaseState, NewEvent, Store,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let hostile = "PXE\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m";
    let mac = rackboot::mac::MacAddr([0x52, 0x54, 0, 0x66, 0x66, 0x66]);
    let store = Store::open(&data.join("rackboot.db")).expect("open");
    let batch = DhcpBatch {
        discovered: vec![Discovered {
            mac,
            arch: Some("bios".into()),
            vendor_class: Some(hostile.into()),
        }],
        leases: vec![LeaseOp::Put(LeaseRecord {
            ip: std::net::Ipv4Addr::new(192, 0, 2, 66),
            mac,
            expires_at: rackboot::clock::now_ms() / 1000 + 3600,
            state: LeaseState::Bound,
            hostname: Some(hostile.into()),
            client_id: None,
        })],
        events: vec![NewEvent {
            at_ms: 1,
            mac: Some(mac),
            kind: "dhcp.discover",
            detail: hostile.into(),
        }],
        ..DhcpBatch::default()
    };
    store
        .call(move |conn| rackboot::store::commit_dhcp_batch(conn, &batch, 1))
        .await
        .expect("commit");
    drop(store);
    let config = dir.path().join("rackboot.toml");
    std::fs::write(&config, format!("data_dir = {data:?}\n")).expect("config");
    for command in [
        &["machine", "list"][..],
        &["lease", "list"],
        &["event", "list"],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_rackboot"))
            .arg("--config")
            .arg(&config)
            .args(command)
            .output()
            .expect("run rackboot");
        assert!(output.status.success(), "{command:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.contains("owned"),
            "{command:?}: the text is still shown: {text}"
        );
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{command:?}: control characters reached the terminal: {text:?}"
        );
    }
}

/// 17.8: a `next` that a browser would read as another site is not followed after
/// login; 17.10: a CSV export does not hand a spreadsheet a formula.
#[tokio::test]
async fn login_stays_on_the_panel_and_exports_hold_no_formulas() {
    use crate::support::{add_user, get, login, post_form, post_login};
    let app = app().await;
    add_user(&app, "ann", Role::Operator).await;
    for next in [
        "%2F%09%2Fevil.example",
        "%2F%5Cevil.example",
        "%2F%2Fevil.example",
    ] {
        let reply = post_login(
            &app,
            &format!("user=ann&password=a-long-password&next={next}"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        assert_eq!(reply.headers[axum::http::header::LOCATION], "/", "{next}");
    }
    let (cookie, csrf) = login(&app, "ann").await;
    let settings = format!(
        "csrf={csrf}&hostname=node1&ip=192.0.2.10&exit_method=exit&rack=%3Dcmd%7C%27+%2FC+calc%27%21A0&position=&ssh_keys="
    );
    let saved = send(
        &app,
        post_form(
            "/machines/52-54-00-12-34-56/settings",
            Some(&cookie),
            &settings,
        ),
    )
    .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let csv = send(&app, get("/export.csv", Some(&cookie))).await;
    assert!(csv.body.contains("'=cmd|"), "{}", csv.body);
    assert!(
        !csv.body
            .lines()
            .any(|line| line.split(',').any(|cell| cell.starts_with('='))),
        "{}",
        csv.body
    );
}
