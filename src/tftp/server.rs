//! The sockets: one task reads requests on the listening port and judges them;
//! each accepted read gets a task (not a thread) with a socket of its own (its
//! transfer ID), which feeds datagrams and timer ticks to its `Transfer` and sends
//! what it returns. Everything that decides lives in `request`, `options` and
//! `transfer`.

use super::SharedBytes;
use super::files::{Files, OpenError, Opened, Source};
use super::options::{MAX_BLKSIZE, MIN_BLKSIZE};
use super::packet::{self, ErrorCode};
use super::request::{self, ReadRequest};
use super::transfer::{Handled, Outcome, Send, Transfer};
use crate::clock;
use crate::mac::MacAddr;
use crate::secrets::{Evidence, Rule};
use crate::service::boot::{BootDocs, BootError, TftpFile};
use crate::store::Store;
use crate::throttle::Throttle;
use std::collections::HashSet;
use std::future::Future as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Instant;
use tokio::io::Interest;
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::net::UdpSocket;

pub struct Settings {
    pub listen: SocketAddr,
    pub ipxe_dir: PathBuf,
    pub root: Option<PathBuf>,
    /// Who may have a machine's own files (`root/<mac>/`).
    pub secrets: Rule,
    /// Transfers at once at most: each holds two sockets (file descriptors).
    pub max_transfers: usize,
    /// rackboot's own files (shim, grub and its configurations, kernels for grub).
    pub boot: Option<BootDocs>,
}

struct Shared {
    files: Files,
    store: Store,
    secrets: Rule,
    /// Clients with a transfer running: a retransmitted RRQ from the same address
    /// and port must not start a second transfer of the same file.
    active: Mutex<HashSet<SocketAddr>>,
    max_transfers: usize,
    boot: Option<BootDocs>,
}

/// Removes the client from `active` when its transfer task ends, however it ends.
struct Active {
    shared: Arc<Shared>,
    client: SocketAddr,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.shared
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.client);
    }
}

/// Binds the listening socket and serves on a thread of its own running a
/// single-threaded tokio runtime: a lockstep transfer is one round trip per block,
/// and waking the transfer's task on the thread that polled the socket, with no
/// hand-over between worker threads, is what keeps that round trip short. HTTP keeps
/// the main runtime. Returns once bound, so a bind failure is reported at start.
pub fn start(settings: Settings, store: Store) -> io::Result<SocketAddr> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("rackboot-tftp".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                // Sockets and timers only: no signal or child-process driver to
                // visit on every park.
                .enable_io()
                .enable_time()
                // File lookups and first reads: short, and queued rather than given
                // a thread each when a storm asks at once.
                .max_blocking_threads(4)
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let socket = match bind_listener(settings.listen) {
                    Ok(socket) => socket,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(socket.local_addr());
                let shared = Arc::new(Shared {
                    files: Files::new(settings.ipxe_dir, settings.root),
                    store,
                    secrets: settings.secrets,
                    active: Mutex::new(HashSet::new()),
                    max_transfers: settings.max_transfers,
                    boot: settings.boot,
                });
                listen(socket, shared).await;
            });
        })?;
    ready_rx
        .recv()
        .map_err(|_| io::Error::other("TFTP thread ended before binding"))?
}

