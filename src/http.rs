//! The HTTP side, boot-serving part (axum): per-machine iPXE scripts that follow the
//! machine's boot mode, the kernel and initrd of the image it boots (with Range
//! requests), its install files, its done-URL, and the iPXE binaries for UEFI HTTP
//! boot. None of these need a login: booting machines fetch them. Those that carry a
//! secret (a done-URL, an install file) go only where `secrets::Rule` allows.
//! `router` joins these with the panel and API (`panel`, `api`).

use crate::auth::LoginLimiter;
use crate::clock;
use crate::lifecycle::{DoneOutcome, LifecycleConfig};
use crate::mac::MacAddr;
use crate::script::Scripts;
use crate::service::boot::{BootDocs, BootError, Flavour};
use crate::store::Store;
use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub scripts: Arc<Scripts>,
    /// Base URL machines reach rackboot at, without a trailing slash.
    pub base_url: String,
    pub data_dir: PathBuf,
    pub lifecycle: Arc<LifecycleConfig>,
    pub limiter: Arc<LoginLimiter>,
    /// The one-time link that creates the first admin, while no user exists.
    pub setup_token: Arc<Mutex<Option<String>>>,
    /// Set when the panel is served over TLS: cookies get `Secure`.
    pub secure_cookies: bool,
    pub imports: Arc<crate::bulk::StagedImports>,
    /// Sends power verbs to BMCs, with the `[power]` limits.
    pub power: Arc<crate::power::Power>,
    /// The DHCP subnets served (none without `[dhcp]` or in proxy mode), for the
    /// panel's pool usage.
    pub subnets: Arc<Vec<crate::config::Subnet>>,
    /// Every action on the inventory; the fields above that it also holds are the
    /// same shared values (`with_services` keeps them so).
    pub services: crate::service::Services,
    /// Who may fetch a machine's secrets (`secrets`).
    pub secrets: crate::secrets::Rule,
    /// How large a panel image upload may be, and how much space it leaves free.
    pub uploads: UploadLimits,
    /// `[boot]`: each architecture's loader files.
    pub loaders: Arc<crate::config::BootLoaders>,
    /// Unified kernel images, per machine (`data_dir/cache/uki`).
    pub uki: Option<Arc<crate::uki::UkiCache>>,
}

pub use crate::config::UploadLimits;

impl AppState {
    pub fn new(
        store: Store,
        data_dir: PathBuf,
        base_url: String,
        lifecycle: LifecycleConfig,
    ) -> Self {
        let services = crate::service::Services::new(
            store.clone(),
            lifecycle,
            Vec::new(),
            crate::power::PowerConfig::default(),
            data_dir.clone(),
        );
        let uki = crate::uki::UkiCache::open(
            crate::uki::UkiCache::default_dir(&data_dir),
            crate::uki::UkiCache::DEFAULT_BUDGET,
        )
        .map(Arc::new)
        .map_err(|e| tracing::warn!("unified kernel images disabled: {e}"))
        .ok();
        AppState {
            uki,
            services: services.clone(),
            store,
            scripts: Arc::new(Scripts::new(data_dir.join("ipxe"))),
            base_url,
            data_dir,
            lifecycle: services.lifecycle.clone(),
            limiter: services.limiter.clone(),
            setup_token: Arc::new(Mutex::new(None)),
            secure_cookies: false,
            imports: Arc::new(crate::bulk::StagedImports::default()),
            power: services.power.clone(),
            subnets: services.subnets.clone(),
            secrets: crate::secrets::Rule::default(),
            uploads: UploadLimits::default(),
            loaders: Arc::default(),
        }
    }

    /// The boot service over this state's shared parts.
    pub fn boot_docs(&self) -> BootDocs {
        BootDocs {
            services: self.services.clone(),
            scripts: Arc::clone(&self.scripts),
            base_url: self.base_url.clone(),
            secrets: self.secrets.clone(),
            loaders: Arc::clone(&self.loaders),
            uki: self.uki.clone(),
        }
    }

    /// The same state on other services (the configured subnets and power limits).
    pub fn with_services(mut self, services: crate::service::Services) -> Self {
        self.lifecycle = services.lifecycle.clone();
        self.limiter = services.limiter.clone();
        self.power = services.power.clone();
        self.subnets = services.subnets.clone();
        self.store = services.store.clone();
        self.services = services;
        self
    }
}

