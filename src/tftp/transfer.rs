//! One read transfer as a state machine: datagrams and timer ticks in, packets to
//! send out, the time passed in by the caller. No sockets, no clock, no sleeps, so
//! loss, reordering, rollover and timeouts are tested in microseconds.
//!
//! Rules it keeps:
//! - Retransmission happens on timeout only. A duplicate ACK is ignored (RFC 1123
//!   §4.2.3.1: answering it doubles every later packet, the Sorcerer's Apprentice).
//! - A client's ERROR ends the transfer at once (UEFI asks for `tsize`, then aborts
//!   with error 8 before the real download).
//! - A datagram from any other address or port gets ERROR 5 and changes nothing.
//! - Blocks are counted in `u64` and sent modulo 65536, so files of more than
//!   65535 blocks roll over to block 0; a file whose size is an exact multiple of
//!   the block size ends with an empty block.
//! - With a window (RFC 7440) the client acknowledges the last block it has in
//!   order; the next window starts after it.

use super::options::Negotiated;
use super::packet::{self, ErrorCode, Packet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// First retransmission timeout, before any round trip has been measured.
pub const INITIAL_RTO: Duration = Duration::from_secs(1);
/// Floor of the adaptive timeout: on a LAN the measured RTT is tens of µs, but a
/// firmware client may pause (writing memory, drawing a progress bar) far longer,
/// and a loaded server host delays everything by milliseconds.
pub const MIN_RTO: Duration = Duration::from_millis(100);
pub const MAX_RTO: Duration = Duration::from_secs(5);
/// Consecutive timeouts without progress before the transfer is abandoned.
pub const MAX_RETRIES: u32 = 7;

/// What to send, encoded by `Transfer::encode` into the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Oack,
    /// Block by index from 1; the wire number is the index modulo 65536.
    Data(u64),
    Error {
        code: ErrorCode,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub to: SocketAddr,
    pub packet: Outgoing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The final block was acknowledged.
    Complete,
    /// The client sent ERROR.
    ClientError { code: u16, message: String },
    /// No progress through `MAX_RETRIES` timeouts. `all_sent`: the final block had
    /// gone out, so only its ACK is missing (a client that dallies not, or lost it).
    TimedOut { all_sent: bool },
}

/// What one datagram did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Progress,
    /// An ACK for a block already acknowledged, or not yet sent: ignored.
    StaleAck(u16),
    /// From another address or port: answered with ERROR 5.
    WrongPeer(SocketAddr),
    /// Undecodable or unexpected: dropped.
    Dropped(String),
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// OACK sent, waiting for ACK 0.
    Oack,
    Data,
    Done,
}

/// Retransmission timeout, estimated from measured round trips as TCP does
/// (RFC 6298), with backoff.
///
/// A negotiated `timeout` (RFC 2349) caps it rather than fixing it: it is how long
/// the client waits before it retransmits, and clients ask for seconds (curl always
/// sends 5) while a lost block on a LAN is noticed in milliseconds. Waiting the full
/// timeout for each loss made a transfer with 5% loss take minutes; retransmitting
/// sooner only costs the client a duplicate, which it acknowledges and we ignore.
#[derive(Debug, Clone)]
struct Rto {
    min: Duration,
    max: Duration,
    srtt: Option<Duration>,
    rttvar: Duration,
    current: Duration,
}

impl Rto {
    fn new(cap: Option<Duration>) -> Self {
        let max = cap.map_or(MAX_RTO, |cap| cap.min(MAX_RTO));
        Rto {
            min: MIN_RTO.min(max),
            max,
            srtt: None,
            rttvar: Duration::ZERO,
            current: INITIAL_RTO.min(max),
        }
    }

    fn sample(&mut self, rtt: Duration) {
        let (srtt, rttvar) = match self.srtt {
            None => (rtt, rtt / 2),
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                ((srtt * 7 + rtt) / 8, (self.rttvar * 3 + diff) / 4)
            }
        };
        self.srtt = Some(srtt);
        self.rttvar = rttvar;
        self.current = (srtt + rttvar * 4).clamp(self.min, self.max);
    }

    fn backoff(&mut self) {
        self.current = (self.current * 2).min(self.max);
    }
}