fn bind_listener(listen: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if listen.is_ipv4() {
        // The address each request was sent to: the transfer answers from it, as
        // clients check (a host with several addresses would otherwise answer from
        // whichever the route picks).
        set_int_option(socket.as_raw_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
    }
    socket.bind(&listen.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// How many refusals are logged per `REFUSAL_LOG_WINDOW_MS` before the rest are only
/// counted: a flood of bad datagrams must not become a flood of log lines.
const REFUSAL_LOG_BURST: u32 = 20;
const REFUSAL_LOG_WINDOW_MS: i64 = 10_000;

async fn listen(socket: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65536];
    let mut reply = Vec::with_capacity(128);
    let mut refusals = Throttle::new(REFUSAL_LOG_BURST, REFUSAL_LOG_WINDOW_MS);
    loop {
        let (len, from, local) = match recv_with_local(&socket, &mut buf).await {
            Ok(received) => received,
            Err(e) => {
                // Nothing here is fatal to the server; do not spin on a bad state.
                tracing::warn!("TFTP receive failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(bytes) = buf.get(..len) else {
            continue;
        };
        match request::judge(bytes) {
            Ok(request) => {
                if is_active(&shared, from) {
                    // Likely a retransmitted request. But a client that ended its
                    // transfer (UEFI's tsize probe ends with ERROR 8) and asks again
                    // from the same port must not be ignored: let the transfer tasks
                    // run first, so one whose ERROR is already here is gone.
                    tokio::task::yield_now().await;
                }
                accept(&shared, request, from, local);
            }
            Err(refusal) => {
                let logged = refusals.hit(crate::clock::now_ms());
                match (&refusal, logged) {
                    (_, None) => {}
                    (request::Refusal::NotARequest(_), Some(_)) => {
                        tracing::debug!(client = %from, "TFTP packet dropped: {refusal}");
                    }
                    (request::Refusal::Path(_), Some(left_out)) => {
                        tracing::warn!(client = %from, left_out, "TFTP request refused: {refusal}");
                    }
                    (_, Some(left_out)) => {
                        tracing::info!(client = %from, left_out, "TFTP request refused: {refusal}")
                    }
                }
                if let Some((code, message)) = refusal.error() {
                    packet::encode_error(code, message, &mut reply);
                    if let Err(e) = socket.send_to(&reply, from).await {
                        tracing::debug!(client = %from, "TFTP error reply not sent: {e}");
                    }
                }
            }
        }
    }
}

fn is_active(shared: &Shared, client: SocketAddr) -> bool {
    shared
        .active
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&client)
}

fn accept(shared: &Arc<Shared>, request: ReadRequest, client: SocketAddr, local: Option<IpAddr>) {
    {
        let mut active = shared.active.lock().unwrap_or_else(PoisonError::into_inner);
        if active.contains(&client) {
            tracing::debug!(%client, "TFTP request repeated while its transfer runs: ignored");
            return;
        }
        if active.len() >= shared.max_transfers {
            // Dropped, not refused: firmware retries a request that got no answer,
            // but may give up on one that got an error.
            tracing::warn!(
                %client,
                limit = shared.max_transfers,
                "TFTP busy: request dropped"
            );
            return;
        }
        active.insert(client);
    }
    let guard = Active {
        shared: Arc::clone(shared),
        client,
    };
    tokio::spawn(serve_read(guard, request, local));
}

async fn serve_read(guard: Active, request: ReadRequest, local: Option<IpAddr>) {
    let started = Instant::now();
    let client = guard.client;
    let shared = &guard.shared;
    let file = request.path.display().to_string();
    let sockets = match Sockets::bind(local, client) {
        Ok(sockets) => sockets,
        Err(e) => {
            tracing::warn!(%client, file, "TFTP: no socket for the transfer: {e}");
            return;
        }
    };
    let (mac, opened) = match open_for(shared, &request, client).await {
        Ok(found) => found,
        Err((code, message)) => {
            let mut reply = Vec::new();
            packet::encode_error(code, message, &mut reply);
            let _ = sockets.send(&reply, client).await;
            return;
        }
    };
    let size = opened.data.len();
    let negotiated = request
        .options
        .negotiate(size as u64, sockets.path_max_blksize());
    if !negotiated.ignored.is_empty() {
        tracing::info!(%client, file, ignored = ?negotiated.ignored, "TFTP options left out of the OACK");
    }
    let mut transfer = Transfer::new(client, opened.data, &negotiated, started);
    tracing::debug!(%client, file, size, blocks = transfer.blocks(), blksize = negotiated.blksize, windowsize = negotiated.windowsize, "TFTP transfer starts");
    if let Err(e) = drive(&sockets, &mut transfer, usize::from(negotiated.blksize)).await {
        tracing::warn!(%client, file, "TFTP transfer socket failed: {e}");
        return;
    }
    let ms = started.elapsed().as_millis();
    let detail = || {
        format!(
            "file={file} size={size} from={} blksize={} windowsize={} retransmits={} ms={ms} client={client}",
            opened.source.name(),
            negotiated.blksize,
            negotiated.windowsize,
            transfer.retransmits
        )
    };
    match transfer.outcome() {
        Some(Outcome::Complete) => {
            tracing::info!(%client, file, size, ms, retransmits = transfer.retransmits, "TFTP read");
            if mac.is_some() {
                shared
                    .store
                    .record_event(clock::now_ms(), mac, "tftp.read", detail());
            }
        }
        Some(Outcome::TimedOut { all_sent: true }) => {
            // Every block went out; only the last ACK is missing (a client that
            // moved on without acknowledging, or whose ACK was lost).
            tracing::info!(%client, file, size, ms, "TFTP read; the final ACK never came");
            if mac.is_some() {
                shared.store.record_event(
                    clock::now_ms(),
                    mac,
                    "tftp.read",
                    format!("{} final_ack=missing", detail()),
                );
            }
        }
        Some(Outcome::TimedOut { all_sent: false }) => {
            tracing::warn!(%client, file, size, ms, "TFTP transfer abandoned: client stopped answering");
            if mac.is_some() {
                shared
                    .store
                    .record_event(clock::now_ms(), mac, "tftp.timeout", detail());
            }
        }
        Some(Outcome::ClientError { code, message }) => {
            // Routine for UEFI, which asks for tsize first and aborts with error 8.
            tracing::info!(%client, file, code, message, "TFTP transfer ended by the client");
        }
        None => {}
    }
}

/// The file a request gets, held to the secrets rule, and the machine the client's
/// address is tied to (for its events). A machine's own directory goes only to an
/// address the rule lets act for that machine: looked up implicitly (`root/<mac>/p`
/// for `p`) or asked for by name (`<mac>/p`), which anyone could otherwise do.
async fn open_for(
    shared: &Shared,
    request: &ReadRequest,
    client: SocketAddr,
) -> Result<(Option<MacAddr>, Opened), (ErrorCode, &'static str)> {
    let file = request.path.display().to_string();
    let now = clock::now_ms() / 1000;
    let ip = match client.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    };
    let evidence = match ip {
        Some(ip) => shared
            .secrets
            .evidence(&shared.store, ip, now)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(%client, "TFTP: inventory lookup failed: {e}");
                Evidence::default()
            }),
        None => Evidence::default(),
    };
    // Events name the machine the address is recorded for, as they always have;
    // only files depend on the rule.
    let recorded = evidence
        .lease
        .as_ref()
        .map(|l| l.mac)
        .or(evidence.fixed_owner);
    let machine = shared.secrets.owner(&evidence, now).map(|(mac, _)| mac);
    let not_served = |e: OpenError| {
        match e {
            OpenError::NotFound => tracing::info!(%client, file, "TFTP file not found"),
            _ => tracing::warn!(%client, file, "TFTP file not served: {e}"),
        }
        match e {
            OpenError::NotFound => (ErrorCode::FileNotFound, "file not found"),
            OpenError::TooLarge(_) => (ErrorCode::DiskFull, "file too large for TFTP"),
            OpenError::Io(_) => (ErrorCode::NotDefined, "cannot read file"),
        }
    };
    let located = shared.files.locate(&request.path, machine).await;
    // An operator's file under `root` wins; then rackboot's own (shim, grub, the
    // machines' grub configurations); then `ipxe_dir`.
    let from_root = matches!(&located, Ok(l) if matches!(l.source, Source::Machine | Source::Root));
    if !from_root
        && let Some(boot) = &shared.boot
        && let Some(answer) = boot.tftp_file(&request.path, ip).await
    {
        let path = match answer {
            Ok(TftpFile::Text(text)) => {
                let data: SharedBytes = Arc::new(text.into_bytes().into_boxed_slice());
                let opened = Opened {
                    data,
                    source: Source::Generated,
                };
                return Ok((recorded, opened));
            }
            Ok(TftpFile::Path(path)) => path,
            Err(e) => {
                tracing::warn!(%client, file, "TFTP: {e}");
                return Err(match e {
                    BootError::Forbidden(_) => {
                        (ErrorCode::AccessViolation, "not this machine's address")
                    }
                    BootError::NotFound(_) => (ErrorCode::FileNotFound, "file not found"),
                    BootError::Unavailable(_) => (ErrorCode::NotDefined, "inventory unavailable"),
                    BootError::Render(_) => (ErrorCode::NotDefined, "template error"),
                });
            }
        };
        let located = shared.files.locate_path(path).await.map_err(not_served)?;
        let opened = shared
            .files
            .read(located, request.mode)
            .await
            .map_err(not_served)?;
        return Ok((recorded, opened));
    }
    let located = located.map_err(not_served)?;
    if let Some(owner) = located.owner.filter(|owner| Some(*owner) != machine)
        && let Err(why) = shared.secrets.decide(owner, &evidence, now)
    {
        tracing::warn!(%client, file, %owner, "TFTP: refused a machine's own file: the address is {why}");
        return Err((ErrorCode::AccessViolation, "not this machine's address"));
    }
    let opened = shared
        .files
        .read(located, request.mode)
        .await
        .map_err(not_served)?;
    Ok((recorded, opened))
}

