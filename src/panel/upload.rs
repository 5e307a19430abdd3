//! The image upload's body, the one large body the panel takes. `ImageUpload` checks,
//! before reading any of it, the session and role, the declared size against the
//! cap and the data directory's free space against the floor (`AppState::uploads`);
//! then the CSRF token (a header, or the first field). While the files stream to
//! disk the body is counted and the free space looked at again every few MiB, so a
//! body without a `Content-Length`, or a disk filled by something else meanwhile,
//! is cut off too.

use super::csrf::checked_multipart;
use super::errors::PanelError;
use super::session::Changer;
use crate::auth::Principal;
use crate::http::{AppState, UploadLimits};
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::ReaderStream;

/// How often, in bytes received, the free space is looked at again.
const FREE_SPACE_CHECK_EVERY: u64 = 8 << 20;

/// Chunks handed on to the multipart parser.
const CHUNK: usize = 64 << 10;

/// An upload from a user who may change things, its token checked, within the limits.
pub struct ImageUpload {
    pub user: Principal,
    pub multipart: Multipart,
    /// Set when the limits cut the body off; the multipart error that follows says
    /// only that the stream failed.
    pub refusal: Refusal,
}

#[derive(Clone, Default)]
pub struct Refusal(Arc<Mutex<Option<PanelError>>>);

impl Refusal {
    pub fn take(&self) -> Option<PanelError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn set(&self, error: PanelError) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }
}

impl FromRequest<AppState> for ImageUpload {
    type Rejection = Response;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let Changer(user) = Changer::from_request_parts(&mut parts, app).await?;
        let limits = app.uploads;
        let declared = content_length(&parts.headers);
        if declared.is_some_and(|len| len > limits.max_bytes) {
            return Err(too_large(&limits).into_response());
        }
        // The declared size must fit above the floor; without one, the floor itself.
        let needed = declared.unwrap_or(0).saturating_add(limits.min_free_bytes);
        free_space_left(&app.data_dir, needed, &limits).map_err(IntoResponse::into_response)?;
        let refusal = Refusal::default();
        let guarded = Guarded {
            body,
            pending: Bytes::new(),
            received: 0,
            next_check: FREE_SPACE_CHECK_EVERY,
            limits,
            dir: app.data_dir.clone(),
            refusal: refusal.clone(),
        };
        let body = Body::from_stream(ReaderStream::with_capacity(guarded, CHUNK));
        let multipart = checked_multipart(&user, Request::from_parts(parts, body))
            .await
            // Cut off while the token was read: the limit is the reason.
            .map_err(|e| refusal.take().map_or(e, IntoResponse::into_response))?;
        Ok(ImageUpload {
            user,
            multipart,
            refusal,
        })
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn too_large(limits: &UploadLimits) -> PanelError {
    PanelError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "The upload is larger than {}, the most an image upload may be.",
            size(limits.max_bytes)
        ),
    )
}

/// Refuses unless `needed` bytes are free where `dir` is.
fn free_space_left(dir: &Path, needed: u64, limits: &UploadLimits) -> Result<(), PanelError> {
    match crate::limits::free_bytes(dir) {
        Ok(free) if free >= needed => Ok(()),
        Ok(free) => Err(PanelError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "Not enough free space for this upload: {} free in the data directory, and \
                 uploads leave at least {}.",
                size(free),
                size(limits.min_free_bytes)
            ),
        )),
        // Fail closed: an upload that may fill the disk the database lives on is worse
        // than one refused.
        Err(e) => Err(PanelError::internal(format!(
            "free space of {}: {e}",
            dir.display()
        ))),
    }
}

fn size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    UNITS
        .iter()
        .find(|(unit, _)| bytes >= *unit)
        .map_or(format!("{bytes} bytes"), |(unit, name)| {
            format!("{:.1} {name}", bytes as f64 / *unit as f64)
        })
}

/// The request body, counted against the cap and watched against the floor as the
/// multipart parser reads it.
struct Guarded {
    body: Body,
    /// Received but not yet handed on.
    pending: Bytes,
    received: u64,
    next_check: u64,
    limits: UploadLimits,
    dir: PathBuf,
    refusal: Refusal,
}

impl Guarded {
    fn check(&mut self) -> Result<(), PanelError> {
        if self.received > self.limits.max_bytes {
            return Err(too_large(&self.limits));
        }
        if self.received >= self.next_check {
            self.next_check = self.received + FREE_SPACE_CHECK_EVERY;
            free_space_left(&self.dir, self.limits.min_free_bytes, &self.limits)?;
        }
        Ok(())
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() {
            let Some(frame) = ready!(Pin::new(&mut this.body).poll_frame(cx)) else {
                return Poll::Ready(Ok(())); // the end of the body
            };
            let frame = frame.map_err(io::Error::other)?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers: nothing to store
            };
            this.received += data.len() as u64;
            if let Err(refused) = this.check() {
                let why = refused.message.clone();
                tracing::warn!(received = this.received, "image upload cut off: {why}");
                this.refusal.set(refused);
                return Poll::Ready(Err(io::Error::other(why)));
            }
            this.pending = data;
        }
        let n = buf.remaining().min(this.pending.len());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(size(512), "512 bytes");
        assert_eq!(size(64 << 10), "64.0 KiB");
        assert_eq!(size(3 << 29), "1.5 GiB");
    }

    #[test]
    fn the_data_directory_has_some_free_space() {
        let free =
            crate::limits::free_bytes(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("statvfs");
        assert!(free > 0);
        assert!(crate::limits::free_bytes(Path::new("/no/such/dir")).is_err());
    }
}