pub struct Transfer {
    client: SocketAddr,
    data: super::SharedBytes,
    blksize: usize,
    windowsize: u64,
    /// Index of the final block: `len / blksize + 1` (an exact multiple ends with
    /// an empty block, an empty file is one empty block).
    last_block: u64,
    oack: Option<Vec<(String, String)>>,
    phase: Phase,
    outcome: Option<Outcome>,
    /// Highest block the client has acknowledged (0 before any).
    acked: u64,
    /// Highest block sent so far.
    sent: u64,
    rto: Rto,
    deadline: Instant,
    /// When the current window (or OACK) first went out, for an RTT sample; `None`
    /// once it has been retransmitted (Karn: such a sample is ambiguous).
    sent_at: Option<Instant>,
    retries: u32,
    pub retransmits: u64,
}

impl Transfer {
    pub fn new(
        client: SocketAddr,
        data: super::SharedBytes,
        negotiated: &Negotiated,
        now: Instant,
    ) -> Self {
        let blksize = usize::from(negotiated.blksize.max(1));
        let last_block = (data.len() / blksize) as u64 + 1;
        let rto = Rto::new(negotiated.timeout);
        Transfer {
            client,
            data,
            blksize,
            windowsize: u64::from(negotiated.windowsize.max(1)),
            last_block,
            oack: negotiated.oack.clone(),
            phase: Phase::Oack,
            outcome: None,
            acked: 0,
            sent: 0,
            deadline: now + rto.current,
            rto,
            sent_at: None,
            retries: 0,
            retransmits: 0,
        }
    }

    /// The first packets: the OACK when options were accepted, else the first window.
    pub fn start(&mut self, now: Instant, out: &mut Vec<Send>) {
        if self.oack.is_some() {
            self.phase = Phase::Oack;
            self.sent_at = Some(now);
            self.deadline = now + self.rto.current;
            out.push(self.send(Outgoing::Oack));
        } else {
            self.phase = Phase::Data;
            self.send_window(now, out);
        }
    }

    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// When `on_tick` must next be called; `None` once finished.
    pub fn deadline(&self) -> Option<Instant> {
        (self.phase != Phase::Done).then_some(self.deadline)
    }

    pub fn client(&self) -> SocketAddr {
        self.client
    }

    pub fn blocks(&self) -> u64 {
        self.last_block
    }

