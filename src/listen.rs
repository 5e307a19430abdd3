//! The accept loop of every HTTP listener (boot files, and the panel's own address,
//! plain or TLS): each connection served by hyper with a header-read timeout, its
//! socket wrapped in an idle timeout (no byte moved either way), and at most
//! `max_connections` of them at once.
//!
//! `axum::serve` has none of these: idle and dribbling clients stayed open for ever,
//! and 300 of them used up the file descriptors TFTP needs too.

use crate::clock;
use crate::config::ConnectionLimits;
use crate::throttle::Throttle;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

/// Serves `app` on `listener` until the process ends; `name` is the config section
/// the listener comes from, for the logs. With `tls`, each connection's handshake must
/// finish within the header-read timeout.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    name: &'static str,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut at_cap = Throttle::new(1, 60_000);
    let mut accept_failed = Throttle::new(1, 10_000);
    loop {
        // At the cap we stop accepting, so further connections wait in the kernel's
        // backlog and are served as soon as one ends. Accepting and closing them
        // would instead fail a booting machine outright (iPXE treats a reset as a
        // failed boot) and invite clients to retry in a tight loop; the backlog
        // holds them, and beyond it the kernel drops SYNs, which clients retry with
        // backoff.
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if let Some(left_out) = at_cap.hit(clock::now_ms()) {
                    tracing::warn!(
                        listener = name,
                        max_connections = limits.max_connections,
                        left_out,
                        "connection cap reached: new connections wait until one ends \
                         (http.max_connections)"
                    );
                }
                match slots.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    // The semaphore is never closed.
                    Err(_) => return Ok(()),
                }
            }
        };
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                if !is_connection_error(&e) {
                    if let Some(left_out) = accept_failed.hit(clock::now_ms()) {
                        tracing::error!(listener = name, left_out, "accept failed: {e}");
                    }
                    // Most likely out of file descriptors: give other connections
                    // time to end rather than spin (what hyper and axum do).
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                continue;
            }
        };
        tokio::spawn(serve_connection(
            stream,
            remote,
            app.clone(),
            limits,
            tls.clone(),
            permit,
        ));
    }
}

/// Errors of one connection that was already gone: not the listener's problem.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One connection, holding its slot (`_permit`) until it ends.
async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    _permit: OwnedSemaphorePermit,
) {
    // A client that connects and says nothing gets the header-read timeout, not the
    // longer idle one: hyper starts its header timer only at the first byte.
    let io =
        IdleTimeout::new(stream, limits.idle_timeout).first_byte_within(limits.header_read_timeout);
    let result = match tls {
        None => serve_http(io, remote, app, limits).await,
        Some(acceptor) => {
            match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(io)).await {
                Ok(Ok(tls_stream)) => serve_http(tls_stream, remote, app, limits).await,
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err("TLS handshake timed out".into()),
            }
        }
    };
    if let Err(e) = result {
        // Timeouts, resets and bad requests are the client's business.
        tracing::debug!(%remote, "connection ended: {e}");
    }
}

async fn serve_http<I>(
    io: I,
    remote: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // What `into_make_service_with_connect_info` would insert: the boot routes decide
    // who may fetch secrets by the client's address.
    let service = tower::ServiceExt::<axum::extract::Request>::map_request(
        app,
        move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            request.map(Body::new)
        },
    );
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
        .await
}