/// A std socket, non-blocking, with tokio's readiness around it, so that reads
/// can be batched and readiness cleared as soon as the queue is seen empty (see
/// `drive`).
type TransferSocket = AsyncFd<std::net::UdpSocket>;

/// A transfer's port (its RFC 1350 transfer ID), held by two sockets:
///
/// - `connected`, connected to the client: the kernel hands it the client's
///   datagrams without a route lookup each way, as tftpd-hpa's connected socket
///   gets. Measured side by side, an unconnected socket made lockstep 5 to 10%
///   slower than tftpd-hpa.
/// - `stray`, unconnected on the same port (SO_REUSEPORT, which only sockets of
///   the same user may share): it gets datagrams from any other address or port,
///   which are answered with ERROR 5. A connected socket alone would leave those to
///   the kernel's ICMP port-unreachable.
///
/// Where the pair cannot be made, `stray` alone serves the transfer unconnected.
struct Sockets {
    connected: Option<TransferSocket>,
    stray: TransferSocket,
    client: SocketAddr,
}

impl Sockets {
    /// Binds to the address the request came to (clients check the source).
    fn bind(local: Option<IpAddr>, client: SocketAddr) -> io::Result<Self> {
        use socket2::{Domain, Protocol, Socket, Type};
        let unspecified = match client {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let new_socket = |ip: IpAddr, port: u16, reuse_port: bool| -> io::Result<Socket> {
            let socket = Socket::new(
                Domain::for_address(client),
                Type::DGRAM,
                Some(Protocol::UDP),
            )?;
            socket.set_reuse_port(reuse_port)?;
            socket.set_nonblocking(true)?;
            socket.bind(&SocketAddr::new(ip, port).into())?;
            Ok(socket)
        };
        // The port is picked without SO_REUSEPORT: Linux lets a port-0 bind with
        // SO_REUSEPORT land on a port that other SO_REUSEPORT sockets of the same
        // user hold, so two transfers could share a transfer ID (measured: 3000
        // such binds gave 2835 ports). Set after the bind, it admits the twin only.
        let stray = match local {
            Some(ip) => new_socket(ip, 0, false).or_else(|_| new_socket(unspecified, 0, false))?,
            None => new_socket(unspecified, 0, false)?,
        };
        let bound = stray
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("transfer socket bound to a non-IP address"))?;
        let connected = stray
            .set_reuse_port(true)
            .and_then(|()| new_socket(bound.ip(), bound.port(), true))
            .and_then(|socket| socket.connect(&client.into()).map(|()| socket))
            .and_then(|socket| register(socket.into()))
            .inspect_err(|e| {
                tracing::debug!(%client, "TFTP: no connected socket, serving unconnected: {e}");
                // Alone, the stray takes SO_REUSEPORT back: no other socket (of
                // another process of the same user) may join its port and be
                // handed the client's datagrams.
                let _ = stray.set_reuse_port(false);
            })
            .ok();
        Ok(Sockets {
            connected,
            stray: register(stray.into())?,
            client,
        })
    }

