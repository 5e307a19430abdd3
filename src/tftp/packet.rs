//! TFTP packets on the wire (RFC 1350, options from RFC 2347): decoding that never
//! panics on any input, and encoding into caller-owned buffers.

/// Opcodes (RFC 1350 §5, RFC 2347 for OACK).
pub const RRQ: u16 = 1;
pub const WRQ: u16 = 2;
pub const DATA: u16 = 3;
pub const ACK: u16 = 4;
pub const ERROR: u16 = 5;
pub const OACK: u16 = 6;

/// Error codes (RFC 1350 appendix, 8 from RFC 2347). The whole table, for reference,
/// though a read-only server never sends 6 or 7.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    DiskFull = 3,
    IllegalOperation = 4,
    UnknownTransferId = 5,
    FileExists = 6,
    NoSuchUser = 7,
    OptionRefused = 8,
}

/// A decoded packet, borrowing from the datagram it came in.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq(Request<'a>),
    Wrq(Request<'a>),
    Data {
        block: u16,
        data: &'a [u8],
    },
    Ack {
        block: u16,
    },
    /// `code` is 0 and `message` empty when a peer sends a truncated ERROR: an ERROR
    /// from the peer still ends the transfer, however badly it is formed.
    Error {
        code: u16,
        message: String,
    },
    Oack {
        options: Vec<(&'a [u8], &'a [u8])>,
    },
}

/// An option as sent: name and value, NUL terminators removed.
pub type RawOption<'a> = (&'a [u8], &'a [u8]);

/// A read or write request: file name, mode and options, each as sent (not yet
/// checked: see `request`).
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub filename: &'a [u8],
    pub mode: &'a [u8],
    pub options: Vec<RawOption<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} bytes: too short for a TFTP packet")]
    TooShort(usize),
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("request does not end with a NUL byte")]
    Unterminated,
    #[error("request has no mode field")]
    NoMode,
    #[error("option {0:?} has no value")]
    OptionWithoutValue(String),
}

pub fn decode(bytes: &[u8]) -> Result<Packet<'_>, DecodeError> {
    let Some((&[hi, lo], body)) = bytes.split_first_chunk::<2>() else {
        return Err(DecodeError::TooShort(bytes.len()));
    };
    match u16::from_be_bytes([hi, lo]) {
        RRQ => decode_request(body).map(Packet::Rrq),
        WRQ => decode_request(body).map(Packet::Wrq),
        DATA => {
            let (block, data) = split_block(body).ok_or(DecodeError::TooShort(bytes.len()))?;
            Ok(Packet::Data { block, data })
        }
        ACK => {
            // Trailing bytes after the block number are tolerated: some stacks pad.
            let (block, _) = split_block(body).ok_or(DecodeError::TooShort(bytes.len()))?;
            Ok(Packet::Ack { block })
        }
        ERROR => {
            let (code, rest) = split_block(body).unwrap_or((0, &[]));
            let text = rest.split(|&b| b == 0).next().unwrap_or_default();
            Ok(Packet::Error {
                code,
                message: String::from_utf8_lossy(text).into_owned(),
            })
        }
        OACK => {
            let fields = nul_fields(body)?;
            Ok(Packet::Oack {
                options: pairs(&fields)?,
            })
        }
        other => Err(DecodeError::UnknownOpcode(other)),
    }
}

fn split_block(body: &[u8]) -> Option<(u16, &[u8])> {
    let (&[hi, lo], rest) = body.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes([hi, lo]), rest))
}

/// NUL-terminated fields. The last field must be terminated (a request cut short
/// is refused, not guessed at); extra NULs after the last field are padding.
fn nul_fields(body: &[u8]) -> Result<Vec<&[u8]>, DecodeError> {
    let Some(without_last_nul) = body.strip_suffix(&[0]) else {
        return Err(DecodeError::Unterminated);
    };
    let mut fields: Vec<&[u8]> = without_last_nul.split(|&b| b == 0).collect();
    // Padding: trailing empty fields that would leave an odd number of option fields.
    while fields.len() > 2 && fields.len() % 2 == 1 && fields.last().is_some_and(|f| f.is_empty()) {
        fields.pop();
    }
    Ok(fields)
}

fn pairs<'a>(fields: &[&'a [u8]]) -> Result<Vec<RawOption<'a>>, DecodeError> {
    let mut chunks = fields.chunks_exact(2);
    let pairs = chunks.by_ref().map(|pair| (pair[0], pair[1])).collect();
    if let [name] = chunks.remainder() {
        return Err(DecodeError::OptionWithoutValue(
            String::from_utf8_lossy(name).into_owned(),
        ));
    }
    Ok(pairs)
}

fn decode_request(body: &[u8]) -> Result<Request<'_>, DecodeError> {
    let fields = nul_fields(body)?;
    let [filename, mode, options @ ..] = fields.as_slice() else {
        return Err(DecodeError::NoMode);
    };
    Ok(Request {
        filename,
        mode,
        options: pairs(options)?,
    })
}

pub fn encode_data(block: u16, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
pub fn encode_ack(block: u16, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&ACK.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

pub fn encode_error(code: ErrorCode, message: &str, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&ERROR.to_be_bytes());
    out.extend_from_slice(&(code as u16).to_be_bytes());
    // A NUL inside the text would end it early on the other side.
    out.extend(message.bytes().filter(|&b| b != 0));
    out.push(0);
}

pub fn encode_oack(options: &[(String, String)], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&OACK.to_be_bytes());
    for (name, value) in options {
        for field in [name, value] {
            out.extend(field.bytes().filter(|&b| b != 0));
            out.push(0);
        }
    }
}