    pub fn on_datagram(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
        out: &mut Vec<Send>,
    ) -> Handled {
        if from != self.client {
            out.push(Send {
                to: from,
                packet: Outgoing::Error {
                    code: ErrorCode::UnknownTransferId,
                    message: "unknown transfer ID".into(),
                },
            });
            return Handled::WrongPeer(from);
        }
        if self.phase == Phase::Done {
            return Handled::Dropped("transfer already finished".into());
        }
        match packet::decode(bytes) {
            Ok(Packet::Ack { block }) => self.on_ack(block, now, out),
            Ok(Packet::Error { code, message }) => {
                self.finish(Outcome::ClientError { code, message });
                Handled::Finished
            }
            Ok(other) => Handled::Dropped(format!("unexpected {}", kind(&other))),
            Err(e) => Handled::Dropped(e.to_string()),
        }
    }

    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Send>) {
        if self.phase == Phase::Done || now < self.deadline {
            return;
        }
        if self.retries >= MAX_RETRIES {
            let all_sent = self.sent == self.last_block;
            self.finish(Outcome::TimedOut { all_sent });
            return;
        }
        self.retries += 1;
        self.retransmits += 1;
        self.rto.backoff();
        self.sent_at = None;
        self.deadline = now + self.rto.current;
        match self.phase {
            Phase::Oack => out.push(self.send(Outgoing::Oack)),
            Phase::Data => {
                let end = self.window_end();
                for index in self.acked + 1..=end {
                    out.push(self.send(Outgoing::Data(index)));
                }
            }
            Phase::Done => {}
        }
    }

    fn on_ack(&mut self, block: u16, now: Instant, out: &mut Vec<Send>) -> Handled {
        match self.phase {
            Phase::Oack if block == 0 => {
                if let Some(at) = self.sent_at {
                    self.rto.sample(now.saturating_duration_since(at));
                }
                self.phase = Phase::Data;
                self.retries = 0;
                self.send_window(now, out);
                Handled::Progress
            }
            Phase::Oack | Phase::Done => Handled::StaleAck(block),
            Phase::Data => {
                // The ACK names a block in (acked, sent], modulo 65536.
                let ahead = u64::from(block.wrapping_sub(self.acked as u16));
                if ahead == 0 || self.acked + ahead > self.sent {
                    return Handled::StaleAck(block);
                }
                self.acked += ahead;
                self.retries = 0;
                if self.acked == self.sent
                    && let Some(at) = self.sent_at
                {
                    self.rto.sample(now.saturating_duration_since(at));
                }
                if self.acked == self.last_block {
                    self.finish(Outcome::Complete);
                    return Handled::Finished;
                }
                self.send_window(now, out);
                Handled::Progress
            }
        }
    }

    fn window_end(&self) -> u64 {
        (self.acked + self.windowsize).min(self.last_block)
    }

    /// Sends the window after the last acknowledged block. After a partial ACK this
    /// resends blocks already in flight, as RFC 7440 asks: the client dropped them.
    fn send_window(&mut self, now: Instant, out: &mut Vec<Send>) {
        let end = self.window_end();
        for index in self.acked + 1..=end {
            out.push(self.send(Outgoing::Data(index)));
        }
        self.sent = self.sent.max(end);
        self.sent_at = Some(now);
        self.deadline = now + self.rto.current;
    }

    fn send(&self, packet: Outgoing) -> Send {
        Send {
            to: self.client,
            packet,
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        self.phase = Phase::Done;
        self.outcome = Some(outcome);
    }

    /// Encodes `packet` into `buf` (cleared first).
    pub fn encode(&self, packet: &Outgoing, buf: &mut Vec<u8>) {
        match packet {
            Outgoing::Oack => packet::encode_oack(self.oack.as_deref().unwrap_or_default(), buf),
            Outgoing::Data(index) => {
                let start =
                    usize::try_from((index.saturating_sub(1)).saturating_mul(self.blksize as u64))
                        .unwrap_or(usize::MAX)
                        .min(self.data.len());
                let end = start.saturating_add(self.blksize).min(self.data.len());
                let payload = self.data.get(start..end).unwrap_or_default();
                packet::encode_data(*index as u16, payload, buf);
            }
            Outgoing::Error { code, message } => packet::encode_error(*code, message, buf),
        }
    }
}