    /// Sends at once; waits for room only when the socket buffer is full.
    async fn send(&self, bytes: &[u8], to: SocketAddr) -> io::Result<()> {
        match &self.connected {
            Some(socket) if to == self.client => match socket.get_ref().send(bytes) {
                // The error was about an earlier datagram, and this one was not
                // sent; the error is consumed, so it goes now.
                Err(e) if is_icmp_report(&e) => socket.get_ref().send(bytes).map(drop),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket
                    .async_io(Interest::WRITABLE, |inner| inner.send(bytes))
                    .await
                    .map(drop),
                result => result.map(drop),
            },
            _ => match self.stray.get_ref().send_to(bytes, to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self
                    .stray
                    .async_io(Interest::WRITABLE, |inner| inner.send_to(bytes, to))
                    .await
                    .map(drop),
                result => result.map(drop),
            },
        }
    }

    /// The largest block a datagram to the client carries without fragmenting: the
    /// path MTU the kernel knows for the route (IP_MTU, read from a connected
    /// socket) less the IP, UDP and TFTP headers. Falls back to Ethernet's 1500.
    fn path_max_blksize(&self) -> u16 {
        let (level, name, headers) = match self.client {
            SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MTU, 20 + 8 + 4),
            SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_MTU, 40 + 8 + 4),
        };
        let mtu = match &self.connected {
            Some(socket) => get_int_option(socket.get_ref().as_raw_fd(), level, name),
            None => (|| {
                let probe = std::net::UdpSocket::bind(
                    self.stray
                        .get_ref()
                        .local_addr()
                        .map(|a| SocketAddr::new(a.ip(), 0))?,
                )?;
                probe.connect(self.client)?;
                get_int_option(probe.as_raw_fd(), level, name)
            })(),
        }
        .unwrap_or(1500);
        u16::try_from((mtu - headers).clamp(i32::from(MIN_BLKSIZE), i32::from(MAX_BLKSIZE)))
            .unwrap_or(MIN_BLKSIZE)
    }
}

