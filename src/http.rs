//! The HTTP server (axum): per-machine iPXE scripts, the kernel and initrd of each
//! machine's image (with Range requests), and the iPXE binaries for UEFI HTTP boot.

use crate::clock;
use crate::mac::MacAddr;
use crate::script::Scripts;
use crate::store::{self, Image, Machine, Store};
use askama::Template;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use minijinja::context;
use std::path::PathBuf;
use std::sync::Arc;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub scripts: Arc<Scripts>,
    /// Base URL machines reach rackboot at, without a trailing slash.
    pub base_url: String,
}

pub fn router(state: AppState, ipxe_dir: PathBuf) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/boot/{script}", get(boot_script))
        .route("/boot/{mac}/{file}", get(image_file))
        .nest_service("/ipxe", ServeDir::new(ipxe_dir))
        .with_state(state)
}

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage {
    version: &'static str,
}

async fn index() -> Response {
    let page = IndexPage {
        version: env!("CARGO_PKG_VERSION"),
    };
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!("index page: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn plain(status: StatusCode, body: String) -> Response {
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

async fn lookup(store: &Store, mac: MacAddr) -> Result<Option<(Machine, Option<Image>)>, Response> {
    store
        .call(move |conn| {
            let Some(machine) = store::get_machine(conn, mac)? else {
                return Ok(None);
            };
            let image = match &machine.image {
                Some(name) => store::get_image(conn, name)?,
                None => None,
            };
            Ok(Some((machine, image)))
        })
        .await
        .map_err(|e| {
            tracing::error!(%mac, "inventory unavailable: {e}");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "inventory unavailable\n".into(),
            )
        })
}

async fn boot_script(State(app): State<AppState>, Path(script): Path<String>) -> Response {
    let Some(mac_text) = script.strip_suffix(".ipxe") else {
        return plain(StatusCode::NOT_FOUND, "not found\n".into());
    };
    let mac = match MacAddr::parse(mac_text) {
        Ok(mac) => mac,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let found = match lookup(&app.store, mac).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let machine_url = format!("{}/boot/{}", app.base_url, mac.dashed());
    let (template, ctx, image_name) = match &found {
        None => ("unknown.ipxe", context! { mac => mac.to_string() }, None),
        Some((machine, Some(image))) => (
            "boot.ipxe",
            context! {
                mac => mac.to_string(),
                hostname => machine.hostname.clone(),
                ip => machine.ip.map(|ip| ip.to_string()),
                image => context! { name => image.name.clone(), cmdline => image.cmdline.clone() },
                kernel_url => format!("{machine_url}/kernel"),
                initrd_url => format!("{machine_url}/initrd"),
                base_url => app.base_url,
            },
            Some(image.name.clone()),
        ),
        Some((machine, None)) => (
            "local.ipxe",
            context! { mac => mac.to_string(), hostname => machine.hostname.clone() },
            None,
        ),
    };
    let scripts = Arc::clone(&app.scripts);
    let rendered = tokio::task::spawn_blocking(move || scripts.render(template, ctx)).await;
    let script = match rendered {
        Ok(Ok(script)) => script,
        Ok(Err(e)) => {
            tracing::error!(%mac, "iPXE script not rendered: {e}");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "script error; see the rackboot log\n".into(),
            );
        }
        Err(e) => {
            tracing::error!(%mac, "script task failed: {e}");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n".into());
        }
    };
    app.store.record_event(
        clock::now_ms(),
        Some(mac),
        "http.script",
        format!(
            "template={template} image={}",
            image_name.as_deref().unwrap_or("-")
        ),
    );
    plain(StatusCode::OK, script)
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
    let image = match lookup(&app.store, mac).await {
        Ok(Some((_, Some(image)))) => image,
        Ok(_) => return plain(StatusCode::NOT_FOUND, format!("{mac} has no image\n")),
        Err(response) => return response,
    };
    let path = match file.as_str() {
        "kernel" => image.kernel_path.clone(),
        "initrd" => image.initrd_path.clone(),
        _ => return plain(StatusCode::NOT_FOUND, "not found\n".into()),
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewMachine;
    use axum::body::Body;
    use http_body_util::BodyExt;

    struct TestApp {
        router: Router,
        store: Store,
        _dir: tempfile::TempDir,
    }

    const MAC: &str = "52:54:00:12:34:56";

    async fn app() -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_in_memory().expect("store");
        let kernel = dir.path().join("kernel");
        let initrd = dir.path().join("initrd");
        std::fs::write(&kernel, b"KERNEL-BYTES-0123456789").expect("write");
        std::fs::write(&initrd, b"INITRD").expect("write");
        std::fs::write(dir.path().join("snponly.efi"), b"EFI").expect("write");
        let image = Image {
            name: "debian".into(),
            kernel_path: kernel.display().to_string(),
            kernel_sha256: String::new(),
            initrd_path: initrd.display().to_string(),
            initrd_sha256: String::new(),
            cmdline: "console=ttyS0".into(),
        };
        store
            .call(move |conn| {
                store::put_image(conn, &image, 0)?;
                store::add_machine(
                    conn,
                    &NewMachine {
                        mac: MacAddr::parse(MAC).ok(),
                        hostname: Some("node1".into()),
                        image: Some("debian".into()),
                        ip: None,
                    },
                    0,
                )?;
                store::add_machine(
                    conn,
                    &NewMachine {
                        mac: MacAddr::parse("52:54:00:00:00:02").ok(),
                        ..NewMachine::default()
                    },
                    0,
                )
            })
            .await
            .expect("seed");
        let state = AppState {
            store: store.clone(),
            scripts: Arc::new(Scripts::new(dir.path().join("ipxe"))),
            base_url: "http://192.0.2.1:8080".into(),
        };
        TestApp {
            router: router(state, dir.path().to_path_buf()),
            store,
            _dir: dir,
        }
    }

    async fn get(app: &TestApp, uri: &str, range: Option<&str>) -> (StatusCode, String) {
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

    #[tokio::test]
    async fn script_for_every_mac_spelling() {
        let app = app().await;
        for spelling in [
            "52:54:00:12:34:56",
            "52-54-00-12-34-56",
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
        }
        let events = app
            .store
            .call(|conn| store::list_events(conn, MacAddr::parse(MAC).ok(), 100))
            .await
            .expect("events");
        assert!(events.iter().any(|e| e.kind == "http.script"));
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
        assert!(body.contains("no image assigned"), "{body}");
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
}
