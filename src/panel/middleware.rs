//! Layers around every panel and API response: the request id, which the server makes
//! (a client's `x-request-id` is dropped, never trusted) and which error pages, error
//! JSON, the response header and every log line of the request carry; and the
//! security headers (CSP, nosniff, frame and referrer policies).

use axum::Router;
use axum::extract::Request;
use axum::http::{Extensions, HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps `routes` in the layers every panel and API response gets, outermost first.
pub(super) fn around<S: Clone + Send + Sync + 'static>(routes: Router<S>) -> Router<S> {
    routes.layer(
        ServiceBuilder::new()
            // Before the id is set: tower-http keeps an id the request already has.
            .layer(middleware::map_request(drop_client_request_id))
            .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeId))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    // Errors are logged where they happen (and error pages by
                    // `errors`), with this span; a second line per 5xx adds nothing.
                    .on_failure(()),
            )
            .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
            .layer(middleware::from_fn(security_headers)),
    )
}

/// The id of the request being answered, as error pages and error JSON show it.
pub fn request_id(extensions: &Extensions) -> String {
    extensions
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-")
        .to_string()
}

/// Twelve hex digits: short enough to read out over the phone, and unique enough to
/// find one request in a log.
#[derive(Clone, Copy)]
struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&hex::encode(rand::random::<[u8; 6]>()))
            .ok()
            .map(RequestId::new)
    }
}

/// A client's id would let it plant misleading ids in the log, or reuse another's.
async fn drop_client_request_id(mut request: Request) -> Request {
    request.headers_mut().remove(X_REQUEST_ID);
    request
}

/// Every log line of a request names it; the query string stays out of the log.
fn request_span(request: &Request) -> tracing::Span {
    tracing::info_span!(
        "request",
        id = %request_id(request.extensions()),
        method = %request.method(),
        path = %request.uri().path(),
    )
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}