fn register(socket: std::net::UdpSocket) -> io::Result<TransferSocket> {
    // SAFETY: a std UdpSocket owns its descriptor until dropped, and as_raw_fd
    // always returns that one.
    Ok(unsafe { AsyncFd::register(socket) }?)
}

/// Whether an error is one a connected UDP socket reports for an ICMP message about
/// an earlier datagram (port unreachable from a client whose port was closed a
/// moment, and the like). Linux hands it to the next send or receive, which fails
/// and consumes it. The unconnected socket never sees these; for the transfer each
/// is a lost packet, not a reason to end.
fn is_icmp_report(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::ENOPROTOOPT
                | libc::EMSGSIZE
        )
    )
}

/// Datagrams read per wake-up at most. A client sends one ACK per window; more
/// waiting at once are duplicates or strays.
const BATCH: usize = 4;
/// Clients send ACKs and ERRORs: 1 KiB holds any sane one (a longer ERROR message
/// is cut, which is harmless).
const DATAGRAM: usize = 1024;

struct Batch {
    bufs: [[u8; DATAGRAM]; BATCH],
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
}

/// Runs the transfer to its end: datagrams and timer ticks in, packets out.
///
/// tokio forgets a socket's readiness only when a read returns EAGAIN, which costs
/// a system call per block in lockstep (where the one ACK has just been read). Here
/// the waiting datagrams are read with one `recvmmsg`; when it returns fewer than it
/// could take, the queue was seen empty and readiness is cleared without that extra
/// read. The clear is tied to the readiness event it read under, so a datagram that
/// arrives meanwhile raises readiness again.
async fn drive(sockets: &Sockets, transfer: &mut Transfer, blksize: usize) -> io::Result<()> {
    let mut out: Vec<Send> = Vec::with_capacity(64);
    let mut batch = Box::new(Batch {
        bufs: [[0; DATAGRAM]; BATCH],
        lens: [0; BATCH],
        from: [None; BATCH],
    });
    let mut wire = Vec::with_capacity(blksize + 4);
    let mut stray = Throttle::new(REFUSAL_LOG_BURST, REFUSAL_LOG_WINDOW_MS);
    transfer.start(Instant::now(), &mut out);
    flush(sockets, transfer, &mut out, &mut wire).await;
    let sleep = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    while let Some(deadline) = transfer.deadline() {
        // Every ACK pushes the deadline later; re-arming the timer for each would
        // cost more than the rest of the loop. The timer is re-armed only when the
        // deadline comes earlier or the armed one fired (`on_tick` is a no-op then).
        if armed.is_none_or(|at| deadline < at) {
            sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
            armed = Some(deadline);
        }
        // Polled by hand rather than with select! over fresh futures: poll_read_ready
        // keeps one waker per socket, where a new `readable()` future per block
        // joins and leaves a waiter list, for each socket, every time.
        let event = std::future::poll_fn(|cx| {
            if let Some(socket) = &sockets.connected
                && let Poll::Ready(ready) = socket.poll_read_ready(cx)
            {
                return Poll::Ready(Event::Readable(ready.map(|guard| (socket, guard))));
            }
            if let Poll::Ready(ready) = sockets.stray.poll_read_ready(cx) {
                return Poll::Ready(Event::Readable(ready.map(|guard| (&sockets.stray, guard))));
            }
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Tick);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Readable(ready) => {
                let (socket, mut guard) = ready?;
                read(
                    socket, &mut guard, &mut batch, transfer, &mut out, &mut stray,
                )?;
            }
            Event::Tick => {
                armed = None;
                transfer.on_tick(Instant::now(), &mut out);
            }
        }
        flush(sockets, transfer, &mut out, &mut wire).await;
    }
    Ok(())
}

