//! Body limits per route group, the image upload's checks, and the request id.

use crate::support::{
    Reply, TestApp, add_user, api, app, app_with, get, login, post_form, post_login, send, token,
};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use rackboot::auth::Role;
use rackboot::panel::FORM_BODY_LIMIT;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A body that sends nothing and never ends, while the returned sender lives: a
/// route that answers anyway has not waited for the body.
fn endless_body() -> (tokio::io::DuplexStream, Body) {
    let (sender, receiver) = tokio::io::duplex(64);
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(receiver));
    (sender, body)
}

async fn send_soon(app: &TestApp, request: Request<Body>) -> Reply {
    tokio::time::timeout(Duration::from_secs(10), send(app, request))
        .await
        .expect("answered without the body")
}

#[tokio::test]
async fn an_anonymous_form_over_the_limit_is_refused_at_once() {
    let app = app().await;
    // Declared too large: refused before a byte of the body is read.
    let (_sender, body) = endless_body();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::CONTENT_LENGTH, "400000000")
        .body(body)
        .expect("request");
    let reply = send_soon(&app, request).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("larger than this page accepts"),
        "{}",
        reply.body
    );
    // Undeclared: cut off at the limit.
    let form = format!("user=ann&password={}", "x".repeat(FORM_BODY_LIMIT));
    let request = Request::builder()
        .method(Method::POST)
        .uri("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .expect("request");
    let reply = send(&app, request).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    // A form under the limit still gets through to the login check.
    let reply = post_login(&app, "user=ann&password=wrong").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn signed_in_forms_and_api_json_have_the_small_limit_too() {
    let app = app().await;
    add_user(&app, "ann", Role::Operator).await;
    let (cookie, csrf) = login(&app, "ann").await;
    let keys = "k".repeat(FORM_BODY_LIMIT);
    let form =
        format!("csrf={csrf}&hostname=n1&ip=&exit_method=exit&rack=&position=&ssh_keys={keys}");
    let reply = send(
        &app,
        post_form("/machines/52-54-00-12-34-56/settings", Some(&cookie), &form),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    let op = token(&app, "ci", Role::Operator).await;
    let json = format!(r#"{{"mac":"52:54:00:cc:00:01","hostname":"{keys}"}}"#);
    let reply = send(
        &app,
        api(Method::POST, "/api/v1/machines", Some(&op), Some(&json)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
    assert_eq!(body["error"]["code"], 413, "{body}");
    assert_eq!(
        body["error"]["request_id"].as_str(),
        reply.headers["x-request-id"].to_str().ok()
    );
}

/// The id is the server's: a client's `x-request-id` is replaced, and the page, the
/// header and the API's error JSON carry the same one.
#[tokio::test]
async fn the_request_id_is_made_by_the_server_and_shown_with_errors() {
    let app = app().await;
    add_user(&app, "ann", Role::Operator).await;
    let (cookie, _) = login(&app, "ann").await;
    let mut request = post_form(
        "/machines/52-54-00-12-34-56/mode",
        Some(&cookie),
        "mode=rescue&csrf=forged",
    );
    request
        .headers_mut()
        .insert("x-request-id", "planted-by-client".parse().expect("value"));
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let id = reply.headers["x-request-id"].to_str().expect("ascii");
    assert_ne!(id, "planted-by-client");
    assert!(
        id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(
        reply.body.contains(&format!("<code>{id}</code>")),
        "{}",
        reply.body
    );
    assert!(!reply.body.contains("planted-by-client"));

    // Each request its own id.
    let again = send(&app, get("/machines", Some(&cookie))).await;
    assert_ne!(again.headers["x-request-id"], reply.headers["x-request-id"]);

    let op = token(&app, "ci", Role::Operator).await;
    for (token, uri, status) in [
        (
            Some(op.as_str()),
            "/api/v1/machines/not-a-mac",
            StatusCode::BAD_REQUEST,
        ),
        (
            Some(op.as_str()),
            "/api/v1/machines/52-54-00-99-99-99",
            StatusCode::NOT_FOUND,
        ),
        (None, "/api/v1/machines", StatusCode::UNAUTHORIZED),
    ] {
        let mut request = api(Method::GET, uri, token, None);
        request
            .headers_mut()
            .insert("x-request-id", "planted-by-client".parse().expect("value"));
        let reply = send(&app, request).await;
        assert_eq!(reply.status, status, "{uri}: {}", reply.body);
        let body: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
        let id = reply.headers["x-request-id"].to_str().expect("ascii");
        assert_ne!(id, "planted-by-client");
        assert_eq!(body["error"]["request_id"], id, "{body}");
        assert_eq!(body["error"]["code"], status.as_u16(), "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log of this test binary: one global subscriber (a scoped one misses events
/// when other tests log on other threads at the same time).
fn captured_log() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        captured
    })
}

/// The log line of an error page names the request it belongs to.
#[tokio::test]
async fn log_lines_carry_the_request_id() {
    let captured = captured_log();
    let app = app().await;
    add_user(&app, "ann", Role::Operator).await;
    let (cookie, _) = login(&app, "ann").await;
    let reply = send(
        &app,
        post_form(
            "/machines/52-54-00-12-34-56/mode",
            Some(&cookie),
            "mode=rescue&csrf=forged",
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let id = reply.headers["x-request-id"].to_str().expect("ascii");
    let log = String::from_utf8_lossy(&captured.0.lock().expect("lock")).into_owned();
    // Other tests log into the same buffer: this request's lines are found by its id.
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("id={id}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("error page shown") && l.contains("status=403")),
        "no error line for {id} in:\n{log}"
    );
}

/// A multipart image upload; `token` first when given, then the image's fields.
fn upload_body(token: Option<&str>, name: &str, kernel: &[u8]) -> (String, Vec<u8>) {
    let boundary = "UpLoAd";
    let mut body = Vec::new();
    let mut field = |name: &str, file: Option<&str>, value: &[u8]| {
        let file = file.map_or(String::new(), |f| format!("; filename=\"{f}\""));
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    };
    if let Some(token) = token {
        field("csrf", None, token.as_bytes());
    }
    field("name", None, name.as_bytes());
    field("kernel", Some("vmlinuz"), kernel);
    field("initrd", Some("initrd.img"), b"INITRD");
    field("cmdline", None, b"console=ttyS0");
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn upload(cookie: Option<&str>, content_type: &str, body: Body) -> Request<Body> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri("/images")
        .header(header::CONTENT_TYPE, content_type);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(body).expect("request")
}

async fn image_exists(app: &TestApp, name: &str) -> bool {
    let name = name.to_string();
    app.state
        .store
        .call(move |conn| rackboot::store::get_image(conn, &name))
        .await
        .expect("query")
        .is_some()
}

/// Nothing left behind by refused uploads: no staging directory, no image files.
fn no_leftovers(app: &TestApp, name: &str) {
    let uploads = app.state.data_dir.join("uploads");
    let staged = std::fs::read_dir(&uploads).map_or(0, |d| d.count());
    assert_eq!(staged, 0, "staging left in {}", uploads.display());
    assert!(!app.state.data_dir.join("images").join(name).exists());
}

#[tokio::test]
async fn the_image_upload_checks_session_and_token_before_the_files() {
    let app = app().await;
    add_user(&app, "ann", Role::Operator).await;
    add_user(&app, "vic", Role::Viewer).await;
    let (cookie, csrf) = login(&app, "ann").await;

    // The page's form sends the token first, to /images without a query string.
    let page = send(&app, get("/images", Some(&cookie))).await;
    let form = page
        .body
        .split(r#"enctype="multipart/form-data""#)
        .nth(1)
        .expect("upload form");
    let first = form.find("name=\"").expect("a field");
    assert!(
        form[first..].starts_with(r#"name="csrf""#),
        "token first: {form}"
    );
    assert!(
        page.body
            .contains(r#"<form method="post" action="/images" enctype"#)
    );

    // Anonymous, or a viewer: refused without waiting for the body.
    for who in [None, Some(login(&app, "vic").await.0)] {
        let (_sender, body) = endless_body();
        let reply = send_soon(
            &app,
            upload(who.as_deref(), "multipart/form-data; boundary=x", body),
        )
        .await;
        let expected = if who.is_some() {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::SEE_OTHER
        };
        assert_eq!(reply.status, expected, "{}", reply.body);
    }
    // A wrong token in the header: refused before the body too.
    let (_sender, body) = endless_body();
    let mut request = upload(Some(&cookie), "multipart/form-data; boundary=x", body);
    request
        .headers_mut()
        .insert("x-csrf-token", "forged".parse().expect("value"));
    assert_eq!(send_soon(&app, request).await.status, StatusCode::FORBIDDEN);

    // No token, or a wrong one, as the first field: nothing stored.
    for token in [None, Some("forged")] {
        let (content_type, body) = upload_body(token, "nope", b"KERNEL");
        let reply = send(&app, upload(Some(&cookie), &content_type, Body::from(body))).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
        assert!(reply.body.contains("did not come from this panel"));
    }
    assert!(!image_exists(&app, "nope").await);
    no_leftovers(&app, "nope");

    // The token as the first field (the browser's form), or in the header (scripts).
    let (content_type, body) = upload_body(Some(&csrf), "alpine", b"KERNEL-ALPINE");
    let reply = send(&app, upload(Some(&cookie), &content_type, Body::from(body))).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert!(
        reply.headers[header::LOCATION]
            .to_str()
            .expect("ascii")
            .contains("Image%20alpine%20added"),
    );
    let (content_type, body) = upload_body(None, "fedora", b"KERNEL-FEDORA");
    let mut request = upload(Some(&cookie), &content_type, Body::from(body));
    request
        .headers_mut()
        .insert("x-csrf-token", csrf.parse().expect("value"));
    assert_eq!(send(&app, request).await.status, StatusCode::SEE_OTHER);
    assert!(image_exists(&app, "alpine").await && image_exists(&app, "fedora").await);
    let kernel = app.state.data_dir.join("images/alpine/kernel");
    assert_eq!(std::fs::read(kernel).expect("kernel"), b"KERNEL-ALPINE");
}

#[tokio::test]
async fn image_uploads_stop_at_the_size_cap_and_the_free_space_floor() {
    let app = app_with(|state| state.uploads.max_bytes = 4096).await;
    add_user(&app, "ann", Role::Operator).await;
    let (cookie, csrf) = login(&app, "ann").await;
    // Declared over the cap: refused at once.
    let (_sender, body) = endless_body();
    let mut request = upload(Some(&cookie), "multipart/form-data; boundary=x", body);
    request
        .headers_mut()
        .insert(header::CONTENT_LENGTH, "5000".parse().expect("value"));
    let reply = send_soon(&app, request).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    assert!(reply.body.contains("larger than 4.0 KiB"), "{}", reply.body);
    // Undeclared: cut off once past the cap, and nothing kept.
    let (content_type, body) = upload_body(Some(&csrf), "big", &[b'k'; 8192]);
    let reply = send(&app, upload(Some(&cookie), &content_type, Body::from(body))).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    assert!(reply.body.contains("larger than 4.0 KiB"), "{}", reply.body);
    assert!(!image_exists(&app, "big").await);
    no_leftovers(&app, "big");
    // Under the cap: stored.
    let (content_type, body) = upload_body(Some(&csrf), "small", b"KERNEL");
    let reply = send(&app, upload(Some(&cookie), &content_type, Body::from(body))).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);

    // No filesystem has this much free: every upload would go below the floor.
    let app = app_with(|state| state.uploads.min_free_bytes = u64::MAX).await;
    add_user(&app, "ann", Role::Operator).await;
    let (cookie, csrf) = login(&app, "ann").await;
    let (content_type, body) = upload_body(Some(&csrf), "full", b"KERNEL");
    let reply = send(&app, upload(Some(&cookie), &content_type, Body::from(body))).await;
    assert_eq!(
        reply.status,
        StatusCode::INSUFFICIENT_STORAGE,
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("Not enough free space"),
        "{}",
        reply.body
    );
    assert!(!image_exists(&app, "full").await);
    no_leftovers(&app, "full");
}

/// The import preview takes a few MiB, no more: a larger declared body is refused at
/// once, and its token is the first multipart field as for images.
#[tokio::test]
async fn the_import_preview_has_its_own_limit() {
    let app = app().await;
    add_user(&app, "ann", Role::Operator).await;
    let (cookie, _) = login(&app, "ann").await;
    let (_sender, body) = endless_body();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/import")
        .header(header::COOKIE, &cookie)
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=x")
        .header(
            header::CONTENT_LENGTH,
            (rackboot::panel::IMPORT_BODY_LIMIT + 1).to_string(),
        )
        .body(body)
        .expect("request");
    let reply = send_soon(&app, request).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
}

fn multipart_head(csrf: &str, file_name: &str) -> Vec<u8> {
    format!(
        "--x\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes()
}

fn import_upload(cookie: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/import")
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=x")
        .body(body)
        .expect("request")
}

/// An endless file field: the preview stops reading at the file limit and answers
/// 413 with the limit on the page, while the body is still coming (it never held
/// more than the limit).
#[tokio::test]
async fn the_import_preview_stops_reading_at_the_file_limit() {
    use tokio::io::AsyncReadExt as _;
    let app = app().await;
    add_user(&app, "ann", Role::Operator).await;
    let (cookie, csrf) = login(&app, "ann").await;
    let head = std::io::Cursor::new(multipart_head(&csrf, "huge.csv"));
    let endless = head.chain(tokio::io::repeat(b'a'));
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(endless));
    let reply = send_soon(&app, import_upload(&cookie, body)).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    assert!(
        reply
            .body
            .contains("larger than 20971520 bytes (20 MiB), the most that is read"),
        "{}",
        reply.body
    );
}

/// A sheet claiming every cell of a worksheet is refused on the page with what it
/// claimed; nothing is staged.
#[tokio::test]
async fn the_import_preview_refuses_a_sheet_claiming_too_much() {
    use std::io::Write as _;
    let app = app().await;
    add_user(&app, "ann", Role::Operator).await;
    let (cookie, csrf) = login(&app, "ann").await;
    let mut workbook = rust_xlsxwriter::Workbook::new();
    workbook
        .add_worksheet()
        .write_string(0, 0, "mac")
        .expect("write");
    let normal = workbook.save_to_buffer().expect("save");
    let mut source = zip::ZipArchive::new(std::io::Cursor::new(normal)).expect("zip");
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for index in 0..source.len() {
        let entry = source.by_index_raw(index).expect("entry");
        if entry.name().expect("name") != "xl/worksheets/sheet1.xml" {
            out.raw_copy_file(entry).expect("copy");
        }
    }
    out.start_file(
        "xl/worksheets/sheet1.xml",
        zip::write::SimpleFileOptions::default(),
    )
    .expect("start");
    out.write_all(
        br#"<worksheet><dimension ref="A1:XFD1048576"/><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>mac</t></is></c></row><row r="1048576"><c r="XFD1048576"><v>1</v></c></row></sheetData></worksheet>"#,
    )
    .expect("write");
    let xlsx = out.finish().expect("finish").into_inner();
    let mut body = multipart_head(&csrf, "hostile.xlsx");
    body.extend_from_slice(&xlsx);
    body.extend_from_slice(b"\r\n--x--\r\n");
    let reply = send_soon(&app, import_upload(&cookie, Body::from(body))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(
        reply
            .body
            .contains("the sheet claims the range A1:XFD1048576"),
        "{}",
        reply.body
    );
}
