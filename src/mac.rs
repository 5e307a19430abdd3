//! Hardware (MAC) addresses: the key every machine is known by.

use std::fmt;
use std::str::FromStr;

/// An Ethernet hardware address. Displayed lowercase with `:` separators, which is
/// also how it is stored in the inventory.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a MAC address: {0:?} (expected six hex pairs separated by ':' or '-')")]
pub struct MacParseError(pub String);

impl MacAddr {
    /// Parses `52:54:00:ab:cd:ef`, `52-54-00-AB-CD-EF`, and the percent-encoded form
    /// iPXE puts in URL paths (`52%3A54%3A00...`).
    pub fn parse(text: &str) -> Result<Self, MacParseError> {
        let decoded = percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map_err(|_| MacParseError(text.to_string()))?;
        let err = || MacParseError(text.to_string());
        let parts: Vec<&str> = decoded.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(err());
        }
        let mut bytes = [0u8; 6];
        for (byte, part) in bytes.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        Ok(MacAddr(bytes))
    }

    /// Takes the hardware address out of a DHCP `chaddr` field.
    pub fn from_chaddr(chaddr: &[u8]) -> Option<Self> {
        let bytes: [u8; 6] = chaddr.get(..6)?.try_into().ok()?;
        Some(MacAddr(bytes))
    }

    /// Dash-separated form, safe in URL paths without encoding.
    pub fn dashed(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MacAddr::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECTED: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);

    #[test]
    fn accepts_every_spelling_ipxe_and_operators_use() {
        for text in [
            "52:54:00:ab:cd:ef",
            "52-54-00-AB-CD-EF",
            "52:54:00:AB:cd:Ef",
            "52%3A54%3A00%3Aab%3Acd%3Aef",
            "52%3a54%3a00%3aab%3acd%3aef",
        ] {
            assert_eq!(MacAddr::parse(text), Ok(EXPECTED), "{text}");
        }
    }

    #[test]
    fn refuses_malformed() {
        for text in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "5254.00ab.cdef",
            "52:54:00:ab:cd:eg",
            "52:54:00:ab:cd:e",
            "52:54:00:ab:cd:0ef",
            "%FF%FE",
        ] {
            assert!(MacAddr::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn displays_lowercase_colon_and_dashed() {
        assert_eq!(EXPECTED.to_string(), "52:54:00:ab:cd:ef");
        assert_eq!(EXPECTED.dashed(), "52-54-00-ab-cd-ef");
    }

    #[test]
    fn chaddr_shorter_than_six_bytes_is_refused() {
        assert_eq!(MacAddr::from_chaddr(&[1, 2, 3]), None);
        assert_eq!(
            MacAddr::from_chaddr(&[0x52, 0x54, 0, 0xab, 0xcd, 0xef, 0, 0]),
            Some(EXPECTED)
        );
    }
}