enum Event<'a> {
    Readable(
        io::Result<(
            &'a TransferSocket,
            AsyncFdReadyGuard<'a, std::net::UdpSocket>,
        )>,
    ),
    Tick,
}

/// Reads what waits on `socket` into the transfer.
fn read(
    socket: &TransferSocket,
    guard: &mut AsyncFdReadyGuard<'_, std::net::UdpSocket>,
    batch: &mut Batch,
    transfer: &mut Transfer,
    out: &mut Vec<Send>,
    stray: &mut Throttle,
) -> io::Result<()> {
    let count = match recv_batch(socket.get_ref().as_raw_fd(), batch) {
        Ok(count) => count,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) if is_icmp_report(&e) => {
            // A lost packet, which the timeout deals with. Datagrams may wait behind
            // the error: readiness stays, and the next turn reads them.
            tracing::debug!(client = %transfer.client(), "TFTP: ICMP error on the transfer socket: {e}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if count < BATCH {
        guard.clear_ready();
    }
    let now = Instant::now();
    for i in 0..count {
        let (Some(from), Some(len)) = (batch.from[i], batch.lens.get(i)) else {
            continue;
        };
        let bytes = batch.bufs[i].get(..*len).unwrap_or_default();
        match transfer.on_datagram(from, bytes, now, out) {
            Handled::Progress | Handled::Finished | Handled::StaleAck(_) => {}
            Handled::WrongPeer(peer) => {
                if let Some(left_out) = stray.hit(crate::clock::now_ms()) {
                    tracing::info!(client = %transfer.client(), %peer, left_out, "TFTP packet from a wrong port: answered with error 5");
                }
            }
            Handled::Dropped(why) => {
                if let Some(left_out) = stray.hit(crate::clock::now_ms()) {
                    tracing::info!(client = %transfer.client(), left_out, "TFTP packet dropped: {why}");
                }
            }
        }
    }
    Ok(())
}

async fn flush(sockets: &Sockets, transfer: &Transfer, out: &mut Vec<Send>, wire: &mut Vec<u8>) {
    for send in out.drain(..) {
        transfer.encode(&send.packet, wire);
        // A failed send is a lost packet: the timeout resends it.
        if let Err(e) = sockets.send(wire, send.to).await {
            tracing::debug!(to = %send.to, "TFTP send failed: {e}");
        }
    }
}

/// Reads up to `BATCH` waiting datagrams with one `recvmmsg`; returns how many.
/// Fewer than `BATCH` means the queue was empty when read.
fn recv_batch(fd: RawFd, batch: &mut Batch) -> io::Result<usize> {
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|_| libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    });
    for (i, ((msg, iov), addr)) in msgs
        .iter_mut()
        .zip(iovs.iter_mut())
        .zip(addrs.iter_mut())
        .enumerate()
    {
        iov.iov_base = batch.bufs[i].as_mut_ptr().cast();
        iov.iov_len = DATAGRAM;
        msg.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
        msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: each message points at its own live buffer, address and iovec, with
    // their lengths; the kernel writes within them.
    let received = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    let count = usize::try_from(received).map_err(|_| io::Error::last_os_error())?;
    for i in 0..count.min(BATCH) {
        batch.lens[i] = (msgs[i].msg_len as usize).min(DATAGRAM);
        batch.from[i] = socket_addr(&addrs[i]);
    }
    Ok(count.min(BATCH))
}

