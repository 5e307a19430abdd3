//! What arrives on port 69, judged before any file is touched: a read request with a
//! confined path and well-formed options, or a refusal with the ERROR to answer.

use super::options::{OptionError, Requested};
use super::packet::{self, DecodeError, ErrorCode, Packet};
use std::path::{Component, Path, PathBuf};

/// Longest path a client may ask for; firmware asks for short names.
pub const MAX_PATH_LEN: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Octet,
    Netascii,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// Relative, without `.` or `..` components.
    pub path: PathBuf,
    pub mode: Mode,
    pub options: Requested,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    #[error("path longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("path leaves the served tree (`..`, absolute, or empty)")]
    NotRelative,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path is not UTF-8")]
    NotUtf8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("write request: rackboot serves read-only")]
    Write,
    #[error("malformed request: {0}")]
    Malformed(DecodeError),
    #[error("transfer mode {0:?} is not supported")]
    Mode(String),
    #[error("{0}")]
    Path(PathRefusal),
    #[error("{0}")]
    Option(OptionError),
    /// DATA, ACK, ERROR or OACK on the request port: nobody to answer.
    #[error("{0} packet on the request port")]
    NotARequest(&'static str),
}

impl Refusal {
    /// The ERROR to answer with; `None`: drop silently (answering an ERROR with an
    /// ERROR could loop between two servers).
    pub fn error(&self) -> Option<(ErrorCode, &'static str)> {
        match self {
            Refusal::Write => Some((ErrorCode::AccessViolation, "read-only server")),
            Refusal::Malformed(_) => Some((ErrorCode::IllegalOperation, "malformed request")),
            Refusal::Mode(_) => Some((ErrorCode::IllegalOperation, "unsupported mode")),
            Refusal::Path(_) => Some((ErrorCode::AccessViolation, "access violation")),
            Refusal::Option(_) => Some((ErrorCode::OptionRefused, "duplicate option")),
            Refusal::NotARequest(_) => None,
        }
    }
}

/// Judges one datagram from the request port.
pub fn judge(bytes: &[u8]) -> Result<ReadRequest, Refusal> {
    let request = match packet::decode(bytes) {
        Ok(Packet::Rrq(request)) => request,
        Ok(Packet::Wrq(_)) => return Err(Refusal::Write),
        Ok(Packet::Data { .. }) => return Err(Refusal::NotARequest("DATA")),
        Ok(Packet::Ack { .. }) => return Err(Refusal::NotARequest("ACK")),
        Ok(Packet::Error { .. }) => return Err(Refusal::NotARequest("ERROR")),
        Ok(Packet::Oack { .. }) => return Err(Refusal::NotARequest("OACK")),
        // Too short or an unknown opcode: not TFTP, or not for us.
        Err(e @ (DecodeError::TooShort(_) | DecodeError::UnknownOpcode(_))) => {
            return Err(Refusal::NotARequest(
                if matches!(e, DecodeError::TooShort(_)) {
                    "short"
                } else {
                    "unknown"
                },
            ));
        }
        Err(e) => return Err(Refusal::Malformed(e)),
    };
    let mode = if request.mode.eq_ignore_ascii_case(b"octet") {
        Mode::Octet
    } else if request.mode.eq_ignore_ascii_case(b"netascii") {
        Mode::Netascii
    } else {
        return Err(Refusal::Mode(
            String::from_utf8_lossy(request.mode).into_owned(),
        ));
    };
    let path = confined_path(request.filename).map_err(Refusal::Path)?;
    let options = Requested::parse(&request.options).map_err(Refusal::Option)?;
    Ok(ReadRequest {
        path,
        mode,
        options,
    })
}

