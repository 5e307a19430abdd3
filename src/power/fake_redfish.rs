//! A small Redfish BMC for tests, in the DMTF mockup's shape: `/redfish/v1/Systems/{id}`
//! with `PowerState` and `Boot`, and `Actions/ComputerSystem.Reset`. It records every
//! request (method, path, JSON body, Authorization header) and the most requests it
//! served at once, for tests to check; plain HTTP or HTTPS, on loopback only.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: Option<Value>,
    pub authorization: Option<String>,
}

#[derive(Default)]
pub struct Bmc {
    pub seen: Mutex<Vec<Seen>>,
    pub power_on: Mutex<bool>,
    pub boot_target: Mutex<String>,
    /// Each answer waits this long (a slow BMC).
    pub delay: Mutex<Duration>,
    in_flight: AtomicUsize,
    pub most_in_flight: AtomicUsize,
}

pub struct FakeRedfish {
    pub url: String,
    pub bmc: Arc<Bmc>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRedfish {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `Authorization` for user `root`, password `calvin` (the mockups' example).
pub const GOOD_AUTH: &str = "Basic cm9vdDpjYWx2aW4=";

impl FakeRedfish {
    fn app() -> (Arc<Bmc>, Router) {
        let bmc = Arc::new(Bmc::default());
        *bmc.boot_target.lock().expect("lock") = "None".into();
        let app = Router::new()
            .route("/redfish/v1/Systems", get(systems))
            .route("/redfish/v1/Systems/{id}", get(system).patch(system))
            .route(
                "/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset",
                post(reset),
            )
            .with_state(bmc.clone());
        (bmc, app)
    }

    pub async fn start() -> Self {
        let (bmc, app) = Self::app();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeRedfish { url, bmc, task }
    }

    /// The same BMC over HTTPS, with `testdata/bmc.pem` (for 127.0.0.1, signed by
    /// `testdata/ca.pem`).
    pub async fn start_tls() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (bmc, app) = Self::app();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
            include_bytes!("testdata/bmc.pem").to_vec(),
            include_bytes!("testdata/bmc.key").to_vec(),
        )
        .await
        .expect("test certificate");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("https://{}", listener.local_addr().expect("addr"));
        let server = axum_server::from_tcp_rustls(listener, tls).expect("TLS server");
        let task = tokio::spawn(async move {
            let _ = server.serve(app.into_make_service()).await;
        });
        FakeRedfish { url, bmc, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.bmc.seen.lock().expect("lock").clone()
    }
}

async fn note(bmc: &Bmc, method: &Method, path: String, headers: &HeaderMap, body: &Bytes) -> bool {
    let delay = *bmc.delay.lock().expect("lock");
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ok = authorization.as_deref() == Some(GOOD_AUTH);
    bmc.seen.lock().expect("lock").push(Seen {
        method: method.to_string(),
        path,
        body: serde_json::from_slice(body).ok(),
        authorization,
    });
    let now = bmc.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    bmc.most_in_flight.fetch_max(now, Ordering::SeqCst);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    bmc.in_flight.fetch_sub(1, Ordering::SeqCst);
    ok
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(
            json!({"error": {"code": "Base.1.0.GeneralError", "message": "bad credentials"}}),
        ),
    )
        .into_response()
}

async fn systems(
    State(bmc): State<Arc<Bmc>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !note(&bmc, &method, "/redfish/v1/Systems".into(), &headers, &body).await {
        return unauthorized();
    }
    axum::Json(json!({
        "@odata.id": "/redfish/v1/Systems",
        "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
        "Members@odata.count": 1,
        "Members": [{"@odata.id": "/redfish/v1/Systems/1"}]
    }))
    .into_response()
}

async fn system(
    State(bmc): State<Arc<Bmc>>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/redfish/v1/Systems/{id}");
    if !note(&bmc, &method, path.clone(), &headers, &body).await {
        return unauthorized();
    }
    if id != "1" {
        return StatusCode::NOT_FOUND.into_response();
    }
    if method == Method::PATCH {
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match value["Boot"]["BootSourceOverrideTarget"].as_str() {
            Some(target) => *bmc.boot_target.lock().expect("lock") = target.to_string(),
            None => return StatusCode::BAD_REQUEST.into_response(),
        }
        return StatusCode::NO_CONTENT.into_response();
    }
    let on = *bmc.power_on.lock().expect("lock");
    axum::Json(json!({
        "@odata.id": path,
        "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem",
        "Id": id,
        "PowerState": if on { "On" } else { "Off" },
        "Boot": {
            "BootSourceOverrideTarget": *bmc.boot_target.lock().expect("lock"),
            "BootSourceOverrideEnabled": "Once"
        },
        "Actions": {"#ComputerSystem.Reset": {
            "target": format!("/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset"),
            "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "ForceRestart"]
        }}
    }))
    .into_response()
}

async fn reset(
    State(bmc): State<Arc<Bmc>>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset");
    if !note(&bmc, &method, path, &headers, &body).await {
        return unauthorized();
    }
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut on = bmc.power_on.lock().expect("lock");
    match value["ResetType"].as_str() {
        Some("On") | Some("ForceRestart") => *on = true,
        Some("ForceOff") => *on = false,
        _ => return StatusCode::BAD_REQUEST.into_response(),
    }
    StatusCode::NO_CONTENT.into_response()
}
