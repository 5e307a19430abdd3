//! The JSON API under `/api/v1`, authenticated by bearer tokens (`rackboot token
//! create NAME`). Viewer tokens read; operator and admin tokens change. The OpenAPI
//! document (`openapi.json`) is served at `/api/v1/openapi.json`, and a test checks
//! it against these routes.

use crate::auth::Principal;
use crate::clock;
use crate::http::AppState;
use crate::inventory::{self, MachinePatch, MachineQuery, SortBy};
use crate::lifecycle::{ExitMethod, Mode};
use crate::mac::MacAddr;
use crate::service::machines::NewMachine;
use crate::service::power::check_reprovision_mode;
use crate::service::{Caller, Need, ServiceError};
use crate::store::{self, StoreError};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::Ipv4Addr;

pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/machines", get(list_machines).post(create_machine))
        .route(
            "/api/v1/machines/{mac}",
            get(get_machine)
                .patch(update_machine)
                .delete(delete_machine),
        )
        .route("/api/v1/machines/{mac}/image", put(set_image))
        .route("/api/v1/machines/{mac}/mode", put(set_mode))
        .route("/api/v1/machines/{mac}/reinstall", post(reinstall))
        .route("/api/v1/machines/{mac}/reprovision", post(reprovision))
        .route("/api/v1/reprovision", post(reprovision_many))
        .route(
            "/api/v1/machines/{mac}/power",
            get(get_power).put(put_power).delete(delete_power),
        )
        .route("/api/v1/machines/{mac}/power/{action}", post(power_action))
        .route("/api/v1/machines/{mac}/boots", get(machine_boots))
        .route("/api/v1/images", get(list_images))
        .route("/api/v1/catalog", get(list_catalog))
        .route("/api/v1/images/fetch", post(fetch_image))
        .route("/api/v1/images/fetches/{id}", get(fetch_status))
        .route("/api/v1/leases", get(list_leases))
        .route("/api/v1/events", get(list_events))
        .layer((
            tower_http::limit::RequestBodyLimitLayer::new(BODY_LIMIT),
            axum::extract::DefaultBodyLimit::max(BODY_LIMIT),
        ))
        .layer(axum::middleware::from_fn(error_bodies))
}

/// The most a request's JSON may be: a reprovision of a thousand MACs fits.
pub const BODY_LIMIT: usize = 64 << 10;

/// An API error: the status and the message for the caller. Its body,
/// `{"error":{"code","message","request_id"}}`, is written by `error_bodies`, which
/// knows the request id.
#[derive(Clone, Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            StoreError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
            other => {
                tracing::error!("api: {other}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let status = crate::http::status_for(e.kind());
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("api: {e}");
            return ApiError::new(status, "internal error; see the server log");
        }
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// Writes the JSON of an `ApiError` a route or extractor returned, with the request
/// id (headers such as `WWW-Authenticate` stay). A 413 without one is the body
/// limit's: it gets the same shape.
async fn error_bodies(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    // Set by the request-id layer around the panel and the API (`panel::router`).
    let request_id = request
        .extensions()
        .get::<tower_http::request_id::RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .map(str::to_string);
    let mut response = next.run(request).await;
    let error = match response.extensions_mut().remove::<ApiError>() {
        Some(error) => error,
        None if response.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {BODY_LIMIT} bytes"),
        ),
        None => return response,
    };
    tracing::info!(
        status = error.status.as_u16(),
        message = error.message,
        "api error"
    );
    let (mut parts, _) = response.into_parts();
    parts.status = error.status;
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = json!({ "error": {
        "code": error.status.as_u16(),
        "message": error.message,
        "request_id": request_id,
    } });
    (parts, Json(body)).into_response()
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The caller of an API route, from `Authorization: Bearer <token>`.
pub struct ApiUser(pub Principal);

impl FromRequestParts<AppState> for ApiUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = |message: &str| {
            (
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"rackboot\"")],
                ApiError::new(StatusCode::UNAUTHORIZED, message),
            )
                .into_response()
        };
        let Some(secret) = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|s| s.trim().to_string())
        else {
            return Err(unauthorized(
                "a bearer token is required (rackboot token create NAME)",
            ));
        };
        match app.services.token_principal(clock::now_ms(), secret).await {
            Ok(Some(principal)) => Ok(ApiUser(principal)),
            Ok(None) => Err(unauthorized("the token is unknown or revoked")),
            Err(e) => Err(ApiError::from(e).into_response()),
        }
    }
}

