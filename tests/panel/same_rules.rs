//! One action, one rule set: the same invalid machine is refused by the CLI, the JSON
//! API and the panel with the same message, because all three call the service
//! layer.

use crate::support::{TestApp, add_user, api, app_with, login, post_form, send, token};
use axum::http::{Method, StatusCode};
use rackboot::auth::Role;
use rackboot::config::Subnet;
use rackboot::power::PowerConfig;
use rackboot::service::Services;
use std::net::Ipv4Addr;
use std::process::Command;

/// The subnet both the in-process app and the CLI's config serve.
fn subnet() -> Subnet {
    Subnet {
        network: Ipv4Addr::new(192, 0, 2, 0),
        prefix_len: 24,
        pool_start: Ipv4Addr::new(192, 0, 2, 100),
        pool_end: Ipv4Addr::new(192, 0, 2, 200),
        known_pool: None,
        router: None,
        dns: vec![],
        domain: None,
        lease_secs: 3600,
        renew_secs: 1800,
        rebind_secs: 3150,
    }
}

const CONFIG: &str = r#"
[dhcp]
interface = "lo"
[[dhcp.subnets]]
cidr = "192.0.2.0/24"
pool = "192.0.2.100-192.0.2.200"
"#;

/// (CLI flags, API JSON fields, panel form fields) for one invalid machine, and the
/// message every surface must give.
struct Case {
    cli: &'static [&'static str],
    json: &'static str,
    form: &'static str,
    message: &'static str,
}

const CASES: &[Case] = &[
    Case {
        cli: &["--ip", "10.9.9.9"],
        json: r#""ip":"10.9.9.9""#,
        form: "ip=10.9.9.9",
        message: "ip 10.9.9.9 is not inside any configured dhcp.subnets",
    },
    Case {
        cli: &["--hostname", "bad_name"],
        json: r#""hostname":"bad_name""#,
        form: "hostname=bad_name",
        message: r#"hostname "bad_name" is not a valid host name"#,
    },
    Case {
        cli: &["--image", "nope"],
        json: r#""image":"nope""#,
        form: "image=nope",
        message: r#"no image named "nope""#,
    },
];

const NEW_MAC: &str = "52:54:00:aa:bb:01";

async fn app_serving_the_subnet() -> TestApp {
    app_with(|state| {
        let services = Services::new(
            state.store.clone(),
            (*state.lifecycle).clone(),
            vec![subnet()],
            PowerConfig::default(),
            state.data_dir.clone(),
        );
        *state = state.clone().with_services(services);
    })
    .await
}

fn cli_refusal(dir: &std::path::Path, flags: &[&str]) -> String {
    let config = dir.join("rackboot.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n{CONFIG}", dir.join("data")),
    )
    .expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_rackboot"))
        .arg("--config")
        .arg(&config)
        .args(["machine", "add", NEW_MAC])
        .args(flags)
        .output()
        .expect("run rackboot");
    assert!(!output.status.success(), "the CLI accepted {flags:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What the page shows, with HTML's escapes of quotes undone.
fn unescaped(html: &str) -> String {
    html.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#x22;", "\"")
}

#[tokio::test]
async fn the_cli_the_api_and_the_panel_refuse_an_invalid_machine_alike() {
    let app = app_serving_the_subnet().await;
    let operator = token(&app, "ci", Role::Operator).await;
    add_user(&app, "ann", Role::Operator).await;
    let (cookie, csrf) = login(&app, "ann").await;
    let dir = tempfile::tempdir().expect("tempdir");
    for case in CASES {
        let cli = cli_refusal(dir.path(), case.cli);
        assert_eq!(
            cli.trim(),
            format!("rackboot: {}", case.message),
            "CLI {:?}",
            case.cli
        );

        let body = format!(r#"{{"mac":"{NEW_MAC}",{}}}"#, case.json);
        let reply = send(
            &app,
            api(
                Method::POST,
                "/api/v1/machines",
                Some(&operator),
                Some(&body),
            ),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
        let error: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
        assert_eq!(error["error"]["message"], case.message, "API {}", case.json);

        let form = format!(
            "csrf={csrf}&mac={}&{}",
            NEW_MAC.replace(':', "%3A"),
            case.form
        );
        let reply = send(&app, post_form("/machines/new", Some(&cookie), &form)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
        assert!(
            unescaped(&reply.body).contains(case.message),
            "panel {}: {}",
            case.form,
            reply.body
        );
    }
    // Nothing was stored by any of them.
    let reply = send(
        &app,
        api(
            Method::GET,
            &format!("/api/v1/machines/{NEW_MAC}"),
            Some(&operator),
            None,
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}