fn kind(packet: &Packet<'_>) -> &'static str {
    match packet {
        Packet::Rrq(_) => "RRQ",
        Packet::Wrq(_) => "WRQ",
        Packet::Data { .. } => "DATA",
        Packet::Ack { .. } => "ACK",
        Packet::Error { .. } => "ERROR",
        Packet::Oack { .. } => "OACK",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::options::Requested;

    const CLIENT: &str = "192.0.2.100:40000";

    fn client() -> SocketAddr {
        CLIENT.parse().expect("address")
    }

    fn ack(block: u16) -> Vec<u8> {
        let mut buf = Vec::new();
        packet::encode_ack(block, &mut buf);
        buf
    }

    fn negotiated(options: &[(&str, &str)], len: u64) -> Negotiated {
        let raw: Vec<(&[u8], &[u8])> = options
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        Requested::parse(&raw)
            .expect("options")
            .negotiate(len, 65464)
    }

    /// A transfer with its clock and its outbox.
    struct Harness {
        t: Transfer,
        now: Instant,
        out: Vec<Send>,
    }

    impl Harness {
        fn new(data: Vec<u8>, options: &[(&str, &str)]) -> Self {
            let now = Instant::now();
            let n = negotiated(options, data.len() as u64);
            let mut t = Transfer::new(client(), std::sync::Arc::new(data.into()), &n, now);
            let mut out = Vec::new();
            t.start(now, &mut out);
            Harness { t, now, out }
        }

        fn take(&mut self) -> Vec<Outgoing> {
            self.out.drain(..).map(|s| s.packet).collect()
        }

        fn ack(&mut self, block: u16) -> Handled {
            self.now += Duration::from_micros(50);
            self.t
                .on_datagram(client(), &ack(block), self.now, &mut self.out)
        }

        fn advance(&mut self, by: Duration) {
            self.now += by;
            self.t.on_tick(self.now, &mut self.out);
        }

        fn payload(&self, out: &Outgoing) -> Vec<u8> {
            let mut buf = Vec::new();
            self.t.encode(out, &mut buf);
            buf
        }

        /// Acknowledges every window until the end; returns the bytes received.
        fn run_to_end(&mut self) -> Vec<u8> {
            let mut received = Vec::new();
            let mut expected: u16 = 1;
            let mut guard = 0;
            while self.t.outcome().is_none() {
                guard += 1;
                assert!(guard < 1_000_000, "no end");
                let sent = self.take();
                assert!(!sent.is_empty(), "nothing sent while waiting");
                let mut last = None;
                for out in &sent {
                    let bytes = self.payload(out);
                    let Ok(Packet::Data { block, data }) = packet::decode(&bytes) else {
                        panic!("expected DATA, got {out:?}");
                    };
                    assert_eq!(block, expected, "blocks in order");
                    expected = expected.wrapping_add(1);
                    received.extend_from_slice(data);
                    last = Some(block);
                }
                self.ack(last.expect("a block"));
            }
            received
        }
    }

    fn file(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn lockstep_transfer_without_options() {
        let data = file(1300);
        let mut h = Harness::new(data.clone(), &[]);
        assert_eq!(
            h.out[0].packet,
            Outgoing::Data(1),
            "no OACK without options"
        );
        assert_eq!(h.run_to_end(), data);
        assert_eq!(h.t.outcome(), Some(&Outcome::Complete));
        assert_eq!(h.t.blocks(), 3);
    }

    #[test]
    fn exact_multiple_ends_with_an_empty_block() {
        let data = file(1024);
        let mut h = Harness::new(data.clone(), &[]);
        assert_eq!(h.t.blocks(), 3);
        h.take();
        h.ack(1);
        h.take();
        h.ack(2);
        let last = h.take();
        assert_eq!(last, [Outgoing::Data(3)]);
        assert_eq!(
            h.payload(&last[0]),
            b"\x00\x03\x00\x03",
            "empty final block"
        );
        assert_eq!(h.ack(3), Handled::Finished);
        assert_eq!(h.t.outcome(), Some(&Outcome::Complete));
        // An empty file is one empty block.
        let mut h = Harness::new(Vec::new(), &[]);
        assert_eq!(h.payload(&h.out[0].packet.clone()), b"\x00\x03\x00\x01");
        assert_eq!(h.ack(1), Handled::Finished);
    }

    #[test]
    fn oack_then_data_after_ack_zero() {
        let data = file(5000);
        let mut h = Harness::new(data.clone(), &[("tsize", "0"), ("blksize", "1468")]);
        let first = h.take();
        assert_eq!(first, [Outgoing::Oack]);
        assert_eq!(
            h.payload(&first[0]),
            b"\x00\x06tsize\x005000\x00blksize\x001468\x00"
        );
        assert_eq!(h.ack(0), Handled::Progress);
        assert_eq!(h.run_to_end(), data);
    }

    #[test]
    fn client_error_ends_the_transfer_at_once() {
        // The UEFI tsize probe: OACK, then ERROR 8.
        let mut h = Harness::new(file(100_000), &[("tsize", "0")]);
        h.take();
        let handled = h.t.on_datagram(
            client(),
            b"\x00\x05\x00\x08tsize probe\x00",
            h.now,
            &mut h.out,
        );
        assert_eq!(handled, Handled::Finished);
        assert_eq!(
            h.t.outcome(),
            Some(&Outcome::ClientError {
                code: 8,
                message: "tsize probe".into()
            })
        );
        assert_eq!(h.t.deadline(), None, "no timer after the end");
        h.advance(Duration::from_secs(30));
        assert!(
            h.out.is_empty(),
            "nothing retransmitted after a client error"
        );

        // A 4-byte ERROR (no message) ends it too, as does a 2-byte one.
        for bytes in [&b"\x00\x05\x00\x00"[..], b"\x00\x05"] {
            let mut h = Harness::new(file(10), &[]);
            h.t.on_datagram(client(), bytes, h.now, &mut h.out);
            assert!(
                matches!(h.t.outcome(), Some(Outcome::ClientError { .. })),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn duplicate_acks_are_never_answered() {
        let mut h = Harness::new(file(512 * 10), &[]);
        h.take();
        assert_eq!(h.ack(1), Handled::Progress);
        assert_eq!(h.take(), [Outgoing::Data(2)]);
        // The Sorcerer's Apprentice: a delayed duplicate of ACK 1 must not resend 2.
        for _ in 0..5 {
            assert_eq!(h.ack(1), Handled::StaleAck(1));
        }
        assert!(h.out.is_empty());
        // An ACK for a block never sent is ignored too.
        assert_eq!(h.ack(9), Handled::StaleAck(9));
        assert!(h.out.is_empty());
        assert_eq!(h.ack(2), Handled::Progress);
        assert_eq!(h.take(), [Outgoing::Data(3)]);
    }

    #[test]
    fn retransmission_on_timeout_only_with_backoff_then_give_up() {
        let mut h = Harness::new(file(2000), &[]);
        assert_eq!(h.take(), [Outgoing::Data(1)]);
        h.advance(INITIAL_RTO - Duration::from_millis(1));
        assert!(h.out.is_empty(), "no retransmission before the timeout");
        h.advance(Duration::from_millis(1));
        assert_eq!(h.take(), [Outgoing::Data(1)]);
        assert_eq!(h.t.retransmits, 1);
        // Backoff: the next timeout is twice as long.
        h.advance(INITIAL_RTO);
        assert!(h.out.is_empty());
        h.advance(INITIAL_RTO);
        assert_eq!(h.take(), [Outgoing::Data(1)]);
        for _ in 0..MAX_RETRIES {
            h.advance(MAX_RTO);
        }
        assert_eq!(h.t.outcome(), Some(&Outcome::TimedOut { all_sent: false }));
    }

    #[test]
    fn adaptive_timeout_follows_the_round_trip() {
        let mut h = Harness::new(file(512 * 4), &[]);
        h.take();
        h.ack(1); // a 50 µs round trip
        h.take();
        // The timeout is now near its floor, not the initial second.
        h.advance(MIN_RTO);
        assert_eq!(h.take(), [Outgoing::Data(2)]);
    }

    #[test]
    fn negotiated_timeout_caps_the_adaptive_one() {
        // Before any round trip: min(initial 1 s, asked 3 s).
        let mut h = Harness::new(file(10), &[("timeout", "3")]);
        h.take();
        h.advance(INITIAL_RTO);
        assert_eq!(h.take(), [Outgoing::Oack]);
        // Backoff stops at the negotiated 3 s (not MAX_RTO).
        h.advance(Duration::from_secs(2));
        assert_eq!(h.take(), [Outgoing::Oack]);
        h.advance(Duration::from_secs(3));
        assert_eq!(h.take(), [Outgoing::Oack]);
        h.advance(Duration::from_secs(3));
        assert_eq!(h.take(), [Outgoing::Oack]);
        // A timeout of 1 s caps even the initial estimate.
        let mut h = Harness::new(file(10), &[("timeout", "1")]);
        h.take();
        h.advance(Duration::from_millis(999));
        assert!(h.out.is_empty());
        h.advance(Duration::from_millis(1));
        assert_eq!(h.take(), [Outgoing::Oack]);
        h.advance(Duration::from_secs(1));
        assert_eq!(h.take(), [Outgoing::Oack], "no backoff past the cap");
    }

    #[test]
    fn wrong_port_gets_an_error_and_changes_nothing() {
        let mut h = Harness::new(file(2000), &[]);
        h.take();
        let intruder: SocketAddr = "192.0.2.100:40001".parse().expect("address");
        let handled = h.t.on_datagram(intruder, &ack(1), h.now, &mut h.out);
        assert_eq!(handled, Handled::WrongPeer(intruder));
        assert_eq!(
            h.out,
            [Send {
                to: intruder,
                packet: Outgoing::Error {
                    code: ErrorCode::UnknownTransferId,
                    message: "unknown transfer ID".into()
                }
            }]
        );
        h.take();
        // The transfer goes on as if nothing happened: block 1 is still unacked.
        assert_eq!(h.t.outcome(), None);
        assert_eq!(h.ack(1), Handled::Progress);
        assert_eq!(h.take(), [Outgoing::Data(2)]);
        // Even an ERROR from the wrong port does not end it.
        h.t.on_datagram(intruder, b"\x00\x05\x00\x00x\x00", h.now, &mut h.out);
        assert_eq!(h.t.outcome(), None);
    }

    #[test]
    fn block_numbers_roll_over_past_65535() {
        let data = file(8 * 70_000 + 3);
        let mut h = Harness::new(data.clone(), &[("blksize", "8"), ("windowsize", "7")]);
        assert_eq!(h.take(), [Outgoing::Oack]);
        h.ack(0);
        assert_eq!(h.run_to_end(), data);
        assert_eq!(h.t.blocks(), 70_001);
    }

    #[test]
    fn rollover_ack_for_block_zero_counts() {
        // Lockstep across the wrap: block 65536 goes out as 0 and its ACK 0 counts.
        let data = file(512 * 65_536 + 1);
        let mut h = Harness::new(data, &[]);
        h.take();
        for block in 1..=65_535u16 {
            assert_eq!(h.ack(block), Handled::Progress);
        }
        let sent = h.take();
        assert_eq!(sent.last(), Some(&Outgoing::Data(65_536)));
        assert_eq!(
            &h.payload(&Outgoing::Data(65_536))[..4],
            b"\x00\x03\x00\x00"
        );
        assert_eq!(h.ack(0), Handled::Progress);
        assert_eq!(h.take(), [Outgoing::Data(65_537)]);
        assert_eq!(h.ack(1), Handled::Finished);
    }

    #[test]
    fn window_restarts_after_the_last_block_in_order() {
        let data = file(512 * 40);
        let mut h = Harness::new(data, &[("windowsize", "8")]);
        h.take();
        h.ack(0);
        let window: Vec<_> = h.take();
        assert_eq!(window, (1..=8).map(Outgoing::Data).collect::<Vec<_>>());
        // Block 4 was lost: the client acknowledges 3, the next window starts at 4.
        assert_eq!(h.ack(3), Handled::Progress);
        assert_eq!(h.take(), (4..=11).map(Outgoing::Data).collect::<Vec<_>>());
        // The client re-acknowledges 3 for each out-of-order block: ignored.
        for _ in 0..4 {
            assert_eq!(h.ack(3), Handled::StaleAck(3));
        }
        assert!(h.out.is_empty());
        // A lost window is resent whole after the timeout.
        h.advance(INITIAL_RTO);
        assert_eq!(h.take(), (4..=11).map(Outgoing::Data).collect::<Vec<_>>());
    }

    #[test]
    fn last_window_is_short_and_final_ack_completes() {
        let data = file(512 * 5 + 10);
        let mut h = Harness::new(data.clone(), &[("windowsize", "4")]);
        h.take();
        h.ack(0);
        assert_eq!(h.take().len(), 4);
        h.ack(4);
        assert_eq!(h.take(), [Outgoing::Data(5), Outgoing::Data(6)]);
        assert_eq!(h.ack(6), Handled::Finished);
    }

    #[test]
    fn timeout_after_everything_was_sent_is_told_apart() {
        let mut h = Harness::new(file(10), &[]);
        h.take();
        for _ in 0..=MAX_RETRIES {
            h.advance(MAX_RTO);
        }
        assert_eq!(h.t.outcome(), Some(&Outcome::TimedOut { all_sent: true }));
    }

    #[test]
    fn garbage_from_the_client_is_dropped() {
        let mut h = Harness::new(file(2000), &[]);
        h.take();
        for bytes in [
            &b""[..],
            b"\x00",
            b"\x00\x04\x00",
            b"\x00\x09",
            b"\x00\x03\x00\x01x",
        ] {
            let handled = h.t.on_datagram(client(), bytes, h.now, &mut h.out);
            assert!(matches!(handled, Handled::Dropped(_)), "{bytes:?}");
        }
        assert!(h.out.is_empty());
        assert_eq!(h.t.outcome(), None);
        assert_eq!(h.ack(1), Handled::Progress);
    }
}
