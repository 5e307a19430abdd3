//! The pages and the API, as before the panel was split: every route refuses without
//! authentication and works with it; forms need the session's CSRF token; viewers
//! cannot change anything; the OpenAPI document matches the routes.

use crate::fake_redfish::{FakeRedfish, GOOD_AUTH};
use crate::support::{
    add_machine, add_user, api, app, app_with, get, login, post_form, post_login, send, token,
};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use rackboot::auth::{self, Role};
use rackboot::clock;
use rackboot::service::ServiceError;
use rackboot::service::users::PasswordChecks;
use std::sync::Arc;

const PAGES: [&str; 13] = [
    "/",
    "/machines",
    "/machines?q=node&mode=install&sort=hostname",
    "/machines/new",
    "/machines/52-54-00-12-34-56",
    "/machines/52:54:00:12:34:56/wipe",
    "/images",
    "/catalog",
    "/leases",
    "/audit",
    "/import",
    "/export.csv",
    "/admin",
];

#[tokio::test]
async fn every_page_needs_a_session_and_works_with_one() {
    let app = app().await;
    for page in PAGES {
        let reply = send(&app, get(page, None)).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{page}");
        let location = reply.headers[header::LOCATION].to_str().expect("ascii");
        assert!(location.starts_with("/login?next="), "{page}: {location}");
    }
    let reply = send(&app, get("/export.xlsx", Some("rackboot_session=forged"))).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    add_user(&app, "ann", Role::Admin).await;
    let (cookie, _) = login(&app, "ann").await;
    for page in PAGES.iter().chain(&["/export.xlsx"]) {
        let reply = send(&app, get(page, Some(&cookie))).await;
        assert_eq!(reply.status, StatusCode::OK, "{page}: {}", reply.body);
        assert_eq!(reply.headers["x-content-type-options"], "nosniff");
        let csp = reply.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii");
        assert!(
            csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
    }
    let machine = send(&app, get("/machines/52-54-00-12-34-56", Some(&cookie))).await;
    assert!(
        machine.body.contains("node1") && machine.body.contains("Reinstall"),
        "{}",
        machine.body
    );
    let csv = send(&app, get("/export.csv", Some(&cookie))).await;
    assert!(csv.body.contains("52:54:00:12:34:56,node1"), "{}", csv.body);
}

#[tokio::test]
async fn forms_need_the_sessions_csrf_token() {
    let app = app().await;
    add_user(&app, "ann", Role::Operator).await;
    let (cookie, csrf) = login(&app, "ann").await;
    let uri = "/machines/52-54-00-12-34-56/mode";
    for form in [
        "mode=rescue",
        "mode=rescue&csrf=",
        "mode=rescue&csrf=0123abcd",
    ] {
        let reply = send(&app, post_form(uri, Some(&cookie), form)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{form}");
        assert!(reply.body.contains("request id"), "{}", reply.body);
        assert!(
            !reply.body.contains("<code>-</code>"),
            "request id filled in"
        );
    }
    let reply = send(
        &app,
        post_form(uri, None, &format!("mode=rescue&csrf={csrf}")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "no session: to login");
    let reply = send(
        &app,
        post_form(uri, Some(&cookie), &format!("mode=rescue&csrf={csrf}")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let page = send(&app, get("/machines/52-54-00-12-34-56", Some(&cookie))).await;
    assert!(page.body.contains("mode big mode-rescue"), "{}", page.body);
    let audit = send(&app, get("/audit", Some(&cookie))).await;
    assert!(
        audit.body.contains("install -&#62; rescue"),
        "{}",
        audit.body
    );
    assert!(audit.body.contains("user:ann"));
}

#[tokio::test]
async fn wipe_needs_confirmation_and_bad_fields_are_shown_back() {
    let app = app().await;
    add_user(&app, "ann", Role::Operator).await;
    let (cookie, csrf) = login(&app, "ann").await;
    let uri = "/machines/52-54-00-12-34-56/mode";
    let reply = send(
        &app,
        post_form(uri, Some(&cookie), &format!("mode=wipe&csrf={csrf}")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("Wipe not confirmed"), "{}", reply.body);
    let reply = send(
        &app,
        post_form(
            uri,
            Some(&cookie),
            &format!("mode=wipe&confirm=52-54-00-12-34-56&csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let settings = format!(
        "csrf={csrf}&hostname=bad_name&ip=192.0.2.300&exit_method=exit&rack=&position=&ssh_keys="
    );
    let reply = send(
        &app,
        post_form(
            "/machines/52-54-00-12-34-56/settings",
            Some(&cookie),
            &settings,
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.body.contains("bad_name") && reply.body.contains("not a valid host name"),
        "{}",
        reply.body
    );
    let reply = send(
        &app,
        post_form(
            "/machines/new",
            Some(&cookie),
            &format!("csrf={csrf}&mac=zz&hostname=&ip=&image=&rack=&position="),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.body.contains("is not a MAC address") && reply.body.contains("value=\"zz\""),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn viewers_cannot_change_anything() {
    let app = app().await;
    add_user(&app, "vic", Role::Viewer).await;
    let (cookie, csrf) = login(&app, "vic").await;
    for (uri, form) in [
        (
            "/machines/52-54-00-12-34-56/mode",
            format!("mode=local&csrf={csrf}"),
        ),
        (
            "/machines/52-54-00-12-34-56/image",
            format!("image=&csrf={csrf}"),
        ),
        ("/machines/52-54-00-12-34-56/delete", format!("csrf={csrf}")),
        ("/images/debian/delete", format!("csrf={csrf}")),
        ("/admin/tokens", format!("csrf={csrf}&name=x&role=admin")),
        (
            "/admin/users",
            format!("csrf={csrf}&user=x&password=0123456789&role=admin"),
        ),
    ] {
        let reply = send(&app, post_form(uri, Some(&cookie), &form)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{uri}");
    }
    let reply = send(&app, get("/admin", Some(&cookie))).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let page = send(&app, get("/machines/52-54-00-12-34-56", Some(&cookie))).await;
    assert!(!page.body.contains("Reinstall"), "no buttons for viewers");
}

#[tokio::test]
async fn login_is_rate_limited_and_errors_show_no_internals() {
    let app = app().await;
    add_user(&app, "ann", Role::Admin).await;
    for _ in 0..auth::LOGIN_FAILURES_ALLOWED {
        let reply = post_login(&app, "user=ann&password=wrong").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(reply.body.contains("Wrong user name or password"));
    }
    let reply = post_login(&app, "user=ann&password=a-long-password").await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    // An open redirect through `next` is refused.
    app.state
        .limiter
        .succeeded(&["ip:192.0.2.10", "user:ann@192.0.2.10"]);
    let reply = post_login(
        &app,
        "user=ann&password=a-long-password&next=//evil.example",
    )
    .await;
    assert_eq!(reply.headers[header::LOCATION], "/");
}

/// Past the password checks that may run and wait at once, a login is refused as
/// busy (503) without a check, and without counting against the limit.
#[tokio::test]
async fn a_login_beyond_the_password_check_queue_is_503() {
    let app = app_with(|state| {
        // No place at all: every login finds the checks busy.
        state.services.password_checks =
            Arc::new(PasswordChecks::new(0, 0, std::time::Duration::ZERO));
    })
    .await;
    // No user either: a missing one is checked against a decoy hash just the same.
    for _ in 0..=auth::LOGIN_FAILURES_ALLOWED {
        let reply = post_login(&app, "user=ann&password=a-long-password").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(reply.body.contains("busy"), "{}", reply.body);
        let cookies: Vec<_> = reply.headers.get_all(header::SET_COOKIE).iter().collect();
        assert!(
            cookies
                .iter()
                .all(|c| !c.to_str().unwrap_or("").starts_with("rackboot_session=")),
            "no session: {cookies:?}"
        );
    }
    assert!(app.state.limiter.allowed(&["ip:192.0.2.10", "user:ann"], 0));
}

#[tokio::test]
async fn setup_link_creates_the_first_admin_once() {
    let app = app().await;
    *app.state.setup_token.lock().expect("lock") = Some("s3cr3t".into());
    assert_eq!(
        send(&app, get("/setup/wrong", None)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&app, get("/setup/s3cr3t", None)).await.status,
        StatusCode::OK
    );
    let bad = send(
        &app,
        post_form(
            "/setup/s3cr3t",
            None,
            "user=root&password=short&password2=short",
        ),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let form = "user=root&password=a-long-password&password2=a-long-password";
    let ok = send(&app, post_form("/setup/s3cr3t", None, form)).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(
        send(&app, post_form("/setup/s3cr3t", None, form))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    login(&app, "root").await;
}

#[tokio::test]
async fn import_previews_then_commits() {
    let app = app().await;
    add_user(&app, "ann", Role::Operator).await;
    let (cookie, csrf) = login(&app, "ann").await;
    let boundary = "XyZ";
    let csv =
        "mac,hostname,image,rack\n52:54:00:aa:00:01,r1n1,debian,r1\n52:54:00:aa:00:02,r1n2,,r1\n";
    // The token is the first field, as the page's form sends it.
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"rack1.csv\"\r\nContent-Type: text/csv\r\n\r\n{csv}\r\n--{boundary}--\r\n"
    );
    let request = Request::builder()
        .method(Method::POST)
        .uri("/import")
        .header(header::COOKIE, &cookie)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .expect("request");
    let preview = send(&app, request).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert!(
        preview.body.contains("2 ready, 0 with errors"),
        "{}",
        preview.body
    );
    let staged = preview
        .body
        .split("name=\"staged\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("staged id")
        .to_string();
    let missing_csrf = send(
        &app,
        post_form("/import/commit", Some(&cookie), &format!("staged={staged}")),
    )
    .await;
    assert_eq!(missing_csrf.status, StatusCode::FORBIDDEN);
    let commit = send(
        &app,
        post_form(
            "/import/commit",
            Some(&cookie),
            &format!("staged={staged}&csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(commit.status, StatusCode::SEE_OTHER, "{}", commit.body);
    let list = send(&app, get("/machines?q=r1", Some(&cookie))).await;
    assert!(
        list.body.contains("r1n1") && list.body.contains("r1n2"),
        "{}",
        list.body
    );
}

#[tokio::test]
async fn api_needs_a_token_and_viewer_tokens_only_read() {
    let app = app().await;
    let op = token(&app, "ci", Role::Operator).await;
    let viewer = token(&app, "dash", Role::Viewer).await;
    let m = "/api/v1/machines/52-54-00-12-34-56";
    let routes: Vec<(Method, String, Option<&str>)> = vec![
        (Method::GET, "/api/v1/openapi.json".into(), None),
        (Method::GET, "/api/v1/machines?q=node".into(), None),
        (Method::GET, m.into(), None),
        (Method::PATCH, m.into(), Some(r#"{"rack":"r9"}"#)),
        (
            Method::PUT,
            format!("{m}/image"),
            Some(r#"{"image":"debian"}"#),
        ),
        (
            Method::PUT,
            format!("{m}/mode"),
            Some(r#"{"mode":"rescue"}"#),
        ),
        (Method::POST, format!("{m}/reinstall"), None),
        (Method::GET, format!("{m}/boots"), None),
        (Method::GET, "/api/v1/images".into(), None),
        (Method::GET, "/api/v1/leases".into(), None),
        (
            Method::GET,
            "/api/v1/events?mac=52:54:00:12:34:56".into(),
            None,
        ),
        (
            Method::POST,
            "/api/v1/machines".into(),
            Some(r#"{"mac":"52:54:00:bb:00:01","image":"debian"}"#),
        ),
        (
            Method::DELETE,
            "/api/v1/machines/52:54:00:bb:00:01".into(),
            None,
        ),
    ];
    for (method, uri, json) in &routes {
        let reply = send(&app, api(method.clone(), uri, None, *json)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        let reply = send(&app, api(method.clone(), uri, Some("rbt_forged"), *json)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        if *method != Method::GET {
            let reply = send(&app, api(method.clone(), uri, Some(&viewer), *json)).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {uri}");
        }
        let reply = send(&app, api(method.clone(), uri, Some(&op), *json)).await;
        assert!(
            reply.status.is_success(),
            "{method} {uri}: {} {}",
            reply.status,
            reply.body
        );
    }
    let reply = send(&app, api(Method::GET, m, Some(&viewer), None)).await;
    let body: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
    assert_eq!(body["mode"], "install", "reinstall was the last mode set");
    assert_eq!(body["rack"], "r9");
    assert!(
        body.get("token").is_none(),
        "the done-URL token never leaves through the API"
    );
    let audit = send(
        &app,
        api(Method::GET, "/api/v1/events?audit=true", Some(&op), None),
    )
    .await;
    assert!(audit.body.contains("token:ci"), "{}", audit.body);
    let bad = send(
        &app,
        api(
            Method::PUT,
            &format!("{m}/mode"),
            Some(&op),
            Some(r#"{"mode":"reboot"}"#),
        ),
    )
    .await;
    assert!(bad.status.is_client_error());
}

/// The OpenAPI document and the routes agree, both ways.
#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let app = app().await;
    let op = token(&app, "ci", Role::Operator).await;
    // The power routes talk to a BMC: a fake Redfish one on loopback.
    let bmc = FakeRedfish::start().await;
    let controller = redfish_controller(&bmc.url, "calvin");
    let doc: serde_json::Value = serde_json::from_str(rackboot::api::OPENAPI).expect("valid JSON");
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            documented.push(format!("{} {path}", method.to_uppercase()));
            let uri = format!(
                "/api/v1{}",
                path.replace("{mac}", "52-54-00-12-34-56")
                    .replace("{action}", "status")
                    .replace("{id}", "1")
            );
            let json = match (method, path.as_str()) {
                ("post", "/machines") => Some(r#"{"mac":"52:54:00:cc:00:01"}"#),
                ("put", "/machines/{mac}/power") => Some(controller.as_str()),
                ("post", "/machines/{mac}/reprovision") => Some(r#"{"mode":"rescue"}"#),
                ("post", "/reprovision") => {
                    Some(r#"{"mode":"rescue","macs":["52:54:00:12:34:56"]}"#)
                }
                ("put", "/machines/{mac}/image") => Some(r#"{"image":"debian"}"#),
                ("put", "/machines/{mac}/mode") => Some(r#"{"mode":"install"}"#),
                // Fails in the background at once (nothing listens there); the job is
                // what /images/fetches/{id} then shows.
                ("post", "/images/fetch") => {
                    Some(r#"{"definition":"memtest86plus","mirror":"http://127.0.0.1:9"}"#)
                }
                ("patch", _) => Some(r#"{"rack":"r1"}"#),
                _ => None,
            };
            let m: Method = method.to_uppercase().parse().expect("method");
            if m == Method::DELETE {
                continue; // checked last, so the machine stays for the others
            }
            let reply = send(&app, api(m, &uri, Some(&op), json)).await;
            assert!(
                reply.status.is_success(),
                "{method} {path}: {} {}",
                reply.status,
                reply.body
            );
        }
    }
    let reply = send(
        &app,
        api(
            Method::DELETE,
            "/api/v1/machines/52-54-00-12-34-56",
            Some(&op),
            None,
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    documented.sort();
    let mut routed: Vec<String> = [
        "GET /openapi.json",
        "GET /machines",
        "POST /machines",
        "GET /machines/{mac}",
        "PATCH /machines/{mac}",
        "DELETE /machines/{mac}",
        "PUT /machines/{mac}/image",
        "PUT /machines/{mac}/mode",
        "POST /machines/{mac}/reinstall",
        "POST /machines/{mac}/reprovision",
        "POST /reprovision",
        "GET /machines/{mac}/power",
        "PUT /machines/{mac}/power",
        "DELETE /machines/{mac}/power",
        "POST /machines/{mac}/power/{action}",
        "GET /machines/{mac}/boots",
        "GET /images",
        "GET /catalog",
        "POST /images/fetch",
        "GET /images/fetches/{id}",
        "GET /leases",
        "GET /events",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    routed.sort();
    assert_eq!(
        documented, routed,
        "every route documented and every documented route served"
    );
}

#[tokio::test]
async fn tokens_and_users_are_managed_by_admins() {
    let app = app().await;
    add_user(&app, "ann", Role::Admin).await;
    let (cookie, csrf) = login(&app, "ann").await;
    let reply = send(
        &app,
        post_form(
            "/admin/tokens",
            Some(&cookie),
            &format!("csrf={csrf}&name=deploy&role=operator"),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let secret = reply
        .body
        .split("<code class=\"secret\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .expect("secret shown once")
        .to_string();
    let ok = send(
        &app,
        api(Method::GET, "/api/v1/images", Some(&secret), None),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let revoke = send(
        &app,
        post_form(
            "/admin/tokens/deploy/revoke",
            Some(&cookie),
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(revoke.status, StatusCode::SEE_OTHER);
    let refused = send(
        &app,
        api(Method::GET, "/api/v1/images", Some(&secret), None),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let add = send(
        &app,
        post_form(
            "/admin/users",
            Some(&cookie),
            &format!("csrf={csrf}&user=bob&password=0123456789ab&role=viewer"),
        ),
    )
    .await;
    assert_eq!(add.status, StatusCode::SEE_OTHER, "{}", add.body);
    let _ = clock::now_ms();
}

fn redfish_controller(url: &str, password: &str) -> String {
    format!(r#"{{"kind":"redfish","url":"{url}","user":"root","password":"{password}"}}"#)
}

/// The panel's Reinstall with a power controller is one action: mode, network boot,
/// power on (the fake BMC is off); each step is an event by the user. The password
/// never comes back: not in the page, the API, the export or the events.
#[tokio::test]
async fn panel_reinstall_power_cycles_through_the_bmc_and_secrets_stay_hidden() {
    let app = app().await;
    add_user(&app, "ann", Role::Operator).await;
    let (cookie, csrf) = login(&app, "ann").await;
    let bmc = FakeRedfish::start().await;
    let page = "/machines/52-54-00-12-34-56";
    let set = send(
        &app,
        post_form(
            &format!("{page}/power/controller"),
            Some(&cookie),
            &format!(
                "csrf={csrf}&kind=redfish&url={}&user=root&password=calvin&system_id=1&verify_tls=on",
                bmc.url.replace(':', "%3A").replace('/', "%2F")
            ),
        ),
    )
    .await;
    assert_eq!(set.status, StatusCode::SEE_OTHER, "{}", set.body);
    let reply = send(
        &app,
        post_form(
            &format!("{page}/mode"),
            Some(&cookie),
            &format!("mode=install&csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let location = reply.headers[header::LOCATION].to_str().expect("ascii");
    assert!(location.contains("Reinstall%20started"), "{location}");
    let seen: Vec<(String, String)> = bmc
        .seen()
        .into_iter()
        .map(|s| {
            assert_eq!(s.authorization.as_deref(), Some(GOOD_AUTH));
            (s.method, s.path)
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("PATCH".into(), "/redfish/v1/Systems/1".into()),
            ("GET".into(), "/redfish/v1/Systems/1".into()),
            (
                "POST".into(),
                "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset".into()
            ),
        ]
    );
    assert!(*bmc.bmc.power_on.lock().expect("lock"), "powered on");
    let shown = send(&app, get(page, Some(&cookie))).await;
    assert!(shown.body.contains("power power-on"), "{}", shown.body);
    assert!(!shown.body.contains("calvin"), "password in the page");
    let audit = send(&app, get("/audit", Some(&cookie))).await;
    for kind in ["mode.set", "power.pxe", "power.status", "power.on"] {
        assert!(audit.body.contains(kind), "{kind}: {}", audit.body);
    }
    assert!(!audit.body.contains("calvin"));
    let list = send(&app, get("/machines", Some(&cookie))).await;
    assert!(list.body.contains("power power-on"), "{}", list.body);
    let csv = send(&app, get("/export.csv", Some(&cookie))).await;
    assert!(!csv.body.contains("calvin"));
    let op = token(&app, "ci", Role::Operator).await;
    let api_view = send(
        &app,
        api(
            Method::GET,
            "/api/v1/machines/52-54-00-12-34-56/power",
            Some(&op),
            None,
        ),
    )
    .await;
    assert!(
        api_view.body.contains(r#""password":"set""#),
        "{}",
        api_view.body
    );
    assert!(!api_view.body.contains("calvin"));

    // A wrong password: the mode change is kept and the failed step shown, 502.
    let wrong = send(
        &app,
        api(
            Method::PUT,
            "/api/v1/machines/52-54-00-12-34-56/power",
            Some(&op),
            Some(&redfish_controller(&bmc.url, "wrong")),
        ),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::OK, "{}", wrong.body);
    let failed = send(
        &app,
        post_form(
            &format!("{page}/mode"),
            Some(&cookie),
            &format!("mode=rescue&csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY, "{}", failed.body);
    assert!(
        failed
            .body
            .contains("mode rescue is set, but power pxe failed")
            && failed.body.contains("refused the credentials"),
        "{}",
        failed.body
    );
    assert!(failed.body.contains("mode big mode-rescue"), "mode kept");
    let api_failed = send(
        &app,
        api(
            Method::POST,
            "/api/v1/machines/52-54-00-12-34-56/reinstall",
            Some(&op),
            None,
        ),
    )
    .await;
    assert_eq!(
        api_failed.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        api_failed.body
    );
    let body: serde_json::Value = serde_json::from_str(&api_failed.body).expect("json");
    assert_eq!(body["mode"], "install");
    assert_eq!(body["steps"][1]["result"], "failed");
    assert!(!api_failed.body.contains("wrong"), "{}", api_failed.body);
}

/// Machines ticked on the list, Reinstall chosen: a confirmation page that lists
/// them and names what cannot be done, then one result per machine. The machines
/// with a BMC are reinstalled through it, the one without a controller is set to
/// install for its next boot, a refused password and a missing image each fail with
/// their reason, and nothing is done before the confirmation.
#[tokio::test]
async fn a_selection_of_machines_is_reinstalled_from_the_list() {
    use rackboot::mac::MacAddr;
    let app = app().await;
    add_user(&app, "ann", Role::Operator).await;
    add_user(&app, "vic", Role::Viewer).await;
    let (cookie, csrf) = login(&app, "ann").await;
    let bmc = FakeRedfish::start().await;
    let mac = |last: u8| MacAddr([0x52, 0x54, 0, 0x12, 0x34, last]);
    // 0x56 (seeded, image debian): good BMC. 0x57: good BMC. 0x58: no controller.
    // 0x59: no image. 0x5a: wrong BMC password.
    let url = bmc.url.clone();
    app.state
        .store
        .transaction(move |conn| {
            for (last, image) in [(0x57, true), (0x58, true), (0x59, false), (0x5a, true)] {
                add_machine(conn, mac(last), image.then_some("debian"))?;
            }
            for (last, password) in [
                (0x56, "calvin"),
                (0x57, "calvin"),
                (0x59, "calvin"),
                (0x5a, "wrong"),
            ] {
                let spec = rackboot::power::ControllerSpec::Redfish {
                    url: url.clone(),
                    user: "root".into(),
                    password: Some(password.into()),
                    system_id: None,
                    verify_tls: None,
                };
                let controller = spec
                    .resolve(None)
                    .map_err(|why| ServiceError::invalid("controller", why))?;
                rackboot::store::power::write_controller(conn, mac(last), &controller, 0)?;
            }
            rackboot::service::machines::set_mode_in(
                conn,
                mac(0x56),
                rackboot::lifecycle::Mode::Local,
                &rackboot::lifecycle::LifecycleConfig::default(),
                "test",
                0,
            )?;
            Ok::<_, ServiceError>(())
        })
        .await
        .expect("seed");
    let selected: String = [0x56, 0x57, 0x58, 0x59, 0x5a]
        .iter()
        .map(|last| format!("&mac={}", mac(*last).to_string().replace(':', "%3A")))
        .collect();

    // The list offers the selection to operators, ticked when "select all" is used.
    let list = send(&app, get("/machines?select=all", Some(&cookie))).await;
    assert!(
        list.body.contains(r#"action="/machines/selection""#),
        "{}",
        list.body
    );
    assert!(
        list.body.contains(
            r#"name="mac" value="52:54:00:12:34:57" aria-label="Select 52:54:00:12:34:57" checked"#
        ),
        "{}",
        list.body
    );

    let confirm = send(
        &app,
        post_form(
            "/machines/selection",
            Some(&cookie),
            &format!("csrf={csrf}&action=reinstall{selected}"),
        ),
    )
    .await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    assert!(
        confirm.body.contains("Reinstall 5 machines?"),
        "{}",
        confirm.body
    );
    assert!(
        confirm.body.contains("no image assigned"),
        "{}",
        confirm.body
    );
    assert!(
        confirm.body.contains("acts on its next network boot"),
        "{}",
        confirm.body
    );
    assert!(
        confirm.body.contains("1 of them cannot be done"),
        "{}",
        confirm.body
    );
    assert!(
        bmc.seen().is_empty(),
        "nothing happens before the confirmation"
    );

    // A viewer cannot, and a form without the session's token is refused.
    let (viewer, viewer_csrf) = login(&app, "vic").await;
    let refused = send(
        &app,
        post_form(
            "/machines/selection/run",
            Some(&viewer),
            &format!("csrf={viewer_csrf}&action=reinstall{selected}"),
        ),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let forged = send(
        &app,
        post_form(
            "/machines/selection/run",
            Some(&cookie),
            &format!("csrf=nope&action=reinstall{selected}"),
        ),
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(bmc.seen().is_empty());

    let done = send(
        &app,
        post_form(
            "/machines/selection/run",
            Some(&cookie),
            &format!("csrf={csrf}&action=reinstall{selected}"),
        ),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(
        done.body.contains("Reinstall: 3 of 5 machines done"),
        "{}",
        done.body
    );
    let row = |last: u8| {
        let mac = mac(last).to_string();
        let start = done
            .body
            .find(&format!(r#"<a href="/machines/{mac}">{mac}</a></td>"#))
            .unwrap_or_else(|| panic!("no row for {mac}: {}", done.body));
        done.body[start..]
            .split("</tr>")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    for last in [0x56, 0x57] {
        assert!(
            row(last).contains("<td>ok</td>") && row(last).contains("powered on"),
            "{}",
            row(last)
        );
    }
    assert!(
        row(0x58).contains("<td>ok</td>") && row(0x58).contains("next network boot"),
        "{}",
        row(0x58)
    );
    assert!(row(0x59).contains("<td>failed</td>"), "{}", row(0x59));
    assert!(
        row(0x5a).contains("<td>failed</td>") && row(0x5a).contains("credentials"),
        "{}",
        row(0x5a)
    );
    assert!(!done.body.contains("calvin") && !done.body.contains("wrong"));
    // Modes: set wherever the machine could take it, the failed BMC's included.
    let modes = app
        .state
        .store
        .call(move |conn| {
            [0x56, 0x57, 0x58, 0x59, 0x5a]
                .into_iter()
                .map(|last| {
                    Ok(rackboot::inventory::machine(conn, mac(last))?.map(|m| m.mode.as_str()))
                })
                .collect::<Result<Vec<_>, rackboot::store::StoreError>>()
        })
        .await
        .expect("modes");
    assert_eq!(
        modes,
        [
            Some("install"),
            Some("install"),
            Some("install"),
            Some("local"),
            Some("install")
        ]
    );
    let audit = send(&app, get("/audit", Some(&cookie))).await;
    assert!(audit.body.contains("user:ann"), "{}", audit.body);

    // Nothing ticked: back to the list with a hint, nothing done.
    let empty = send(
        &app,
        post_form(
            "/machines/selection",
            Some(&cookie),
            &format!("csrf={csrf}&action=off"),
        ),
    )
    .await;
    assert_eq!(empty.status, StatusCode::SEE_OTHER);
    assert!(
        empty.headers[header::LOCATION]
            .to_str()
            .expect("ascii")
            .contains("Select%20machines%20first")
    );
}

/// A full pool is said on the dashboard and the leases page, which lists every pool
/// with its use; a pool with room left raises nothing.
#[tokio::test]
async fn a_full_pool_is_reported_in_the_panel() {
    use rackboot::store::{DhcpBatch, LeaseOp, LeaseRecord, LeaseState, commit_dhcp_batch};
    use std::net::Ipv4Addr;
    let mut app = app().await;
    let ip = |n: u8| Ipv4Addr::new(192, 0, 2, n);
    let mut state = app.state.clone();
    state.subnets = std::sync::Arc::new(vec![rackboot::config::Subnet {
        network: ip(0),
        prefix_len: 24,
        pool_start: ip(100),
        pool_end: ip(101),
        known_pool: Some((ip(50), ip(59))),
        router: None,
        dns: vec![],
        domain: None,
        lease_secs: 3600,
        renew_secs: 1800,
        rebind_secs: 3150,
    }]);
    app.router = rackboot::panel::app(state, app._dir.path().to_path_buf()).layer(
        axum::extract::connect_info::MockConnectInfo(std::net::SocketAddr::from((
            [192, 0, 2, 10],
            40000,
        ))),
    );
    add_user(&app, "ann", Role::Viewer).await;
    let (cookie, _) = login(&app, "ann").await;
    let dashboard = send(&app, get("/", Some(&cookie))).await;
    assert!(
        !dashboard.body.contains("DHCP pool full"),
        "{}",
        dashboard.body
    );

    let far = clock::now_ms() / 1000 + 3600;
    app.state
        .store
        .call(move |conn| {
            let batch = DhcpBatch {
                leases: [(100u8, 0xa1u8), (101, 0xa2)]
                    .into_iter()
                    .map(|(n, m)| {
                        LeaseOp::Put(LeaseRecord {
                            ip: ip(n),
                            mac: rackboot::mac::MacAddr([2, 0, 0, 0, 0, m]),
                            expires_at: far,
                            state: LeaseState::Bound,
                            hostname: None,
                            client_id: None,
                        })
                    })
                    .collect(),
                ..DhcpBatch::default()
            };
            commit_dhcp_batch(conn, &batch, 0)?;
            Ok(())
        })
        .await
        .expect("leases");
    let dashboard = send(&app, get("/", Some(&cookie))).await;
    assert!(
        dashboard
            .body
            .contains("DHCP pool full: 192.0.2.100-192.0.2.101."),
        "{}",
        dashboard.body
    );
    let leases = send(&app, get("/leases", Some(&cookie))).await;
    assert!(
        leases
            .body
            .contains("Full: 192.0.2.100-192.0.2.101. New clients get no address there"),
        "{}",
        leases.body
    );
    assert!(
        leases.body.contains(
            r#"<td class="mono">192.0.2.50-192.0.2.59 (inventory machines)</td><td>10</td><td>0</td><td>0</td><td>0</td><td>10</td>"#
        ),
        "{}",
        leases.body
    );
}

/// The API reinstalls many machines in one call: a result per machine, the failures
/// named, 200 whatever each outcome; bulk wipe and an empty selection are refused.
#[tokio::test]
async fn the_api_reinstalls_many_machines_in_one_call() {
    let app = app().await;
    let op = token(&app, "ci", Role::Operator).await;
    let viewer = token(&app, "look", Role::Viewer).await;
    app.state
        .store
        .transaction(|conn| {
            add_machine(
                conn,
                rackboot::mac::MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x60]),
                None,
            )
        })
        .await
        .expect("machine without an image");
    let body = r#"{"mode":"install","macs":["52:54:00:12:34:56","52-54-00-12-34-60"]}"#;
    let reply = send(
        &app,
        api(Method::POST, "/api/v1/reprovision", Some(&op), Some(body)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let v: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
    assert_eq!(v["results"][0]["ok"], true, "{v}");
    assert_eq!(v["results"][0]["mode"], "install", "{v}");
    assert_eq!(v["results"][1]["ok"], false, "{v}");
    assert!(
        v["results"][1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("image")),
        "{v}"
    );
    assert_eq!(v["failed"], serde_json::json!(["52:54:00:12:34:60"]));
    for (token, body, status) in [
        (
            &op,
            r#"{"mode":"wipe","macs":["52:54:00:12:34:56"]}"#,
            StatusCode::BAD_REQUEST,
        ),
        (&op, r#"{"mode":"install"}"#, StatusCode::CONFLICT),
        (
            &op,
            r#"{"mode":"install","rack":"nowhere"}"#,
            StatusCode::NOT_FOUND,
        ),
        (&viewer, body, StatusCode::FORBIDDEN),
    ] {
        let reply = send(
            &app,
            api(Method::POST, "/api/v1/reprovision", Some(token), Some(body)),
        )
        .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
    }
}

#[tokio::test]
async fn the_catalog_says_what_is_untested_and_only_admins_give_keys() {
    let app = app().await;
    add_user(&app, "vic", Role::Viewer).await;
    add_user(&app, "olga", Role::Operator).await;
    add_user(&app, "ann", Role::Admin).await;
    let (viewer, _) = login(&app, "vic").await;
    let page = send(&app, get("/catalog", Some(&viewer))).await;
    assert_eq!(page.status, StatusCode::OK);
    for name in [
        "debian-12",
        "ubuntu-24.04",
        "rocky-9",
        "alma-9",
        "fedora",
        "flatcar",
        "memtest86plus",
    ] {
        assert!(page.body.contains(name), "{name} listed");
    }
    assert!(page.body.contains("badge warn"), "untested ones are marked");
    assert!(
        !page.body.contains("/fetch\""),
        "a viewer gets no Fetch form"
    );

    let (operator, csrf) = login(&app, "olga").await;
    let page = send(&app, get("/catalog", Some(&operator))).await;
    assert!(page.body.contains("action=\"/catalog/debian-12/fetch\""));
    assert!(
        !page.body.contains("name=\"keyring\""),
        "operators give no keys"
    );
    assert!(
        page.body.contains("name=\"param.release\" value=\"41\""),
        "Fedora's release"
    );
    // An operator's keyring is refused, and what was typed is shown back.
    let refused = send(
        &app,
        post_form(
            "/catalog/rocky-9/fetch",
            Some(&operator),
            &format!("csrf={csrf}&mirror=http%3A%2F%2Fmirror.example%2Frocky&keyring=KEY"),
        ),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(refused.body.contains("only an admin"), "{}", refused.body);
    assert!(
        refused
            .body
            .contains("value=\"http://mirror.example/rocky\""),
        "{}",
        refused.body
    );
    // Without one, the fetch starts and its page follows it to its end.
    let started = send(
        &app,
        post_form(
            "/catalog/memtest86plus/fetch",
            Some(&operator),
            &format!("csrf={csrf}&mirror=http%3A%2F%2F127.0.0.1%3A9"),
        ),
    )
    .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER);
    let job = started.headers[header::LOCATION]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(job.starts_with("/catalog/fetches/"), "{job}");
    let mut body = String::new();
    for _ in 0..100 {
        body = send(&app, get(&job, Some(&viewer))).await.body;
        if !body.contains("http-equiv=\"refresh\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(body.contains("Nothing was registered"), "{body}");
    assert!(
        body.contains("127.0.0.1:9"),
        "the failing URL is named: {body}"
    );

    let (admin, _) = login(&app, "ann").await;
    let page = send(&app, get("/catalog", Some(&admin))).await;
    assert!(
        page.body.contains("name=\"keyring\""),
        "admins may give keys"
    );
}

/// Login CSRF: a login form posted from another site carries no login cookie (it is
/// SameSite=Strict), a stale or forged one no matching token: refused before any
/// password is checked, and no session is made.
#[tokio::test]
async fn a_login_posted_without_the_pages_token_is_refused() {
    use crate::support::login_form;
    let app = app().await;
    add_user(&app, "ann", Role::Admin).await;
    let right = "user=ann&password=a-long-password";
    let (cookie, token) = login_form(&app).await;
    let (_, other_token) = login_form(&app).await;
    for (cookie, form) in [
        (None, right.to_string()),
        (None, format!("{right}&login_csrf={token}")),
        (Some(cookie.as_str()), right.to_string()),
        (
            Some(cookie.as_str()),
            format!("{right}&login_csrf={other_token}"),
        ),
        (Some("rackboot_login="), format!("{right}&login_csrf=")),
    ] {
        let reply = send(&app, post_form("/login", cookie, &form)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{cookie:?} {form}");
        assert!(reply.body.contains("expired or was sent from another site"));
        assert!(
            reply.body.contains("value=\"ann\""),
            "the typed name is kept"
        );
        let session = reply
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .any(|c| c.to_str().unwrap_or("").starts_with("rackboot_session="));
        assert!(!session, "no session for a forged login");
    }
    // The page's own token, with its cookie, logs in.
    let reply = send(
        &app,
        post_form(
            "/login",
            Some(&cookie),
            &format!("{right}&login_csrf={token}"),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
}

/// The machine page and the API's machine view show the diagnoses of the current
/// boot only, escaped on the page.
#[tokio::test]
async fn the_machine_page_and_api_show_the_current_boots_diagnosis() {
    let app = app().await;
    let mac = rackboot::mac::MacAddr::parse(crate::support::MAC).expect("mac");
    app.state
        .store
        .call(move |db| {
            let machine = Some("machine");
            let offer = "discover firmware=uefi-x64 ipxe=false ip=192.0.2.10 file=snponly.efi";
            let ack = "request firmware=uefi-x64 ipxe=false ip=192.0.2.10 file=snponly.efi";
            for (at, kind, detail, actor) in [
                (1_000, "dhcp.offer", offer, machine),
                (2_000, "dhcp.ack", ack, machine),
                (40_000, "boot.diagnosis", "an old boot's finding", None),
                (100_000, "dhcp.offer", offer, machine),
                (103_000, "dhcp.ack", ack, machine),
                (
                    104_000,
                    "boot.diagnosis",
                    "another DHCP server answered on this link (<b>192.0.2.254</b>)",
                    None,
                ),
            ] {
                rackboot::store::insert_event_by(db, at, Some(mac), kind, detail.into(), actor)?;
            }
            Ok(())
        })
        .await
        .expect("events");
    add_user(&app, "ann", Role::Viewer).await;
    let (cookie, _) = login(&app, "ann").await;
    let page = send(&app, get("/machines/52-54-00-12-34-56", Some(&cookie))).await;
    assert_eq!(page.status, StatusCode::OK);
    let shown = page
        .body
        .split("class=\"error diagnosis\"")
        .skip(1)
        .map(|p| p.split("</p>").next().unwrap_or(""))
        .collect::<Vec<_>>();
    assert_eq!(shown.len(), 1, "{}", page.body);
    assert!(
        shown[0].contains("another DHCP server answered on this link (&#60;b&#62;192.0.2.254")
            && !shown[0].contains("<b>"),
        "{}",
        shown[0]
    );

    let viewer = token(&app, "dash", Role::Viewer).await;
    let reply = send(
        &app,
        api(
            Method::GET,
            "/api/v1/machines/52-54-00-12-34-56",
            Some(&viewer),
            None,
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let json: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
    assert_eq!(json["mac"], "52:54:00:12:34:56");
    let diagnoses = json["diagnoses"].as_array().expect("diagnoses");
    assert_eq!(diagnoses.len(), 1, "{json}");
    assert_eq!(diagnoses[0]["at_ms"], 104_000);
    assert!(
        diagnoses[0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("another DHCP server answered"))
    );
}

#[tokio::test]
async fn the_settings_form_sets_the_machines_loader_and_shows_it() {
    let app = app().await;
    add_user(&app, "ann", Role::Operator).await;
    let (cookie, csrf) = login(&app, "ann").await;
    let settings = |loader: &str| {
        format!(
            "csrf={csrf}&hostname=node1&ip=&exit_method=exit&loader={loader}&rack=&position=&ssh_keys="
        )
    };
    let uri = "/machines/52-54-00-12-34-56/settings";
    let reply = send(&app, post_form(uri, Some(&cookie), &settings("grub"))).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let page = send(&app, get("/machines/52-54-00-12-34-56", Some(&cookie))).await;
    assert!(
        page.body.contains(r#"<option value="grub" selected>"#),
        "{}",
        page.body
    );
    let reply = send(&app, post_form(uri, Some(&cookie), &settings("pxelinux"))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.body.contains("unknown loader") && reply.body.contains("pxelinux"),
        "{}",
        reply.body
    );
    let reply = send(&app, post_form(uri, Some(&cookie), &settings("default"))).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let page = send(&app, get("/machines/52-54-00-12-34-56", Some(&cookie))).await;
    assert!(
        page.body.contains(r#"<option value="default" selected>"#),
        "{}",
        page.body
    );
}