/// A requested path, confined to the served tree: no `..`, no backslashes
/// (Windows-style traversal), no NUL, nothing over-long. A leading `/` names the
/// tree's root, as tftpd-hpa (`--secure`) and dnsmasq read it: grub asks for
/// `/grub/grub.cfg`, every file of its prefix with a leading slash.
pub fn confined_path(requested: &[u8]) -> Result<PathBuf, PathRefusal> {
    if requested.len() > MAX_PATH_LEN {
        return Err(PathRefusal::TooLong);
    }
    if requested.contains(&b'\\') {
        return Err(PathRefusal::Backslash);
    }
    if requested.contains(&0) {
        return Err(PathRefusal::Nul);
    }
    let text = std::str::from_utf8(requested).map_err(|_| PathRefusal::NotUtf8)?;
    let text = text.trim_start_matches('/');
    let mut clean = PathBuf::new();
    for component in Path::new(text).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(PathRefusal::NotRelative);
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(PathRefusal::NotRelative);
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(filename: &[u8], mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
        let mut buf = Vec::new();
        packet::encode_request(packet::RRQ, filename, mode, options, &mut buf);
        buf
    }

    #[test]
    fn paths_outside_the_tree_are_refused() {
        let refused: [(&[u8], PathRefusal); 9] = [
            (b"../etc/passwd", PathRefusal::NotRelative),
            (b"ipxe/../../etc/passwd", PathRefusal::NotRelative),
            (b"a/..", PathRefusal::NotRelative),
            (b"/../etc/passwd", PathRefusal::NotRelative),
            (b"/", PathRefusal::NotRelative),
            (b"..\\windows", PathRefusal::Backslash),
            (b"a\0b", PathRefusal::Nul),
            (b"", PathRefusal::NotRelative),
            (b"\xff\xfe", PathRefusal::NotUtf8),
        ];
        for (path, why) in refused {
            assert_eq!(confined_path(path), Err(why), "{path:?}");
        }
        assert_eq!(
            confined_path("a".repeat(256).as_bytes()),
            Err(PathRefusal::TooLong)
        );
        assert!(confined_path("a".repeat(255).as_bytes()).is_ok());
        assert_eq!(
            confined_path(b"./arm64-efi//snponly.efi"),
            Ok(PathBuf::from("arm64-efi/snponly.efi"))
        );
        assert_eq!(confined_path(b"a..b"), Ok(PathBuf::from("a..b")));
        // The root of the served tree, not of the file system.
        assert_eq!(
            confined_path(b"/grub/grub.cfg"),
            Ok(PathBuf::from("grub/grub.cfg"))
        );
        assert_eq!(
            confined_path(b"//etc/passwd"),
            Ok(PathBuf::from("etc/passwd"))
        );
    }

    #[test]
    fn read_requests_are_accepted_with_their_options() {
        let req = judge(&rrq(b"snponly.efi", "OCTET", &[("tsize", "0")])).expect("valid");
        assert_eq!(req.path, PathBuf::from("snponly.efi"));
        assert_eq!(req.mode, Mode::Octet);
        assert_eq!(req.options.options, [("tsize".into(), "0".into())]);
        let req = judge(&rrq(b"x", "netascii", &[])).expect("valid");
        assert_eq!(req.mode, Mode::Netascii);
    }

    #[test]
    fn refusals_carry_the_right_error() {
        let mut wrq = Vec::new();
        packet::encode_request(packet::WRQ, b"x", "octet", &[], &mut wrq);
        let cases: Vec<(Vec<u8>, Option<ErrorCode>)> = vec![
            (wrq, Some(ErrorCode::AccessViolation)),
            (rrq(b"../x", "octet", &[]), Some(ErrorCode::AccessViolation)),
            (
                rrq(b"/../x", "octet", &[]),
                Some(ErrorCode::AccessViolation),
            ),
            (rrq(b"x", "mail", &[]), Some(ErrorCode::IllegalOperation)),
            (
                rrq(b"x", "octet", &[("blksize", "512"), ("blksize", "1468")]),
                Some(ErrorCode::OptionRefused),
            ),
            (
                b"\x00\x01x\x00octet".to_vec(),
                Some(ErrorCode::IllegalOperation),
            ),
            (b"\x00\x05\x00".to_vec(), None),
            (b"\x00\x04\x00\x01".to_vec(), None),
            (b"\x00".to_vec(), None),
            (b"GET / HTTP/1.0\r\n".to_vec(), None),
        ];
        for (bytes, code) in cases {
            let refusal = judge(&bytes).expect_err("must be refused");
            assert_eq!(
                refusal.error().map(|(c, _)| c),
                code,
                "{bytes:?}: {refusal}"
            );
        }
    }
}