fn parse_mac(text: &str) -> Result<MacAddr, ApiError> {
    MacAddr::parse(text).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn call<R, F>(app: &AppState, f: F) -> Result<R, ApiError>
where
    F: FnOnce(&mut crate::store::Db) -> Result<R, StoreError> + Send + 'static,
    R: Send + 'static,
{
    app.store.call(f).await.map_err(ApiError::from)
}

async fn openapi(ApiUser(_): ApiUser) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[derive(Deserialize, Default)]
struct ListQuery {
    q: Option<String>,
    mode: Option<Mode>,
    sort: Option<SortBy>,
    offset: Option<u32>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct MachinePage {
    total: u64,
    offset: u32,
    machines: Vec<inventory::MachineDetail>,
}

async fn list_machines(
    State(app): State<AppState>,
    ApiUser(_): ApiUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<MachinePage> {
    let query = MachineQuery {
        search: q.q,
        mode: q.mode,
        sort: q.sort.unwrap_or_default(),
        offset: q.offset.unwrap_or(0),
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    let offset = query.offset;
    let (machines, total) = call(&app, move |conn| inventory::search(conn, &query)).await?;
    Ok(Json(MachinePage {
        total,
        offset,
        machines,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateMachine {
    mac: String,
    hostname: Option<String>,
    image: Option<String>,
    ip: Option<Ipv4Addr>,
    rack: Option<String>,
    position: Option<String>,
    exit_method: Option<ExitMethod>,
    loader: Option<crate::lifecycle::Loader>,
    ssh_keys: Option<String>,
}

async fn create_machine(
    State(app): State<AppState>,
    ApiUser(user): ApiUser,
    Json(body): Json<CreateMachine>,
) -> Result<(StatusCode, Json<inventory::MachineDetail>), ApiError> {
    let mac = parse_mac(&body.mac)?;
    let new = NewMachine {
        hostname: body.hostname,
        image: body.image,
        ip: body.ip,
        rack: body.rack,
        position: body.position,
        exit_method: body.exit_method,
        loader: body.loader,
        ssh_keys: body.ssh_keys,
        ..NewMachine::new(mac)
    };
    let created = app
        .services
        .add_machine(&Caller::from_principal(&user), clock::now_ms(), new)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// One machine, with the diagnoses of its current boot.
#[derive(Serialize)]
struct MachineView {
    #[serde(flatten)]
    machine: inventory::MachineDetail,
    diagnoses: Vec<crate::service::diagnosis::Recorded>,
}

async fn get_machine(
    State(app): State<AppState>,
    ApiUser(_): ApiUser,
    Path(mac): Path<String>,
) -> ApiResult<MachineView> {
    let mac = parse_mac(&mac)?;
    call(&app, move |conn| {
        let Some(machine) = inventory::machine(conn, mac)? else {
            return Ok(None);
        };
        let diagnoses = crate::service::diagnosis::current_in(conn, mac)?;
        Ok(Some(MachineView { machine, diagnoses }))
    })
    .await?
    .map(Json)
    .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no machine {mac}")))
}

async fn update_machine(
    State(app): State<AppState>,
    ApiUser(user): ApiUser,
    Path(mac): Path<String>,
    Json(patch): Json<MachinePatch>,
) -> ApiResult<inventory::MachineDetail> {
    let mac = parse_mac(&mac)?;
    Ok(Json(
        app.services
            .update_machine(&Caller::from_principal(&user), clock::now_ms(), mac, patch)
            .await?,
    ))
}

async fn delete_machine(
    State(app): State<AppState>,
    ApiUser(user): ApiUser,
    Path(mac): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mac = parse_mac(&mac)?;
    app.services
        .delete_machine(&Caller::from_principal(&user), clock::now_ms(), mac)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetImage {
    image: Option<String>,
}

async fn set_image(
    State(app): State<AppState>,
    ApiUser(user): ApiUser,
    Path(mac): Path<String>,
    Json(body): Json<SetImage>,
) -> ApiResult<inventory::MachineDetail> {
    let mac = parse_mac(&mac)?;
    Ok(Json(
        app.services
            .set_image(
                &Caller::from_principal(&user),
                clock::now_ms(),
                mac,
                body.image,
            )
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetMode {
    mode: Mode,
}

async fn apply_mode(
    app: &AppState,
    user: &Principal,
    mac: MacAddr,
    mode: Mode,
) -> ApiResult<inventory::MachineDetail> {
    Ok(Json(
        app.services
            .set_mode(&Caller::from_principal(user), clock::now_ms(), mac, mode)
            .await?,
    ))
}

async fn set_mode(
    State(app): State<AppState>,
    ApiUser(user): ApiUser,
    Path(mac): Path<String>,
    Json(body): Json<SetMode>,
) -> ApiResult<inventory::MachineDetail> {
    apply_mode(&app, &user, parse_mac(&mac)?, body.mode).await
}

/// Reinstall as one action: install mode, then (with a power controller) network
/// boot and power-cycle. 502 when a power step failed; the body says which steps
/// succeeded, and the mode change is kept.
async fn reinstall(
    State(app): State<AppState>,
    ApiUser(user): ApiUser,
    Path(mac): Path<String>,
) -> Response {
    run_reprovision(&app, &user, &mac, Mode::Install).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reprovision {
    mode: Mode,
}

async fn reprovision(
    State(app): State<AppState>,
    ApiUser(user): ApiUser,
    Path(mac): Path<String>,
    Json(body): Json<Reprovision>,
) -> Response {
    run_reprovision(&app, &user, &mac, body.mode).await
}

async fn run_reprovision(app: &AppState, user: &Principal, mac: &str, mode: Mode) -> Response {
    let result = async {
        let mac = parse_mac(mac)?;
        let report = app
            .services
            .reprovision(&Caller::from_principal(user), mac, mode)
            .await?;
        Ok::<_, ApiError>(report)
    }
    .await;
    match result {
        Err(e) => e.into_response(),
        Ok(report) => match &report.power_error {
            None => Json(report).into_response(),
            Some(why) => {
                let mut body = serde_json::to_value(&report).unwrap_or_default();
                body["error"] = json!({ "code": 502, "message": why });
                (StatusCode::BAD_GATEWAY, Json(body)).into_response()
            }
        },
    }
}

#[derive(Deserialize)]
struct ReprovisionMany {
    mode: Mode,
    #[serde(default)]
    macs: Vec<String>,
    rack: Option<String>,
}

/// Reinstall or rescue many machines at once: one result per machine, in the order
/// named (or by MAC for a rack). 200 whatever each machine's outcome; `failed` lists
/// the machines whose action failed. Wipe stays one machine at a time.
async fn reprovision_many(
    State(app): State<AppState>,
    ApiUser(user): ApiUser,
    Json(body): Json<ReprovisionMany>,
) -> Response {
    let result = async {
        let caller = Caller::from_principal(&user);
        caller.require(Need::Change)?;
        check_reprovision_mode(body.mode, true)?;
        let macs = body
            .macs
            .iter()
            .map(|m| parse_mac(m))
            .collect::<Result<Vec<_>, _>>()?;
        let macs = app.services.targets(macs, body.rack.clone()).await?;
        Ok::<_, ApiError>(
            app.services
                .reprovision_many(&caller, macs, body.mode)
                .await?,
        )
    }
    .await;
    match result {
        Err(e) => e.into_response(),
        Ok(results) => {
            let mut failed = Vec::new();
            let results: Vec<serde_json::Value> = results
                .into_iter()
                .map(|(mac, result)| match result {
                    Ok(report) => {
                        if report.power_error.is_some() {
                            failed.push(mac.to_string());
                        }
                        let mut value = serde_json::to_value(&report).unwrap_or_default();
                        value["ok"] = json!(report.power_error.is_none());
                        value
                    }
                    Err(e) => {
                        failed.push(mac.to_string());
                        json!({ "mac": mac.to_string(), "ok": false, "error": e.to_string() })
                    }
                })
                .collect();
            Json(json!({ "mode": body.mode, "results": results, "failed": failed })).into_response()
        }
    }
}

#[derive(Serialize)]
struct PowerView {
    controller: Option<crate::power::ControllerView>,
    status: Option<crate::power::CachedStatus>,
}

async fn get_power(
    State(app): State<AppState>,
    ApiUser(_): ApiUser,
    Path(mac): Path<String>,
) -> ApiResult<PowerView> {
    let mac = parse_mac(&mac)?;
    let (controller, status) = app.services.power_view(mac).await?;
    Ok(Json(PowerView {
        controller: controller.map(|c| c.view()),
        status,
    }))
}

async fn put_power(
    State(app): State<AppState>,
    ApiUser(user): ApiUser,
    Path(mac): Path<String>,
    Json(spec): Json<crate::power::ControllerSpec>,
) -> ApiResult<crate::power::ControllerView> {
    let mac = parse_mac(&mac)?;
    let controller = app
        .services
        .set_controller(&Caller::from_principal(&user), clock::now_ms(), mac, spec)
        .await?;
    Ok(Json(controller.view()))
}

async fn delete_power(
    State(app): State<AppState>,
    ApiUser(user): ApiUser,
    Path(mac): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mac = parse_mac(&mac)?;
    app.services
        .remove_controller(&Caller::from_principal(&user), clock::now_ms(), mac)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct ActionResult {
    mac: String,
    action: &'static str,
    state: Option<crate::power::PowerState>,
    warning: Option<String>,
}

/// A power verb: on, off, cycle, status, pxe. Reading the status changes nothing
/// but still asks the BMC, so it needs a token that may change.
async fn power_action(
    State(app): State<AppState>,
    ApiUser(user): ApiUser,
    Path((mac, action)): Path<(String, String)>,
) -> ApiResult<ActionResult> {
    let caller = Caller::from_principal(&user);
    caller.require(Need::Change)?;
    let mac = parse_mac(&mac)?;
    let verb = crate::power::Verb::parse(&action).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown power action {action:?}; expected on, off, cycle, status, pxe"),
        )
    })?;
    let outcome = app.services.power(&caller, mac, verb).await?;
    Ok(Json(ActionResult {
        mac: mac.to_string(),
        action: verb.as_str(),
        state: outcome.state,
        warning: outcome.warning,
    }))
}

#[derive(Deserialize)]
struct BootsQuery {
    limit: Option<usize>,
}

/// The machine's last boots, newest first, each with its phases and their durations.
async fn machine_boots(
    State(app): State<AppState>,
    ApiUser(_): ApiUser,
    Path(mac): Path<String>,
    Query(q): Query<BootsQuery>,
) -> ApiResult<Vec<crate::timeline::Boot>> {
    let mac = parse_mac(&mac)?;
    let limit = q.limit.unwrap_or(10).clamp(1, 100);
    Ok(Json(
        call(&app, move |conn| inventory::boots(conn, mac, limit)).await?,
    ))
}

#[derive(Serialize)]
struct ImageView {
    name: String,
    kernel_sha256: String,
    initrd_sha256: String,
    cmdline: String,
    machines: u64,
}

async fn list_images(
    State(app): State<AppState>,
    ApiUser(_): ApiUser,
) -> ApiResult<Vec<ImageView>> {
    let images = call(&app, |conn| inventory::images_with_use(conn)).await?;
    Ok(Json(
        images
            .into_iter()
            .map(|(i, machines)| ImageView {
                name: i.name,
                kernel_sha256: i.kernel_sha256,
                initrd_sha256: i.initrd_sha256,
                cmdline: i.cmdline,
                machines,
            })
            .collect(),
    ))
}

#[derive(Serialize)]
struct RegisteredView {
    verified_by: Option<String>,
    provenance: String,
    fetched_ms: i64,
}

#[derive(Serialize)]
struct DefinitionView {
    name: String,
    os: String,
    version: String,
    kind: crate::catalog::definition::Kind,
    architectures: Vec<String>,
    firmware: Vec<&'static str>,
    memory_mib: u32,
    chain: &'static str,
    /// Whether the chain was run end to end against the real upstream.
    tested: bool,
    tested_how: Option<String>,
    notes: Option<String>,
    /// False when an admin must give the trusted keys (`keyring`).
    keys_shipped: bool,
    parameters: std::collections::BTreeMap<String, String>,
    registered: Option<RegisteredView>,
}

async fn list_catalog(
    State(app): State<AppState>,
    ApiUser(_): ApiUser,
) -> ApiResult<Vec<DefinitionView>> {
    let entries = app.services.catalog_entries().await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|entry| {
                let d = entry.definition;
                let version = d.display_version();
                DefinitionView {
                    firmware: d.firmware.iter().map(|f| f.as_str()).collect(),
                    chain: d.chain.summary(),
                    tested: d.tested.is_some(),
                    keys_shipped: !d.keys.is_empty() || !d.chain.needs_keys(),
                    registered: entry.registered.map(|s| RegisteredView {
                        verified_by: s.verified_by,
                        provenance: s.provenance,
                        fetched_ms: s.fetched_ms,
                    }),
                    tested_how: d.tested,
                    name: d.name,
                    os: d.os,
                    version,
                    kind: d.kind,
                    architectures: d.architectures,
                    memory_mib: d.memory_mib,
                    notes: d.notes,
                    parameters: d.parameters,
                }
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchBody {
    definition: String,
    mirror: Option<String>,
    #[serde(default)]
    parameters: std::collections::BTreeMap<String, String>,
    /// Armoured OpenPGP keys replacing the definition's (admin tokens only).
    keyring: Option<String>,
}

#[derive(Serialize)]
struct FetchStarted {
    id: u64,
    status_url: String,
}

/// Starts a verified fetch; it runs in the background (an ISO takes minutes), and
/// `GET /api/v1/images/fetches/{id}` follows it.
async fn fetch_image(
    State(app): State<AppState>,
    ApiUser(user): ApiUser,
    Json(body): Json<FetchBody>,
) -> Result<(StatusCode, Json<FetchStarted>), ApiError> {
    let request = crate::service::catalog::FetchImage {
        definition: body.definition,
        mirror: body.mirror,
        from_dir: None,
        keyring: body.keyring.map(String::into_bytes),
        parameters: body.parameters,
    };
    let id = app
        .services
        .start_fetch(&Caller::from_principal(&user), request)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(FetchStarted {
            id,
            status_url: format!("/api/v1/images/fetches/{id}"),
        }),
    ))
}

#[derive(Serialize)]
struct FetchStatus {
    definition: String,
    started_by: String,
    /// `running`, `registered` or `failed`.
    state: &'static str,
    step: String,
    done_bytes: u64,
    total_bytes: Option<u64>,
    /// What was registered, or why nothing was.
    message: Option<String>,
}

async fn fetch_status(
    State(app): State<AppState>,
    ApiUser(_): ApiUser,
    Path(id): Path<u64>,
) -> ApiResult<FetchStatus> {
    let job = app.services.fetch_job(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no such fetch (only the most recent ones are kept)",
        )
    })?;
    let (state, message) = match job.outcome {
        None => ("running", None),
        Some(Ok(done)) => ("registered", Some(done)),
        Some(Err(why)) => ("failed", Some(why)),
    };
    Ok(Json(FetchStatus {
        definition: job.definition,
        started_by: job.actor,
        state,
        step: job.progress.step,
        done_bytes: job.progress.done_bytes,
        total_bytes: job.progress.total_bytes,
        message,
    }))
}

#[derive(Serialize)]
struct LeaseView {
    ip: Ipv4Addr,
    mac: String,
    state: &'static str,
    expires_at: i64,
    hostname: Option<String>,
}

async fn list_leases(
    State(app): State<AppState>,
    ApiUser(_): ApiUser,
) -> ApiResult<Vec<LeaseView>> {
    let leases = call(&app, |conn| store::list_leases(conn)).await?;
    let now = clock::now_ms() / 1000;
    Ok(Json(
        leases
            .into_iter()
            .map(|l| LeaseView {
                ip: l.ip,
                mac: l.mac.to_string(),
                state: match l.state {
                    store::LeaseState::Bound if l.expires_at <= now => "expired",
                    store::LeaseState::Bound => "bound",
                    store::LeaseState::Released => "released",
                    store::LeaseState::Declined => "declined",
                    store::LeaseState::Observed => "observed",
                },
                expires_at: l.expires_at,
                hostname: l.hostname,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
struct EventsQuery {
    mac: Option<String>,
    audit: Option<bool>,
    limit: Option<u32>,
}

async fn list_events(
    State(app): State<AppState>,
    ApiUser(_): ApiUser,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Vec<inventory::AuditEvent>> {
    let mac = q.mac.as_deref().map(parse_mac).transpose()?;
    let limit = q.limit.unwrap_or(200).clamp(1, 5000);
    let audit = q.audit.unwrap_or(false);
    Ok(Json(
        call(&app, move |conn| inventory::events(conn, mac, audit, limit)).await?,
    ))
}