/// The HTTP status of each kind of service error: one table, for the API and the
/// panel alike.
pub fn status_for(kind: crate::service::ErrorKind) -> StatusCode {
    match kind {
        crate::service::ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        crate::service::ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        crate::service::ErrorKind::NotFound => StatusCode::NOT_FOUND,
        crate::service::ErrorKind::Conflict => StatusCode::CONFLICT,
        crate::service::ErrorKind::Upstream => StatusCode::BAD_GATEWAY,
        crate::service::ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What booting machines fetch; no login.
pub fn boot_router(state: AppState, ipxe_dir: PathBuf) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/boot/{script}", get(boot_script))
        .route("/boot/{mac}/{file}", get(image_file))
        .route("/machines/{mac}/files/{name}", get(install_file))
        .route("/done/{token}", get(done_url).post(done_url))
        .route("/progress/{token}/{step}", get(progress).post(progress))
        .nest_service("/ipxe", ServeDir::new(ipxe_dir))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            record_boot_file,
        ))
        // Scripts, templates and kernels are never to be sniffed into something a
        // browser would run.
        .layer(axum::middleware::map_response(
            |mut response: Response| async {
                response.headers_mut().insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                response
            },
        ))
        .with_state(state)
}

/// The largest install template rendered: an operator's file, but read per request.
const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

/// Reads an install template, refusing a symlink (it could point anywhere the
/// process can read) and an oversized file.
fn read_template(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "install files are not followed through symlinks",
                )
            } else {
                e
            }
        })?;
    let mut source = String::new();
    file.take(MAX_TEMPLATE_BYTES + 1)
        .read_to_string(&mut source)?;
    if source.len() as u64 > MAX_TEMPLATE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("install files are limited to {MAX_TEMPLATE_BYTES} bytes"),
        ));
    }
    Ok(source)
}

pub fn plain(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // A script reflects the inventory now; a cached one would boot the wrong thing.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn client_ipv4(peer: SocketAddr) -> Option<Ipv4Addr> {
    match peer.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    }
}

/// The HTTP answer to a boot service error.
fn boot_error(mac: MacAddr, e: BootError) -> Response {
    match e {
        BootError::Unavailable(e) => {
            tracing::error!(%mac, "inventory unavailable: {e}");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "inventory unavailable\n".into(),
            )
        }
        BootError::Forbidden(_) => plain(
            StatusCode::FORBIDDEN,
            "forbidden: not this machine's address\n".into(),
        ),
        BootError::NotFound(why) => plain(StatusCode::NOT_FOUND, format!("{why}\n")),
        BootError::Render(e) => render_error(mac, e),
    }
}

fn render_error(mac: MacAddr, e: impl std::fmt::Display) -> Response {
    tracing::error!(%mac, "template not rendered: {e}");
    plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        "template error; see the rackboot log\n".into(),
    )
}

/// Records a UEFI HTTP boot firmware's download of its boot program (`/ipxe/...`)
/// for the machine at the client's address, as TFTP records its reads: without it a
/// Secure Boot refusal over HTTP boot could not be told apart from a slow boot.
async fn record_boot_file(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_string();
    let is_get = request.method() == Method::GET;
    let response = next.run(request).await;
    if let Some(file) = path.strip_prefix("/ipxe/")
        && is_get
        && response.status().is_success()
        && let Some(ip) = client_ipv4(peer)
    {
        let owner = app
            .secrets
            .machine_at(&app.store, ip, clock::now_ms() / 1000)
            .await;
        if let Ok(Some((mac, _))) = owner {
            app.store.record_event(
                clock::now_ms(),
                Some(mac),
                "http.bootfile",
                format!(
                    "file={} status={} client={peer}",
                    crate::text::for_terminal(file),
                    response.status().as_u16()
                ),
            );
        }
    }
    response
}

