//! Option negotiation (RFC 2347): blksize (RFC 2348), timeout and tsize (RFC 2349),
//! windowsize (RFC 7440). Pure: requested options in, an OACK and settings out.
//!
//! Values out of range are left out of the OACK, which RFC 2347 allows ("the server
//! may ... not include it in the OACK"): the client then runs with the default, which
//! every client must support. Firmware that sends a strange value gets a working
//! transfer instead of an error it may not handle. A duplicated option is ambiguous
//! (which value did the client mean?) and is refused with ERROR 8.

use super::packet::RawOption;
use std::time::Duration;

pub const DEFAULT_BLKSIZE: u16 = 512;
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;
/// Largest window granted. Beyond this, bursts overrun the receive buffers of
/// firmware and small clients and turn into loss; RFC 7440 measurements show little
/// gain past 16 to 64.
pub const MAX_WINDOWSIZE: u16 = 64;
/// Bytes in flight per window at most (133 blocks of 1468, 3 of 65464): keeps a window of
/// large blocks within a default Linux socket receive buffer (212992 bytes).
pub const MAX_WINDOW_BYTES: usize = 192 * 1024;

/// Options as the client asked, checked for duplicates; values not yet judged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requested {
    /// (name as the client spelled it, value), in the client's order.
    pub options: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("option {0:?} appears more than once")]
    Duplicate(String),
}

/// What the transfer runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    /// The client's `timeout`: the most the adaptive retransmission timeout may reach.
    pub timeout: Option<Duration>,
    /// The OACK to send, in the client's order and spelling; `None`: no option was
    /// accepted, so the transfer starts with DATA 1 as in RFC 1350.
    pub oack: Option<Vec<(String, String)>>,
    /// Options left out, and why: for the log.
    pub ignored: Vec<String>,
}

impl Requested {
    pub fn parse(raw: &[RawOption<'_>]) -> Result<Self, OptionError> {
        let mut options: Vec<(String, String)> = Vec::with_capacity(raw.len());
        for (name, value) in raw {
            if name.is_empty() {
                continue; // padding
            }
            let name = String::from_utf8_lossy(name).into_owned();
            if options.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                return Err(OptionError::Duplicate(name));
            }
            options.push((name, String::from_utf8_lossy(value).into_owned()));
        }
        Ok(Requested { options })
    }

