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