/// A byte stream that fails with `TimedOut` once no byte has moved either way for
/// its timeout. Progress, not duration, keeps it open: a slow download that keeps
/// moving is never cut, however long it takes.
#[derive(Debug)]
pub struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    /// How long the current quiet spell may last: `idle`, or until the first byte
    /// read, the first-byte window.
    allowed: Duration,
    read_any: bool,
    last_progress: Instant,
    /// Armed at `last_progress + allowed` or earlier; re-armed lazily when it fires,
    /// so moving bytes costs a clock read, not a timer reset.
    timer: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    pub fn new(inner: S, idle: Duration) -> Self {
        let now = Instant::now();
        IdleTimeout {
            inner,
            idle,
            allowed: idle,
            read_any: false,
            last_progress: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    /// Until the first byte is read, the connection may stay quiet only this long.
    pub fn first_byte_within(mut self, window: Duration) -> Self {
        self.allowed = window;
        self.timer.as_mut().reset(self.last_progress + window);
        self
    }

    fn progressed(&mut self, read: bool) {
        self.last_progress = Instant::now();
        if read && !self.read_any {
            self.read_any = true;
            self.allowed = self.idle;
        }
    }

    /// Called when the inner stream is not ready: an error once the quiet spell has
    /// lasted too long, else pending with the timer armed to wake this task.
    fn poll_quiet(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let deadline = self.last_progress + self.allowed;
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            ready!(self.timer.as_mut().poll(cx));
            if Instant::now() >= self.last_progress + self.allowed {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no byte moved for {:?}", self.allowed),
                ));
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.progressed(true);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_quiet(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.progressed(false);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_quiet(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.progressed(false);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_quiet(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.poll_quiet(cx).map(Err),
            done => done,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.poll_quiet(cx).map(Err),
            done => done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_fails_after_the_idle_timeout() {
        let (server, _client) = tokio::io::duplex(1024);
        let mut io = IdleTimeout::new(server, IDLE);
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let err = io.read(&mut buf).await.expect_err("times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_byte_every_few_seconds_keeps_it_open_past_the_timeout() {
        let (server, mut client) = tokio::io::duplex(1024);
        let mut io = IdleTimeout::new(server, IDLE);
        let trickle = tokio::spawn(async move {
            for _ in 0..60 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                client.write_all(b"x").await.expect("write");
            }
            client
        });
        let started = Instant::now();
        let mut buf = [0u8; 1];
        for _ in 0..60 {
            io.read_exact(&mut buf).await.expect("still open");
        }
        assert_eq!(started.elapsed(), Duration::from_secs(300));
        // Then quiet: closed a full idle period after the last byte.
        let _client = trickle.await.expect("trickle");
        let err = io.read(&mut buf).await.expect_err("times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(300) + IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_keeps_a_download_open() {
        // The server writes; the client takes 64 bytes every 10 s, so the writer is
        // blocked most of the time yet moving.
        let (server, mut client) = tokio::io::duplex(64);
        let mut io = IdleTimeout::new(server, IDLE);
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 64];
            while got < 64 * 30 {
                tokio::time::sleep(Duration::from_secs(10)).await;
                got += client.read(&mut buf).await.expect("read");
            }
            got
        });
        io.write_all(&[7u8; 64 * 30]).await.expect("not cut");
        assert_eq!(reader.await.expect("reader"), 64 * 30);
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_writer_fails_after_the_idle_timeout() {
        let (server, _client) = tokio::io::duplex(64);
        let mut io = IdleTimeout::new(server, IDLE);
        let started = Instant::now();
        let err = io.write_all(&[0u8; 1024]).await.expect_err("times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_before_the_first_byte_gets_the_shorter_window() {
        let (server, _client) = tokio::io::duplex(64);
        let mut io = IdleTimeout::new(server, IDLE).first_byte_within(Duration::from_secs(10));
        let started = Instant::now();
        let mut buf = [0u8; 1];
        let err = io.read(&mut buf).await.expect_err("times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));

        // Once a byte came, the full idle timeout applies.
        let (server, mut client) = tokio::io::duplex(64);
        let mut io = IdleTimeout::new(server, IDLE).first_byte_within(Duration::from_secs(10));
        client.write_all(b"G").await.expect("write");
        io.read_exact(&mut buf).await.expect("first byte");
        let started = Instant::now();
        let err = io.read(&mut buf).await.expect_err("times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), IDLE);
    }
}