fn set_int_option(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn get_int_option(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` and `len` outlive the call; the kernel writes at most `len` bytes.
    let rc =
        unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Receives one datagram with the local address it was sent to (IP_PKTINFO).
async fn recv_with_local(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    socket
        .async_io(Interest::READABLE, || {
            recvmsg_pktinfo(socket.as_raw_fd(), buf)
        })
        .await
}

fn recvmsg_pktinfo(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64 elements: the control buffer must be aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` points at a live buffer of the stated length.
    let received = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut local = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
    // `msg_controllen`; the payload is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::IPPROTO_IP && (*cmsg).cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_spec_dst.s_addr,
                ))));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let from =
        socket_addr(&addr).ok_or_else(|| io::Error::other("datagram from a non-IP address"))?;
    Ok((received as usize, from, local))
}

fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is
            // large and aligned enough for.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recv_within(socket: &std::net::UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 64];
        loop {
            match socket.recv_from(&mut buf) {
                Ok((len, from)) => return Some((buf[..len].to_vec(), from)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return None,
            }
        }
    }

    /// Every transfer has a port of its own (a port-0 bind with SO_REUSEPORT would
    /// share some), and on it the client's datagrams reach the connected socket and
    /// anyone else's the stray one.
    #[tokio::test]
    async fn each_transfer_has_its_own_port_and_its_twin_takes_only_the_client() {
        let (_, files) = crate::limits::raise_nofile(1 << 16).expect("open-file limit");
        // Two descriptors a transfer; 2000 transfers over ~28000 ephemeral ports
        // share some ~70 times over when ports can be shared.
        let count = usize::try_from(files.saturating_sub(64) / 2)
            .unwrap_or(usize::MAX)
            .min(2000);
        assert!(count >= 400, "too few descriptors for the test: {files}");
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
        let other = std::net::UdpSocket::bind("127.0.0.1:0").expect("other");
        let local = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut ports = HashSet::new();
        let mut held = Vec::with_capacity(count);
        for _ in 0..count {
            let sockets =
                Sockets::bind(local, client.local_addr().expect("address")).expect("bind");
            let port = sockets
                .stray
                .get_ref()
                .local_addr()
                .expect("address")
                .port();
            assert!(ports.insert(port), "port {port} given to two transfers");
            held.push(sockets);
        }
        let sockets = held.last().expect("a transfer");
        let connected = sockets.connected.as_ref().expect("connected twin");
        let port = sockets.stray.get_ref().local_addr().expect("address");
        let wait = Duration::from_secs(2);
        for _ in 0..20 {
            client.send_to(b"client", port).expect("send");
            other.send_to(b"other", port).expect("send");
            let got = recv_within(connected.get_ref(), wait).expect("client datagram");
            assert_eq!(
                got,
                (b"client".to_vec(), client.local_addr().expect("address"))
            );
            let got = recv_within(sockets.stray.get_ref(), wait).expect("other datagram");
            assert_eq!(
                got,
                (b"other".to_vec(), other.local_addr().expect("address"))
            );
        }
        assert_eq!(recv_within(connected.get_ref(), Duration::ZERO), None);
        assert_eq!(recv_within(sockets.stray.get_ref(), Duration::ZERO), None);
    }
}
