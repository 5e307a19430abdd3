//! TFTP: the packet decoder (with a re-encoding round trip), the request judge, and
//! option negotiation with the invariants the transfer relies on.

use crate::engine::sig;
use rackboot::tftp::options::{self, Requested};
use rackboot::tftp::packet::{self, Packet};
use rackboot::tftp::request::{self, MAX_PATH_LEN};
use std::path::Component;

fn fields(out: &mut Vec<u8>, parts: &[&[u8]]) {
    for part in parts {
        out.extend_from_slice(part);
        out.push(0);
    }
}

/// A decoded packet as a peer would send it.
fn encode(p: &Packet<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    match p {
        Packet::Rrq(r) | Packet::Wrq(r) => {
            let op = if matches!(p, Packet::Rrq(_)) {
                packet::RRQ
            } else {
                packet::WRQ
            };
            out.extend_from_slice(&op.to_be_bytes());
            fields(&mut out, &[r.filename, r.mode]);
            for (name, value) in &r.options {
                fields(&mut out, &[name, value]);
            }
        }
        Packet::Data { block, data } => packet::encode_data(*block, data, &mut out),
        Packet::Ack { block } => {
            out.extend_from_slice(&packet::ACK.to_be_bytes());
            out.extend_from_slice(&block.to_be_bytes());
        }
        Packet::Error { code, message } => {
            out.extend_from_slice(&packet::ERROR.to_be_bytes());
            out.extend_from_slice(&code.to_be_bytes());
            fields(&mut out, &[message.as_bytes()]);
        }
        Packet::Oack { options } => {
            out.extend_from_slice(&packet::OACK.to_be_bytes());
            for (name, value) in options {
                fields(&mut out, &[name, value]);
            }
        }
    }
    out
}

pub fn tftp(data: &[u8]) -> u64 {
    // The file's size and the path's largest block, for negotiation, from the
    // input's last byte and length: raw packets stay valid inputs.
    let bytes = data;
    let last = data.last().copied().unwrap_or(0);
    let file_len = u64::from(last) << (data.len() % 40);
    let path_max = 8 + u16::from(last) * 256 % 65000;
    let mut out = String::new();
    match packet::decode(bytes) {
        Err(e) => out.push_str(&format!("{e:?}")),
        Ok(p) => {
            let again = encode(&p);
            let decoded = packet::decode(&again)
                .unwrap_or_else(|e| panic!("a decoded packet, re-encoded, fails: {e}"));
            // ERROR text stops at a NUL and is read lossily; the rest is exact.
            assert_eq!(decoded, p, "decode(encode(decode(x))) != decode(x)");
            out.push_str(match p {
                Packet::Rrq(_) => "rrq",
                Packet::Wrq(_) => "wrq",
                Packet::Data { .. } => "data",
                Packet::Ack { .. } => "ack",
                Packet::Error { .. } => "error",
                Packet::Oack { .. } => "oack",
            });
        }
    }
    match request::judge(bytes) {
        Err(refusal) => {
            if let Some((code, text)) = refusal.error() {
                let mut reply = Vec::new();
                packet::encode_error(code, text, &mut reply);
                assert!(matches!(packet::decode(&reply), Ok(Packet::Error { .. })));
            }
            out.push_str(&format!(" {refusal:?}"));
        }
        Ok(rr) => {
            // Netascii as a client reads it back (RFC 764): CR LF is LF, CR NUL is CR.
            let text = packet::to_netascii(bytes);
            let mut back = Vec::with_capacity(bytes.len());
            let mut at = 0;
            while at < text.len() {
                match (text[at], text.get(at + 1)) {
                    (b'\r', Some(b'\n')) => back.push(b'\n'),
                    (b'\r', Some(0)) => back.push(b'\r'),
                    (b'\r', _) => panic!("a bare CR in netascii at {at}"),
                    (b, _) => {
                        back.push(b);
                        at += 1;
                        continue;
                    }
                }
                at += 2;
            }
            assert_eq!(back, bytes, "netascii does not read back");
            let path = rr.path.to_str().expect("a judged path is UTF-8");
            assert!(
                !path.is_empty() && path.len() <= MAX_PATH_LEN,
                "path {path:?}"
            );
            assert!(
                rr.path
                    .components()
                    .all(|c| matches!(c, Component::Normal(_))),
                "path {path:?} leaves the tree"
            );
            let n = rr.options.negotiate(file_len, path_max);
            check_negotiated(&rr.options, &n, path_max);
            out.push_str(&format!(
                " ok {:?} {} {}",
                rr.mode,
                n.blksize == 512,
                n.windowsize > 1
            ));
        }
    }
    // The options alone, as an OACK would carry them.
    if let Ok(Packet::Oack { options }) = packet::decode(bytes)
        && let Ok(requested) = Requested::parse(&options)
    {
        let n = requested.negotiate(file_len, path_max);
        check_negotiated(&requested, &n, path_max);
    }
    sig(&out)
}

fn check_negotiated(requested: &Requested, n: &options::Negotiated, path_max: u16) {
    assert!(
        (options::MIN_BLKSIZE..=options::MAX_BLKSIZE).contains(&n.blksize),
        "blksize {}",
        n.blksize
    );
    assert!(
        n.blksize == options::DEFAULT_BLKSIZE || n.blksize <= path_max.max(options::MIN_BLKSIZE),
        "blksize {} over the path's {path_max}",
        n.blksize
    );
    assert!(
        (1..=options::MAX_WINDOWSIZE).contains(&n.windowsize),
        "windowsize {}",
        n.windowsize
    );
    assert!(
        n.windowsize == 1
            || usize::from(n.windowsize) * usize::from(n.blksize) <= options::MAX_WINDOW_BYTES,
        "window {} x {}",
        n.windowsize,
        n.blksize
    );
    if let Some(t) = n.timeout {
        assert!((1..=255).contains(&t.as_secs()));
    }
    if let Some(oack) = &n.oack {
        assert!(!oack.is_empty());
        for (name, _) in oack {
            assert!(
                requested.options.iter().any(|(n, _)| n == name),
                "OACK names {name:?}, not asked"
            );
        }
        let mut bytes = Vec::new();
        packet::encode_oack(oack, &mut bytes);
        match packet::decode(&bytes) {
            Ok(Packet::Oack { options }) => assert_eq!(options.len(), oack.len()),
            other => panic!("our OACK decodes as {other:?}"),
        }
    }
}

pub const DICT: &[&[u8]] = &[
    b"\0",
    b"octet\0",
    b"netascii\0",
    b"mail\0",
    b"blksize\0",
    b"tsize\0",
    b"timeout\0",
    b"windowsize\0",
    b"65464\0",
    b"1468\0",
    b"0\0",
    b"..",
    b"/",
    b"\\",
    b"\0\0",
];
