//! What the in-process tests share: the app (the library's router over an in-memory
//! store, seeded with images and machines), requests, logins and tokens.

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use rackboot::auth::Role;
use rackboot::http::AppState;
use rackboot::lifecycle::LifecycleConfig;
use rackboot::mac::MacAddr;
use rackboot::script::Scripts;
use rackboot::service::machines::{NewMachine, add_in};
use rackboot::service::{Caller, ServiceError};
use rackboot::store::{self, Image, Store};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tower::ServiceExt;

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub _dir: tempfile::TempDir,
}

pub const MAC: &str = "52:54:00:12:34:56";
/// The address the test machine's requests come from (its fixed address).
pub const OWN_IP: [u8; 4] = [192, 0, 2, 10];

pub fn test_lifecycle() -> LifecycleConfig {
    LifecycleConfig {
        rescue_image: Some("rescue".into()),
        wipe_image: Some("wipe".into()),
        token_ttl_secs: 3600,
        default_ssh_keys: vec!["ssh-ed25519 AAAAdefault ops".into()],
    }
}

/// An app with images `debian` (with an install template), `rescue` and `wipe`,
/// machine MAC in install mode with a fixed address, and an imageless machine.
pub async fn app() -> TestApp {
    app_with(|_| {}).await
}

/// `app`, with its state changed by `adjust` before the router is built.
pub async fn app_with(adjust: impl FnOnce(&mut AppState)) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_in_memory().expect("store");
    let kernel = dir.path().join("kernel");
    let initrd = dir.path().join("initrd");
    std::fs::write(&kernel, b"KERNEL-BYTES-0123456789").expect("write");
    std::fs::write(&initrd, b"INITRD").expect("write");
    let files = rackboot::images::files_dir(dir.path(), "debian");
    std::fs::create_dir_all(&files).expect("mkdir");
    std::fs::write(files.join("preseed.cfg"), "host {{ hostname }}\n").expect("write");
    let image = |name: &str| Image {
        arches: vec![rackboot::lifecycle::Arch::Amd64],
        name: name.into(),
        kernel_path: kernel.display().to_string(),
        kernel_sha256: String::new(),
        initrd_path: initrd.display().to_string(),
        initrd_sha256: String::new(),
        cmdline: "console=ttyS0".into(),
    };
    let images = [image("debian"), image("rescue"), image("wipe")];
    let config = test_lifecycle();
    let seed_config = config.clone();
    store
        .transaction(move |tx| {
            for image in &images {
                store::put_image(tx, image, 0)?;
            }
            add_in(
                tx,
                &NewMachine {
                    hostname: Some("node1".into()),
                    image: Some("debian".into()),
                    ip: Some(Ipv4Addr::from(OWN_IP)),
                    ssh_keys: Some("ssh-ed25519 AAAAown node1-admin".into()),
                    ..NewMachine::new(MacAddr::parse(MAC).expect("mac"))
                },
                &seed_config,
                &[],
                "test",
                rackboot::clock::now_ms(),
            )?;
            // A second machine, written without an audit event.
            rackboot::inventory::insert_row(
                tx,
                &rackboot::inventory::MachineRow {
                    loader: None,
                    mac: MacAddr([0x52, 0x54, 0, 0, 0, 2]),
                    hostname: None,
                    image: None,
                    ip: None,
                    rack: None,
                    position: None,
                    exit_method: rackboot::lifecycle::ExitMethod::Exit,
                    ssh_keys: String::new(),
                },
                0,
            )?;
            Ok::<_, ServiceError>(())
        })
        .await
        .expect("seed");
    let mut state = AppState::new(
        store,
        dir.path().to_path_buf(),
        "http://192.0.2.1:8080".into(),
        config,
    );
    state.scripts = Arc::new(Scripts::new(dir.path().join("ipxe")));
    adjust(&mut state);
    let router = router_for(&state, &dir);
    TestApp {
        router,
        state,
        _dir: dir,
    }
}

/// The library's router for `state`, its requests coming from the test machine.
pub fn router_for(state: &AppState, dir: &tempfile::TempDir) -> Router {
    rackboot::panel::app(state.clone(), dir.path().to_path_buf())
        .layer(MockConnectInfo(SocketAddr::from((OWN_IP, 40000))))
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

pub async fn send(app: &TestApp, request: Request<Body>) -> Reply {
    let response = app.router.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().uri(uri);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).expect("request")
}

pub fn post_form(uri: &str, cookie: Option<&str>, form: &str) -> Request<Body> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::from(form.to_string())).expect("request")
}

pub fn api(method: Method, uri: &str, token: Option<&str>, json: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    match json {
        Some(j) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(j.to_string())),
        None => b.body(Body::empty()),
    }
    .expect("request")
}

/// Adds a machine the way an operator does (mode from its image), by `test`.
pub fn add_machine(
    tx: &rackboot::store::Db,
    mac: rackboot::mac::MacAddr,
    image: Option<&str>,
) -> Result<(), ServiceError> {
    let new = NewMachine {
        image: image.map(str::to_string),
        ..NewMachine::new(mac)
    };
    add_in(
        tx,
        &new,
        &rackboot::lifecycle::LifecycleConfig::default(),
        &[],
        "test",
        0,
    )
}

pub async fn add_user(app: &TestApp, name: &str, role: Role) {
    app.state
        .services
        .add_user(
            &Caller::cli("test"),
            0,
            name.to_string(),
            "a-long-password".into(),
            role,
        )
        .await
        .expect("user");
}

/// The login page's form token and the cookie that carries it, as a browser gets them.
pub async fn login_form(app: &TestApp) -> (String, String) {
    let page = send(app, get("/login", None)).await;
    let cookie = page.headers[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    let token = page
        .body
        .split("name=\"login_csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("login token in the page")
        .to_string();
    (cookie, token)
}

/// Posts the login form as a browser would: from the login page, with its token.
pub async fn post_login(app: &TestApp, form: &str) -> Reply {
    let (cookie, token) = login_form(app).await;
    send(
        app,
        post_form(
            "/login",
            Some(&cookie),
            &format!("{form}&login_csrf={token}"),
        ),
    )
    .await
}

/// Logs in; returns the cookie header value and the CSRF token.
pub async fn login(app: &TestApp, name: &str) -> (String, String) {
    let reply = post_login(
        app,
        &format!("user={name}&password=a-long-password&next=%2Fmachines"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(reply.headers[header::LOCATION], "/machines");
    let set_cookie = reply.headers[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains("Secure"), "no TLS here: {set_cookie}");
    let cookie = set_cookie.split(';').next().expect("pair").to_string();
    let page = send(app, get("/", Some(&cookie))).await;
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf in page")
        .to_string();
    (cookie, csrf)
}

pub async fn token(app: &TestApp, name: &str, role: Role) -> String {
    app.state
        .services
        .create_token(&Caller::cli("test"), 0, name.to_string(), role)
        .await
        .expect("token")
}