    /// Decides every option. `file_len` answers tsize; `path_max_blksize` is the
    /// largest block a datagram to this client can carry unfragmented.
    pub fn negotiate(&self, file_len: u64, path_max_blksize: u16) -> Negotiated {
        let mut out = Negotiated {
            blksize: DEFAULT_BLKSIZE,
            windowsize: 1,
            timeout: None,
            oack: None,
            ignored: Vec::new(),
        };
        let mut oack = Vec::new();
        let mut windowsize_at = None;
        for (name, value) in &self.options {
            let number: Option<u64> =
                if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                    // Too many digits for u64 counts as out of range.
                    Some(value.parse().unwrap_or(u64::MAX))
                } else {
                    None
                };
            let mut ignore = |why: &str| out.ignored.push(format!("{name}={value:?}: {why}"));
            match (name.to_ascii_lowercase().as_str(), number) {
                ("blksize", Some(n))
                    if n >= u64::from(MIN_BLKSIZE) && n <= u64::from(MAX_BLKSIZE) =>
                {
                    // RFC 2348: the server may answer with a smaller size; clamp to
                    // what the path carries so no block is fragmented.
                    let granted = u16::try_from(n)
                        .unwrap_or(MAX_BLKSIZE)
                        .min(path_max_blksize.max(MIN_BLKSIZE));
                    out.blksize = granted;
                    oack.push((name.clone(), granted.to_string()));
                }
                ("blksize", _) => ignore("outside 8..65464"),
                ("timeout", Some(n @ 1..=255)) => {
                    out.timeout = Some(Duration::from_secs(n));
                    oack.push((name.clone(), n.to_string()));
                }
                ("timeout", _) => ignore("outside 1..255 seconds"),
                // RFC 2349: a reading client sends 0; the answer is the size.
                // curl refuses an OACK with tsize 0 ("invalid tsize"), as served by
                // tftpd-hpa and atftpd alike; the empty block says it anyway.
                ("tsize", Some(_)) if file_len == 0 => ignore("empty file"),
                ("tsize", Some(_)) => oack.push((name.clone(), file_len.to_string())),
                ("tsize", None) => ignore("not a number"),
                ("windowsize", Some(n @ 1..=65535)) => {
                    windowsize_at = Some(oack.len());
                    oack.push((name.clone(), n.to_string()));
                }
                ("windowsize", _) => ignore("outside 1..65535"),
                _ => ignore("not supported"),
            }
        }
        // The window depends on the final block size, whatever the options' order.
        if let Some(at) = windowsize_at
            && let Some((_, value)) = oack.get_mut(at)
        {
            let asked: u16 = value.parse().unwrap_or(1);
            let by_bytes = (MAX_WINDOW_BYTES / usize::from(out.blksize)).max(1);
            let granted = asked
                .min(MAX_WINDOWSIZE)
                .min(u16::try_from(by_bytes).unwrap_or(u16::MAX));
            out.windowsize = granted;
            *value = granted.to_string();
        }
        if !oack.is_empty() {
            out.oack = Some(oack);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requested(pairs: &[(&str, &str)]) -> Requested {
        let raw: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        Requested::parse(&raw).expect("no duplicates")
    }

    fn oack(n: &Negotiated) -> Vec<(&str, &str)> {
        n.oack
            .iter()
            .flatten()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect()
    }

    #[test]
    fn uefi_probe_options_are_answered_in_order() {
        let n = requested(&[("tsize", "0"), ("blksize", "1468")]).negotiate(173_792, 1468);
        assert_eq!(oack(&n), [("tsize", "173792"), ("blksize", "1468")]);
        assert_eq!((n.blksize, n.windowsize, n.timeout), (1468, 1, None));
    }

    #[test]
    fn blksize_is_clamped_to_the_path() {
        let n = requested(&[("blksize", "65464")]).negotiate(10, 1468);
        assert_eq!(oack(&n), [("blksize", "1468")]);
        assert_eq!(n.blksize, 1468);
        let n = requested(&[("BlkSize", "8")]).negotiate(10, 1468);
        assert_eq!(oack(&n), [("BlkSize", "8")]);
        // Loopback carries the largest block.
        let n = requested(&[("blksize", "65464")]).negotiate(10, 65464);
        assert_eq!(n.blksize, 65464);
    }

    #[test]
    fn out_of_range_values_are_left_out_of_the_oack() {
        for (name, value) in [
            ("blksize", "0"),
            ("blksize", "7"),
            ("blksize", "65465"),
            ("blksize", "99999999999999999999999"),
            ("blksize", "-1"),
            ("blksize", ""),
            ("blksize", "1468x"),
            ("timeout", "0"),
            ("timeout", "256"),
            ("windowsize", "0"),
            ("windowsize", "65536"),
            ("tsize", "abc"),
            ("utimeout", "1000"),
            ("multicast", ""),
        ] {
            let n = requested(&[(name, value)]).negotiate(100, 1468);
            assert_eq!(n.oack, None, "{name}={value}");
            assert_eq!((n.blksize, n.windowsize, n.timeout), (512, 1, None));
            assert_eq!(n.ignored.len(), 1, "{name}={value}");
        }
        // An empty file's size is not offered (curl refuses tsize 0).
        let n = requested(&[("tsize", "0"), ("blksize", "1468")]).negotiate(0, 1468);
        assert_eq!(oack(&n), [("blksize", "1468")]);
        // A bad value does not spoil the good ones beside it.
        let n = requested(&[("blksize", "0"), ("tsize", "0")]).negotiate(5, 1468);
        assert_eq!(oack(&n), [("tsize", "5")]);
    }

    #[test]
    fn windowsize_is_capped_by_count_and_bytes() {
        let n = requested(&[("blksize", "1468"), ("windowsize", "16")]).negotiate(1, 1468);
        assert_eq!(oack(&n), [("blksize", "1468"), ("windowsize", "16")]);
        assert_eq!(n.windowsize, 16);
        let n = requested(&[("windowsize", "65535")]).negotiate(1, 1468);
        assert_eq!(n.windowsize, MAX_WINDOWSIZE);
        // Order does not matter: the byte cap uses the final block size.
        let n = requested(&[("windowsize", "64"), ("blksize", "65464")]).negotiate(1, 65464);
        assert_eq!(n.windowsize, 3);
        assert_eq!(oack(&n), [("windowsize", "3"), ("blksize", "65464")]);
    }

    #[test]
    fn timeout_is_fixed_when_asked() {
        let n = requested(&[("timeout", "3")]).negotiate(1, 1468);
        assert_eq!(n.timeout, Some(Duration::from_secs(3)));
        assert_eq!(oack(&n), [("timeout", "3")]);
    }

    #[test]
    fn duplicates_are_refused_whatever_the_case() {
        let raw: [(&[u8], &[u8]); 2] = [(b"blksize", b"512"), (b"BLKSIZE", b"1468")];
        assert_eq!(
            Requested::parse(&raw),
            Err(OptionError::Duplicate("BLKSIZE".into()))
        );
        let raw: [(&[u8], &[u8]); 2] = [(b"foo", b"1"), (b"foo", b"2")];
        assert!(Requested::parse(&raw).is_err());
    }
}