/// A machine's unified kernel image, for UEFI HTTP boot without TFTP or iPXE.
async fn unified_image(
    app: AppState,
    peer: SocketAddr,
    mac_text: &str,
    request: Request,
) -> Response {
    let mac = match MacAddr::parse(mac_text) {
        Ok(mac) => mac,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let (image, path) = match app.boot_docs().uki(mac, client_ipv4(peer)).await {
        Ok(built) => built,
        Err(e) => return boot_error(mac, e),
    };
    let is_get = request.method() == Method::GET;
    let response = match ServeFile::new(&path).oneshot(request).await {
        Ok(response) => response.into_response(),
        Err(never) => match never {},
    };
    if is_get && response.status().is_success() {
        app.store.record_event(
            clock::now_ms(),
            Some(mac),
            "http.kernel",
            format!(
                "image={} uki=true status={} client={peer}",
                image.name,
                response.status().as_u16()
            ),
        );
    }
    response
}

async fn boot_script(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(script): Path<String>,
    request: Request,
) -> Response {
    if let Some(mac_text) = script.strip_suffix(".efi") {
        return unified_image(app, peer, mac_text, request).await;
    }
    let Some(mac_text) = script.strip_suffix(".ipxe") else {
        return plain(StatusCode::NOT_FOUND, "not found\n".into());
    };
    let mac = match MacAddr::parse(mac_text) {
        Ok(mac) => mac,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    match app
        .boot_docs()
        .document(mac, client_ipv4(peer), Flavour::Ipxe)
        .await
    {
        Ok(document) => plain(StatusCode::OK, document.text),
        Err(e) => boot_error(mac, e),
    }
}

async fn image_file(
    State(app): State<AppState>,
    Path((mac_text, file)): Path<(String, String)>,
    request: Request,
) -> Response {
    let mac = match MacAddr::parse(&mac_text) {
        Ok(mac) => mac,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let (image, path) = match app.boot_docs().image_file(mac, &file).await {
        Ok(found) => found,
        Err(e) => return boot_error(mac, e),
    };
    let path = path.display().to_string();
    let is_get = request.method() == Method::GET;
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // ServeFile streams from disk and answers Range, HEAD and If-Modified-Since.
    let response = match ServeFile::new(&path).oneshot(request).await {
        Ok(response) => response.into_response(),
        Err(never) => match never {},
    };
    if response.status() == StatusCode::NOT_FOUND {
        tracing::error!(%mac, image = image.name, path, "image file missing on disk");
    } else if is_get && response.status().is_success() {
        app.store.record_event(
            clock::now_ms(),
            Some(mac),
            &format!("http.{file}"),
            format!(
                "image={} status={}{}",
                image.name,
                response.status().as_u16(),
                range.map(|r| format!(" range={r}")).unwrap_or_default()
            ),
        );
    }
    response
}

/// Unattended-install files (kickstart, preseed, cloud-init...) of the image a
/// machine boots, rendered for that machine.
async fn install_file(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((mac_text, name)): Path<(String, String)>,
) -> Response {
    let mac = match MacAddr::parse(&mac_text) {
        Ok(mac) => mac,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    if crate::images::validate_name(&name).is_err() {
        return plain(StatusCode::NOT_FOUND, "not found\n".into());
    }
    let docs = app.boot_docs();
    if let Err(e) = docs.check_owner(mac, client_ipv4(peer)).await {
        return boot_error(mac, e);
    }
    let resolved = match docs.resolve(mac).await {
        Ok(Some(resolved)) => resolved,
        Ok(None) => return plain(StatusCode::NOT_FOUND, "no such machine\n".into()),
        Err(e) => return boot_error(mac, e),
    };
    let Some(image) = resolved.image else {
        return plain(StatusCode::NOT_FOUND, format!("{mac} boots no image now\n"));
    };
    let machine = resolved.machine;
    let path = crate::images::files_dir(&app.data_dir, &image.name).join(&name);
    let ctx = docs.install_context(mac, &machine, &image, resolved.source.as_ref(), true);
    let rendered = tokio::task::spawn_blocking(move || {
        let source = read_template(&path)?;
        Ok::<_, std::io::Error>(crate::script::render_source(&name, source, ctx))
    })
    .await;
    match rendered {
        Ok(Ok(Ok(text))) => {
            app.store.record_event(
                clock::now_ms(),
                Some(mac),
                "http.file",
                format!("image={} client={peer}", image.name),
            );
            plain(StatusCode::OK, text)
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            plain(StatusCode::NOT_FOUND, "no such file in this image\n".into())
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::warn!(%mac, "install file refused: {e}");
            plain(StatusCode::FORBIDDEN, format!("{e}\n"))
        }
        Ok(Err(e)) => render_error(mac, e),
        Ok(Ok(Err(e))) => render_error(mac, e),
        Err(e) => render_error(mac, e),
    }
}

#[derive(serde::Deserialize)]
struct DoneQuery {
    status: Option<String>,
}

/// An installer (or wiper) reports it finished: `GET` or `POST /done/{token}`,
/// `?status=failed` for a failure.
async fn done_url(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    Query(query): Query<DoneQuery>,
) -> Response {
    let failed = match query.status.as_deref() {
        None | Some("ok" | "success" | "done") => false,
        Some("failed" | "failure" | "error") => true,
        Some(other) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("unknown status {other:?}; use status=failed or leave it out\n"),
            );
        }
    };
    let now_ms = clock::now_ms();
    let result = app.services.machine_done(now_ms, token, failed).await;
    match result {
        Ok((DoneOutcome::Finished { wiped }, Some(mac))) => {
            tracing::info!(%mac, %peer, wiped, "done-URL called: back to local boot");
            plain(
                StatusCode::OK,
                "ok: the machine boots from its disk from now on\n".into(),
            )
        }
        Ok((DoneOutcome::Failed, Some(mac))) => {
            tracing::warn!(%mac, %peer, "installer reported failure");
            plain(
                StatusCode::OK,
                "recorded: failed; the machine stays in its mode\n".into(),
            )
        }
        Ok((_, mac)) => {
            tracing::warn!(?mac, %peer, "done-URL refused: wrong, used or expired token");
            plain(
                StatusCode::FORBIDDEN,
                "forbidden: wrong, used or expired token\n".into(),
            )
        }
        Err(e) => {
            tracing::error!("done-URL: inventory unavailable: {e}");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "inventory unavailable\n".into(),
            )
        }
    }
}

/// An installer reports a step (`installer-started`, ...): recorded as an event of
/// the machine whose live token it holds; nothing else changes.
async fn progress(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((token, step)): Path<(String, String)>,
) -> Response {
    match app
        .services
        .machine_progress(clock::now_ms(), token, step.clone())
        .await
    {
        Ok(Some(mac)) => {
            tracing::info!(%mac, %peer, step, "installer progress");
            plain(StatusCode::OK, "recorded\n".into())
        }
        Ok(None) => plain(
            StatusCode::FORBIDDEN,
            "forbidden: wrong, used or expired token\n".into(),
        ),
        Err(e) => plain(status_for(e.kind()), format!("{e}\n")),
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::inventory;
    use crate::lifecycle::{self, Mode};
    use crate::service::boot::TftpFile;
    use crate::service::machines::{NewMachine, add_in, set_mode_in, update_in};
    use crate::store::{self, Image};
    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use http_body_util::BodyExt;

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
    pub async fn app_from(peer: [u8; 4]) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_in_memory().expect("store");
        let kernel = dir.path().join("kernel");
        let initrd = dir.path().join("initrd");
        std::fs::write(&kernel, b"KERNEL-BYTES-0123456789").expect("write");
        std::fs::write(&initrd, b"INITRD").expect("write");
        std::fs::write(dir.path().join("snponly.efi"), b"EFI").expect("write");
        let files = crate::images::files_dir(dir.path(), "debian");
        std::fs::create_dir_all(&files).expect("mkdir");
        std::fs::write(
            files.join("preseed.cfg"),
            "host {{ hostname }} ip {{ ip }} done {{ done_url }}\n{% for k in ssh_keys %}key {{ k }}\n{% endfor %}",
        )
        .expect("write");
        let image = |name: &str| Image {
            arches: vec![crate::lifecycle::Arch::Amd64],
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
                let mac = MacAddr::parse(MAC).expect("mac");
                add_in(
                    tx,
                    &NewMachine {
                        hostname: Some("node1".into()),
                        image: Some("debian".into()),
                        ip: Some(Ipv4Addr::from(OWN_IP)),
                        ssh_keys: Some("ssh-ed25519 AAAAown node1-admin".into()),
                        ..NewMachine::new(mac)
                    },
                    &seed_config,
                    &[],
                    "test",
                    clock::now_ms(),
                )?;
                add_in(
                    tx,
                    &NewMachine::new(MacAddr([0x52, 0x54, 0, 0, 0, 2])),
                    &seed_config,
                    &[],
                    "test",
                    0,
                )
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
        let router = boot_router(state.clone(), dir.path().to_path_buf())
            .layer(MockConnectInfo(SocketAddr::from((peer, 40000))));
        TestApp {
            router,
            state,
            _dir: dir,
        }
    }

    pub async fn app() -> TestApp {
        app_from(OWN_IP).await
    }

    pub async fn get(app: &TestApp, uri: &str, range: Option<&str>) -> (StatusCode, String) {
        let mut builder = axum::http::Request::builder().uri(uri);
        if let Some(range) = range {
            builder = builder.header(header::RANGE, range);
        }
        let response = app
            .router
            .clone()
            .oneshot(builder.body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn set_mode(app: &TestApp, mode: Mode) {
        let config = test_lifecycle();
        app.state
            .store
            .transaction(move |tx| {
                set_mode_in(
                    tx,
                    MacAddr::parse(MAC).expect("mac"),
                    mode,
                    &config,
                    "test",
                    clock::now_ms(),
                )
            })
            .await
            .expect("set mode");
    }

    async fn token(app: &TestApp) -> String {
        app.state
            .store
            .call(|conn| inventory::machine(conn, MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56])))
            .await
            .expect("q")
            .and_then(|m| m.token)
            .expect("token")
    }

    #[tokio::test]
    async fn install_script_for_every_mac_spelling_carries_the_done_url() {
        let app = app().await;
        let token = token(&app).await;
        for spelling in [
            "52:54:00:12:34:56",
            "52-54-00-12-34-56",
            "52%3A54%3A00%3A12%3A34%3A56",
            "52%3a54%3a00%3A12%3A34%3A56",
        ] {
            let (status, body) = get(&app, &format!("/boot/{spelling}.ipxe"), None).await;
            assert_eq!(status, StatusCode::OK, "{spelling}");
            assert!(
                body.contains("kernel http://192.0.2.1:8080/boot/52-54-00-12-34-56/kernel initrd=initrd console=ttyS0"),
                "{body}"
            );
            assert!(
                body.contains(&format!("rackboot.done=http://192.0.2.1:8080/done/{token}")),
                "{body}"
            );
        }
        // Fetching the script never changes the mode.
        assert_eq!(token.clone(), super::tests::token(&app).await);
    }

    #[tokio::test]
    async fn secrets_are_refused_to_other_addresses() {
        let app = app_from([192, 0, 2, 99]).await;
        let (status, _) = get(&app, "/boot/52-54-00-12-34-56.ipxe", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = get(&app, "/machines/52-54-00-12-34-56/files/preseed.cfg", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // A local-boot script carries no secret: anyone may read it.
        set_mode(&app, Mode::Local).await;
        let (status, _) = get(&app, "/boot/52-54-00-12-34-56.ipxe", None).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn modes_choose_the_script() {
        let app = app().await;
        set_mode(&app, Mode::Local).await;
        let (_, body) = get(&app, "/boot/52-54-00-12-34-56.ipxe", None).await;
        assert!(body.trim_end().ends_with("exit"), "{body}");
        assert!(!body.contains("rackboot.done"), "{body}");
        set_mode(&app, Mode::Rescue).await;
        let (_, body) = get(&app, "/boot/52-54-00-12-34-56.ipxe", None).await;
        assert!(body.contains("booting image rescue"), "{body}");
        assert!(!body.contains("rackboot.done"), "{body}");
        set_mode(&app, Mode::Wipe).await;
        let (_, body) = get(&app, "/boot/52-54-00-12-34-56.ipxe", None).await;
        assert!(
            body.contains("booting image wipe") && body.contains("rackboot.done="),
            "{body}"
        );
        set_mode(&app, Mode::Boot).await;
        let (_, body) = get(&app, "/boot/52-54-00-12-34-56.ipxe", None).await;
        assert!(
            body.contains("booting image debian") && !body.contains("rackboot.done"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn exit_method_is_per_machine() {
        let app = app().await;
        set_mode(&app, Mode::Local).await;
        app.state
            .store
            .transaction(|tx| {
                update_in(
                    tx,
                    MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
                    &inventory::MachinePatch {
                        exit_method: Some(lifecycle::ExitMethod::Sanboot),
                        ..Default::default()
                    },
                    &[],
                    "test",
                    0,
                )
            })
            .await
            .expect("update");
        let (_, body) = get(&app, "/boot/52-54-00-12-34-56.ipxe", None).await;
        assert!(
            body.contains("sanboot --no-describe --drive 0x80"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn done_url_works_once() {
        let app = app().await;
        let token = token(&app).await;
        let (status, _) = get(&app, "/done/0000", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = get(&app, &format!("/done/{token}?status=failed"), None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = get(&app, &format!("/done/{token}"), None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = get(&app, &format!("/done/{token}"), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a used token is refused");
        let (_, body) = get(&app, "/boot/52-54-00-12-34-56.ipxe", None).await;
        assert!(body.trim_end().ends_with("exit"), "back to local: {body}");
    }

    #[tokio::test]
    async fn install_files_are_rendered_per_machine() {
        let app = app().await;
        let token = token(&app).await;
        let (status, body) = get(&app, "/machines/52-54-00-12-34-56/files/preseed.cfg", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("host node1 ip 192.0.2.10"), "{body}");
        assert!(
            body.contains(&format!("done http://192.0.2.1:8080/done/{token}")),
            "{body}"
        );
        assert!(body.contains("key ssh-ed25519 AAAAdefault ops"), "{body}");
        assert!(
            body.contains("key ssh-ed25519 AAAAown node1-admin"),
            "{body}"
        );
        let (status, _) = get(&app, "/machines/52-54-00-12-34-56/files/nope.cfg", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = get(&app, "/machines/52-54-00-12-34-56/files/..%2Fkernel", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn install_files_are_not_read_through_symlinks_and_boot_routes_say_nosniff() {
        let app = app().await;
        let files = crate::images::files_dir(app._dir.path(), "debian");
        let secret = app._dir.path().join("outside.txt");
        std::fs::write(&secret, "OUTSIDE-SECRET").expect("write");
        std::os::unix::fs::symlink(&secret, files.join("link.cfg")).expect("symlink");
        let (status, body) = get(&app, "/machines/52-54-00-12-34-56/files/link.cfg", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(!body.contains("OUTSIDE-SECRET"), "{body}");
        for uri in [
            "/boot/52-54-00-12-34-56.ipxe",
            "/boot/52-54-00-12-34-56/kernel",
            "/machines/52-54-00-12-34-56/files/preseed.cfg",
            "/healthz",
        ] {
            let response = app
                .router
                .clone()
                .oneshot(
                    axum::http::Request::builder()
                        .uri(uri)
                        .body(Body::empty())
                        .expect("request"),
                )
                .await
                .expect("response");
            assert_eq!(
                response.headers().get(header::X_CONTENT_TYPE_OPTIONS),
                Some(&HeaderValue::from_static("nosniff")),
                "{uri}"
            );
        }
    }

    #[tokio::test]
    async fn unknown_and_imageless_machines_boot_locally() {
        let app = app().await;
        let (status, body) = get(&app, "/boot/52-54-00-99-99-99.ipxe", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("not in the inventory"), "{body}");
        assert!(body.contains("exit"));
        let (status, body) = get(&app, "/boot/52-54-00-00-00-02.ipxe", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.trim_end().ends_with("exit"), "{body}");
        let (status, _) = get(&app, "/boot/not-a-mac.ipxe", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn kernel_is_served_with_ranges_and_logged() {
        let app = app().await;
        let (status, body) = get(&app, "/boot/52-54-00-12-34-56/kernel", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "KERNEL-BYTES-0123456789");
        let (status, body) = get(&app, "/boot/52-54-00-12-34-56/kernel", Some("bytes=7-11")).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(body, "BYTES");
        let (status, body) = get(&app, "/boot/52-54-00-12-34-56/initrd", None).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "INITRD"));
        let (status, _) = get(&app, "/boot/52-54-00-00-00-02/kernel", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = get(&app, "/boot/52-54-00-12-34-56/passwd", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let events = app
            .state
            .store
            .call(|conn| store::list_events(conn, MacAddr::parse(MAC).ok(), 100))
            .await
            .expect("events");
        let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
        assert!(
            kinds.contains(&"http.kernel") && kinds.contains(&"http.initrd"),
            "{kinds:?}"
        );
    }

    #[tokio::test]
    async fn ipxe_binaries_over_http_stay_inside_their_directory() {
        let app = app().await;
        let (status, body) = get(&app, "/ipxe/snponly.efi", None).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "EFI"));
        let (status, _) = get(&app, "/ipxe/../kernel", None).await;
        assert_ne!(status, StatusCode::OK);
    }

    const MAC_DASHED: &str = "52-54-00-12-34-56";

    async fn events_of(app: &TestApp, kind: &str) -> Vec<String> {
        let kind = kind.to_string();
        app.state
            .store
            .call(move |conn| store::list_events(conn, None, 100))
            .await
            .expect("events")
            .into_iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.detail)
            .collect()
    }

    #[tokio::test]
    async fn an_installer_reports_progress_with_its_live_token_only() {
        let app = app().await;
        let token = token(&app).await;
        let (status, _) = get(&app, &format!("/progress/{token}/installer-started"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            events_of(&app, "install.progress").await,
            ["installer-started"]
        );
        let (status, _) = get(&app, "/progress/0000/installer-started", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = get(&app, &format!("/progress/{token}/%3Cscript%3E"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "a step is plain words");
        // Reporting changed nothing: the same token still finishes the install once.
        let (status, _) = get(&app, &format!("/done/{token}"), None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = get(&app, &format!("/progress/{token}/late"), None).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "a used token reports nothing"
        );
        assert_eq!(events_of(&app, "install.progress").await.len(), 1);
    }

    /// A catalog image: its command line is a template rendered per machine, with the
    /// values fixed when it was fetched (the mirror), and no initrd line without one.
    async fn catalog_image(app: &TestApp, cmdline: &str, initrd: bool) {
        let kernel = app._dir.path().join("kernel").display().to_string();
        let image = Image {
            arches: vec![crate::lifecycle::Arch::Amd64],
            name: "debian".into(),
            kernel_path: kernel.clone(),
            kernel_sha256: String::new(),
            initrd_path: if initrd { kernel } else { String::new() },
            initrd_sha256: String::new(),
            cmdline: cmdline.into(),
        };
        let source = crate::store::ImageSource {
            name: "debian".into(),
            definition: "debian-12".into(),
            vars: [(
                "mirror".to_string(),
                "http://mirror.example/debian".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        app.state
            .store
            .transaction(move |tx| {
                store::put_image(tx, &image, 0)?;
                store::put_image_source(tx, &source)
            })
            .await
            .expect("image");
    }

    #[tokio::test]
    async fn a_catalog_command_line_is_rendered_for_the_machine() {
        let app = app().await;
        catalog_image(
            &app,
            "url={{ files_url }}/preseed.cfg hostname={{ hostname }} mirror={{ mirror.host }}{{ mirror.path }}{% if console %} console={{ console }}{% endif %}",
            true,
        )
        .await;
        let (status, body) = get(&app, &format!("/boot/{MAC_DASHED}.ipxe"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.contains(&format!(
                "url=http://192.0.2.1:8080/machines/{MAC_DASHED}/files/preseed.cfg hostname=node1 mirror=mirror.example/debian rackboot.done="
            )),
            "{body}"
        );
        assert!(body.contains("\ninitrd http://"), "{body}");
    }

    #[tokio::test]
    async fn an_image_without_an_initrd_boots_its_kernel_alone() {
        let app = app().await;
        catalog_image(&app, "", false).await;
        let (status, body) = get(&app, &format!("/boot/{MAC_DASHED}.ipxe"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("\nkernel http://"), "{body}");
        assert!(!body.contains("initrd"), "{body}");
        assert!(body.trim_end().ends_with("boot"), "{body}");
    }

    #[tokio::test]
    async fn install_files_get_the_progress_url_and_the_mirror() {
        let app = app().await;
        let token = token(&app).await;
        catalog_image(&app, "", true).await;
        let files = crate::images::files_dir(app._dir.path(), "debian");
        std::fs::write(
            files.join("preseed.cfg"),
            "p={{ progress_url }} m={{ mirror.url }} h={{ mirror.host }} d={{ mirror.path }} c={{ console or \"-\" }} disk={{ install_disk or \"-\" }}",
        )
        .expect("write");
        let (status, body) = get(
            &app,
            &format!("/machines/{MAC_DASHED}/files/preseed.cfg"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            format!(
                "p=http://192.0.2.1:8080/progress/{token} m=http://mirror.example/debian h=mirror.example d=/debian c=- disk=-"
            )
        );
    }

    fn tftp_text(answer: Option<Result<TftpFile, BootError>>) -> String {
        match answer {
            Some(Ok(TftpFile::Text(text))) => text,
            other => panic!("expected a rendered file, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn grub_gets_the_same_plan_as_ipxe_over_tftp_with_the_done_url_for_its_owner_only() {
        let app = app().await;
        set_mode(&app, Mode::Install).await;
        let token = token(&app).await;
        let docs = app.state.boot_docs();
        let own = Some(Ipv4Addr::from(OWN_IP));
        // grub names the file by the MAC its network stack booted from, with colons.
        let grub = tftp_text(
            docs.tftp_file(std::path::Path::new("boot/52:54:00:12:34:56.grub"), own)
                .await,
        );
        assert!(
            grub.contains("linux /boot/52-54-00-12-34-56/kernel 'console=ttyS0' 'rackboot.done=http://192.0.2.1:8080/done/"),
            "{grub}"
        );
        assert!(grub.contains(&token), "{grub}");
        assert!(
            grub.contains("initrd /boot/52-54-00-12-34-56/initrd"),
            "{grub}"
        );
        assert_eq!(
            events_of(&app, "tftp.script").await.len(),
            1,
            "the grub configuration is recorded like the iPXE script"
        );
        // The same file asked from another address is refused: it holds the done-URL.
        let other = docs
            .tftp_file(
                std::path::Path::new("boot/52:54:00:12:34:56.grub"),
                Some(Ipv4Addr::new(192, 0, 2, 99)),
            )
            .await;
        assert!(
            matches!(other, Some(Err(BootError::Forbidden(_)))),
            "{other:?}"
        );
        // The kernel and initrd it names come over TFTP from the image.
        match docs
            .tftp_file(std::path::Path::new("boot/52-54-00-12-34-56/kernel"), own)
            .await
        {
            Some(Ok(TftpFile::Path(path))) => {
                assert_eq!(
                    std::fs::read(path).expect("kernel"),
                    b"KERNEL-BYTES-0123456789"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn every_grub_prefix_reads_the_one_entry_and_shim_and_grub_come_from_the_config() {
        let app = app().await;
        let docs = app.state.boot_docs();
        for path in ["grub/grub.cfg", "debian-installer/arm64/grub/grub.cfg"] {
            let text = tftp_text(docs.tftp_file(std::path::Path::new(path), None).await);
            assert_eq!(text, crate::service::boot::GRUB_ENTRY, "{path}");
        }
        let loaders = crate::config::BootLoaders::default();
        for (name, expected) in [
            ("shimx64.efi", &loaders.amd64.shim),
            ("grubx64.efi", &loaders.amd64.grub),
            ("shimaa64.efi", &loaders.arm64.shim),
            ("grubaa64.efi", &loaders.arm64.grub),
        ] {
            match docs.tftp_file(std::path::Path::new(name), None).await {
                Some(Ok(TftpFile::Path(path))) => assert_eq!(&path, expected, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        // Anything else is left to the TFTP directories.
        assert!(
            docs.tftp_file(std::path::Path::new("snponly.efi"), None)
                .await
                .is_none()
        );
        assert!(
            docs.tftp_file(std::path::Path::new("boot/x/kernel"), None)
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_machine_whose_image_carries_its_own_shim_and_grub_gets_those() {
        let app = app().await;
        set_mode(&app, Mode::Install).await;
        // The test image's files live in the test directory: its own loaders too.
        let image_dir = app._dir.path();
        std::fs::write(image_dir.join("shimx64.efi"), b"the image's shim").expect("shim");
        let docs = app.state.boot_docs();
        let own = Some(Ipv4Addr::from(OWN_IP));
        let path_for = |answer: Option<Result<TftpFile, BootError>>| match answer {
            Some(Ok(TftpFile::Path(path))) => path,
            other => panic!("{other:?}"),
        };
        let shim = path_for(
            docs.tftp_file(std::path::Path::new("shimx64.efi"), own)
                .await,
        );
        assert_eq!(shim, image_dir.join("shimx64.efi"));
        // A file the image lacks comes from the configuration.
        let grub = path_for(
            docs.tftp_file(std::path::Path::new("grubx64.efi"), own)
                .await,
        );
        assert_eq!(grub, crate::config::BootLoaders::default().amd64.grub);
        // Another address (no machine of the inventory) gets the configured shim.
        let stranger = path_for(
            docs.tftp_file(
                std::path::Path::new("shimx64.efi"),
                Some(Ipv4Addr::new(192, 0, 2, 99)),
            )
            .await,
        );
        assert_eq!(stranger, crate::config::BootLoaders::default().amd64.shim);
    }

    #[tokio::test]
    async fn an_arm64_machine_is_never_handed_an_amd64_kernel() {
        let app = app().await;
        set_mode(&app, Mode::Install).await;
        app.state
            .store
            .call(|conn| {
                // As the DHCP server records an arm64 firmware's requests.
                let batch = crate::model::DhcpBatch {
                    seen: vec![crate::model::Seen {
                        mac: MacAddr::parse(MAC).expect("mac"),
                        at_ms: clock::now_ms(),
                        arch: Some("uefi-arm64".into()),
                        vendor_class: None,
                    }],
                    ..Default::default()
                };
                store::commit_dhcp_batch(conn, &batch, clock::now_ms())
            })
            .await
            .expect("arch");
        let docs = app.state.boot_docs();
        let grub = tftp_text(
            docs.tftp_file(
                std::path::Path::new("boot/52:54:00:12:34:56.grub"),
                Some(Ipv4Addr::from(OWN_IP)),
            )
            .await,
        );
        assert!(!grub.lines().any(|l| l.starts_with("linux ")), "{grub}");
        assert!(
            grub.contains("built for amd64, and this machine is arm64"),
            "{grub}"
        );
        let (status, script) = get(&app, "/boot/52-54-00-12-34-56.ipxe", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            !script.lines().any(|l| l.starts_with("kernel ")),
            "{script}"
        );
        assert!(script.contains("this machine is arm64"), "{script}");
        let refused = events_of(&app, "boot.refused").await;
        assert!(
            refused.iter().all(|d| d.contains("built for amd64")) && refused.len() == 2,
            "{refused:?}"
        );
        let kernel = docs
            .image_file(MacAddr::parse(MAC).expect("mac"), "kernel")
            .await;
        assert!(matches!(kernel, Err(BootError::NotFound(_))), "{kernel:?}");
    }

    #[tokio::test]
    async fn an_http_boot_machine_gets_its_own_unified_kernel_image() {
        let stub = std::path::Path::new("/usr/lib/systemd/boot/efi/linuxx64.efi.stub");
        if !stub.is_file() {
            eprintln!(
                "skipped: {} is not installed (systemd-boot-efi)",
                stub.display()
            );
            return;
        }
        let app = app().await;
        set_mode(&app, Mode::Install).await;
        let token = token(&app).await;
        let response = app
            .router
            .clone()
            .oneshot(
                axum::http::Request::builder()
                    .uri("/boot/52-54-00-12-34-56.efi")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let sections = crate::uki::sections(&body).expect("a PE image");
        let section = |name: &str| {
            let s = sections.iter().find(|s| s.name() == name).expect(name);
            let start = s.raw_offset as usize;
            body[start..start + s.virtual_size as usize].to_vec()
        };
        assert_eq!(section(".linux"), b"KERNEL-BYTES-0123456789");
        assert_eq!(section(".initrd"), b"INITRD");
        let cmdline = String::from_utf8(section(".cmdline")).expect("utf-8");
        assert_eq!(
            cmdline,
            format!("console=ttyS0 rackboot.done=http://192.0.2.1:8080/done/{token}")
        );
        // It carries the done-URL: another address gets nothing.
        let stranger = app_from([192, 0, 2, 99]).await;
        set_mode(&stranger, Mode::Install).await;
        let (status, _) = get(&stranger, "/boot/52-54-00-12-34-56.efi", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // Booting locally there is no image: the firmware moves on.
        set_mode(&app, Mode::Local).await;
        let (status, _) = get(&app, "/boot/52-54-00-12-34-56.efi", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