/// A request as a client sends it (for tests).
#[cfg(test)]
pub fn encode_request(
    opcode: u16,
    filename: &[u8],
    mode: &str,
    options: &[(&str, &str)],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(&opcode.to_be_bytes());
    for field in [filename, mode.as_bytes()].into_iter().chain(
        options
            .iter()
            .flat_map(|(n, v)| [n.as_bytes(), v.as_bytes()]),
    ) {
        out.extend_from_slice(field);
        out.push(0);
    }
}

/// Netascii (RFC 764 as used by RFC 1350): LF becomes CR LF, a bare CR becomes CR NUL.
/// Applied once per file and cached, never per block.
pub fn to_netascii(raw: &[u8]) -> Vec<u8> {
    let extra = raw.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
    let mut out = Vec::with_capacity(raw.len() + extra);
    for &b in raw {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            _ => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(bytes: &[u8]) -> Result<Packet<'_>, DecodeError> {
        decode(bytes)
    }

    #[test]
    fn read_request_with_options() {
        let mut buf = Vec::new();
        encode_request(
            RRQ,
            b"snponly.efi",
            "octet",
            &[("tsize", "0"), ("blksize", "1468")],
            &mut buf,
        );
        let Ok(Packet::Rrq(req)) = decode(&buf) else {
            panic!("not an RRQ: {buf:?}");
        };
        assert_eq!(req.filename, b"snponly.efi");
        assert_eq!(req.mode, b"octet");
        assert_eq!(
            req.options,
            vec![(&b"tsize"[..], &b"0"[..]), (&b"blksize"[..], &b"1468"[..])]
        );
    }

    #[test]
    fn requests_cut_short_are_refused() {
        assert_eq!(
            request(b"\x00\x01file\x00octet"),
            Err(DecodeError::Unterminated)
        );
        assert_eq!(request(b"\x00\x01file"), Err(DecodeError::Unterminated));
        assert_eq!(request(b"\x00\x01file\x00"), Err(DecodeError::NoMode));
        assert_eq!(request(b"\x00\x01"), Err(DecodeError::Unterminated));
        assert_eq!(
            request(b"\x00\x01f\x00octet\x00blksize\x00"),
            Err(DecodeError::OptionWithoutValue("blksize".into()))
        );
        assert_eq!(request(b"\x00"), Err(DecodeError::TooShort(1)));
        assert_eq!(request(b""), Err(DecodeError::TooShort(0)));
        assert_eq!(request(b"\x00\x09xx"), Err(DecodeError::UnknownOpcode(9)));
    }

    #[test]
    fn trailing_padding_after_a_request_is_tolerated() {
        let Ok(Packet::Rrq(req)) = request(b"\x00\x01f\x00octet\x00\x00\x00\x00") else {
            panic!("padded RRQ refused");
        };
        assert_eq!((req.filename, req.mode), (&b"f"[..], &b"octet"[..]));
        assert!(req.options.iter().all(|(n, _)| n.is_empty()));
    }

    #[test]
    fn short_error_packets_still_decode_as_errors() {
        for bytes in [&b"\x00\x05"[..], b"\x00\x05\x00", b"\x00\x05\x00\x08"] {
            assert!(
                matches!(decode(bytes), Ok(Packet::Error { .. })),
                "{bytes:?}"
            );
        }
        assert_eq!(
            decode(b"\x00\x05\x00\x08"),
            Ok(Packet::Error {
                code: 8,
                message: String::new()
            })
        );
        assert_eq!(
            decode(b"\x00\x05\x00\x01no such file"),
            Ok(Packet::Error {
                code: 1,
                message: "no such file".into()
            })
        );
    }

    #[test]
    fn ack_data_and_short_forms() {
        assert_eq!(
            decode(b"\x00\x04\xff\xff"),
            Ok(Packet::Ack { block: 65535 })
        );
        assert_eq!(decode(b"\x00\x04\x00"), Err(DecodeError::TooShort(3)));
        assert_eq!(
            decode(b"\x00\x03\x00\x01abc"),
            Ok(Packet::Data {
                block: 1,
                data: b"abc"
            })
        );
    }

    #[test]
    fn encoders_produce_what_the_decoder_reads() {
        let mut buf = Vec::new();
        encode_data(7, b"xyz", &mut buf);
        assert_eq!(buf, b"\x00\x03\x00\x07xyz");
        encode_error(ErrorCode::OptionRefused, "bad\0option", &mut buf);
        assert_eq!(buf, b"\x00\x05\x00\x08badoption\x00");
        encode_oack(&[("blksize".into(), "1468".into())], &mut buf);
        assert_eq!(buf, b"\x00\x06blksize\x001468\x00");
        assert_eq!(
            decode(&buf),
            Ok(Packet::Oack {
                options: vec![(&b"blksize"[..], &b"1468"[..])]
            })
        );
        encode_ack(258, &mut buf);
        assert_eq!(buf, b"\x00\x04\x01\x02");
    }

    #[test]
    fn netascii_conversion() {
        assert_eq!(to_netascii(b"a\nb\rc\r\n"), b"a\r\nb\r\0c\r\0\r\n");
        assert_eq!(to_netascii(b""), b"");
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        // Every packet of up to 3 bytes, and a spread of longer ones.
        let mut seed = 0x2545_f491_u32;
        let mut buf = Vec::new();
        for len in 0..64 {
            for _ in 0..500 {
                buf.clear();
                for _ in 0..len {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    // Small values make opcodes and NULs common.
                    buf.push(if seed.is_multiple_of(3) {
                        0
                    } else {
                        (seed % 8) as u8
                    });
                }
                let _ = decode(&buf);
            }
        }
    }
}
