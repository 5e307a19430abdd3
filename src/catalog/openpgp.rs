//! OpenPGP signatures as distributions put them on their release files: clearsigned
//! text (Debian's `InRelease`, Fedora/Rocky/Alma `CHECKSUM`) and detached signatures
//! (Ubuntu's `SHA256SUMS.gpg`, Flatcar's `*.sig`), checked against a [`Keyring`] of
//! trusted public keys. Pure and bounded: inputs come from the network, so every size
//! is capped and nothing here panics on them.
//!
//! The packets and the cryptography are rpgp's (crate `pgp`), pure Rust throughout.
//! sequoia-openpgp was the alternative, but it defaults to nettle, a C library, and its
//! pure-Rust backend must be opted into as "experimental" and "variable-time".
//!
//! The policy is ours: the cleartext framework is parsed here (rpgp's parser rescans its
//! whole buffer on every line, quadratic on a hostile 64 MiB message), signatures are
//! hashed here (so one pass over a multi-GB file serves every signature on it), and
//! which key may sign when is decided here:
//! - a signature counts if its key is a trusted primary key with a valid self-signature
//!   that lets it sign, or a subkey bound to one by a valid binding signature that says
//!   "sign" and carries the subkey's own back-signature;
//! - SHA-1, MD5 and RIPEMD-160 are refused for signatures over data (a collision lets a
//!   signature be moved onto other content). Inside a key's own binding signatures only
//!   MD5 is refused: GnuPG 1.x made SHA-1 self-signatures, still found on distribution
//!   keys, and there the key holder chose all the hashed content;
//! - validity is judged at the signature's creation time: a key that had expired, or
//!   was revoked as superseded or retired, before it signed does not count; one revoked
//!   as compromised (or for no stated reason) never counts. Whether a signature is
//!   fresh enough is the caller's decision (a `Release`'s `Valid-Until`): nothing here
//!   reads the clock.

use std::io::Read;

use digest::DynDigest;
use pgp::armor::{BlockType, Dearmor, DearmorOptions};
use pgp::composed::{Deserializable, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{
    Packet, PacketParser, RevocationCode, Signature, SignatureConfig, SignatureType,
    SignatureVersion, SignatureVersionSpecific, SubpacketData,
};
use pgp::types::{KeyDetails, KeyVersion, Tag, VerifyingKey};

/// A clearsigned message larger than this is refused (an `InRelease` is well under 1 MiB).
pub const MAX_CLEARTEXT: usize = 64 << 20;
/// A signature (block or file) larger than this is refused (one signature is < 1 KiB).
pub const MAX_SIGNATURE: usize = 1 << 20;
/// A key file larger than this is refused (Debian's keyring is about 55 KiB).
pub const MAX_KEYRING: usize = 16 << 20;
/// Signatures on one message beyond this are refused (Debian uses three). With the next
/// cap it bounds the hashing of a file to a few passes' worth, whatever the signature says.
const MAX_SIGNATURES: usize = 16;
/// Keys one signature is tried against (more than one only on a key ID collision).
const MAX_SIGNERS: usize = 4;
/// Keys in one keyring beyond this are refused: each costs a scan per signature.
const MAX_KEYS: usize = 10_000;
/// Read size when streaming a detached signature's file.
const CHUNK: usize = 64 << 10;

const CLEARTEXT_BEGIN: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";
const SIGNATURE_BEGIN: &[u8] = b"-----BEGIN PGP SIGNATURE-----";
const SIGNATURE_END: &[u8] = b"-----END PGP SIGNATURE-----";
const PUBLIC_KEY_BEGIN: &[u8] = b"-----BEGIN PGP PUBLIC KEY BLOCK-----";
const PRIVATE_KEY_BEGIN: &[u8] = b"-----BEGIN PGP PRIVATE KEY BLOCK-----";

/// Why a key file, a message or a signature was refused, in an operator's words.
#[derive(Debug, thiserror::Error)]
pub enum PgpError {
    #[error("{what} is {size} bytes, more than the {limit} accepted (refused)")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("the key file holds no OpenPGP public key")]
    NoKey,
    #[error("the key file could not be read as OpenPGP public keys: {0}")]
    BadKeyring(String),
    #[error("the signed message is malformed: {0}")]
    BadMessage(String),
    #[error("the signature could not be read: {0}")]
    BadSignature(String),
    #[error("no signature found")]
    NoSignature,
    #[error(
        "signed by {} which {} not in the trusted keyring (trusted: {})",
        keys_phrase(.signers), if .signers.len() == 1 { "is" } else { "are" },
        if .trusted.is_empty() { "none".to_string() } else { .trusted.join(", ") }
    )]
    UntrustedSigner {
        /// The keys the signatures name (fingerprint, else key ID).
        signers: Vec<String>,
        /// The keyring's primary keys.
        trusted: Vec<String>,
    },
    #[error("the signature by key {key} does not match the {what} (it was changed after signing)")]
    Mismatch { key: String, what: &'static str },
    #[error("the signature by key {key} uses the unsupported or weak hash {hash} (refused)")]
    WeakHash { key: String, hash: String },
    #[error("key {key} was revoked{when} ({reason}): its signatures are refused")]
    Revoked {
        key: String,
        when: String,
        reason: String,
    },
    #[error("key {key} had expired at signing time (expired {expired}, signed {signed})")]
    Expired {
        key: String,
        expired: String,
        signed: String,
    },
    #[error("key {key} may not sign: {why}")]
    KeyUnusable { key: String, why: String },
    #[error("unsupported signature by key {key}: {why}")]
    Unsupported { key: String, why: String },
    #[error("reading the signed file failed: {0}")]
    Read(#[source] std::io::Error),
}

/// Trusted public keys: primary keys with their subkeys, as parsed; what may sign is
/// decided when a signature names a key.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// Binary keyrings (concatenated transferable public keys, as
    /// `/usr/share/keyrings/debian-archive-keyring.gpg`) and ASCII-armoured files (one or
    /// several keys or blocks, e.g. `RPM-GPG-KEY-*` files) alike.
    pub fn from_bytes(bytes: &[u8]) -> Result<Keyring, PgpError> {
        if bytes.len() > MAX_KEYRING {
            return Err(PgpError::TooLarge {
                what: "the key file",
                size: bytes.len(),
                limit: MAX_KEYRING,
            });
        }
        let bytes = bytes.trim_ascii_start();
        let mut keys = Vec::new();
        match bytes.first() {
            None => return Err(PgpError::NoKey),
            // A packet tag always has its top bit set; armour is ASCII.
            Some(b) if b & 0x80 != 0 => {
                let parsed = SignedPublicKey::from_bytes_many(bytes)
                    .map_err(|e| PgpError::BadKeyring(e.to_string()))?;
                collect_keys(parsed, &mut keys)?;
            }
            Some(_) => {
                // Each armour block on its own: a file may hold several, with text
                // around them. Armour lines start a line, base64 never does.
                let (mut blocks, mut private) = (0, false);
                let mut lines = Lines { buf: bytes, pos: 0 };
                while let Some((start, line)) = lines.next_line() {
                    let line = line.trim_ascii_start();
                    private |= line.starts_with(PRIVATE_KEY_BEGIN);
                    if !line.starts_with(PUBLIC_KEY_BEGIN) {
                        continue;
                    }
                    blocks += 1;
                    let opts = DearmorOptions::new().set_limit(MAX_KEYRING);
                    let (parsed, _headers) =
                        SignedPublicKey::from_armor_many_buf_with_options(&bytes[start..], opts)
                            .map_err(|e| PgpError::BadKeyring(e.to_string()))?;
                    collect_keys(parsed, &mut keys)?;
                }
                if blocks == 0 {
                    return Err(PgpError::BadKeyring(
                        if private {
                            "it is a private key; give the public key (gpg --armor --export)"
                        } else {
                            "it is neither a binary keyring nor an armoured public key \
                             (-----BEGIN PGP PUBLIC KEY BLOCK-----)"
                        }
                        .into(),
                    ));
                }
            }
        }
        if keys.is_empty() {
            return Err(PgpError::NoKey);
        }
        Ok(Keyring { keys })
    }

    /// Several files joined (a definition may trust more than one key file).
    pub fn merge(&mut self, other: Keyring) {
        self.keys.extend(other.keys);
    }

    /// Upper-case hex fingerprints of the primary keys, for messages and the panel,
    /// each once, in file order.
    pub fn fingerprints(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            let fp = format!("{:X}", key.fingerprint());
            if !out.contains(&fp) {
                out.push(fp);
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn collect_keys(
    parsed: Box<dyn Iterator<Item = pgp::errors::Result<SignedPublicKey>> + '_>,
    keys: &mut Vec<SignedPublicKey>,
) -> Result<(), PgpError> {
    for key in parsed {
        // One unreadable key fails the file: skipping it would later read as "not in the
        // trusted keyring" for a key the operator can see in it.
        let key = key.map_err(|e| PgpError::BadKeyring(format!("key {}: {e}", keys.len() + 1)))?;
        if keys.len() >= MAX_KEYS {
            return Err(PgpError::BadKeyring(format!(
                "more than {MAX_KEYS} keys (refused)"
            )));
        }
        keys.push(key);
    }
    Ok(())
}

/// A good signature by a trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The trusted primary key, upper hex, no spaces.
    pub fingerprint: String,
    /// Unix seconds of the signature creation time.
    pub signed_at: Option<i64>,
    /// The key that made the signature: the primary key or one of its signing subkeys.
    pub signing_key: String,
}

/// A clearsigned message: the signed text exactly as signed (dash-escaping undone,
/// trailing blanks of each line dropped, lines joined by CRLF as OpenPGP's canonical
/// text has them and no line break after the last line; `str::lines` reads it) and
/// who signed it. With several signatures, the first good one by a trusted key counts.
pub fn verify_cleartext(keyring: &Keyring, message: &[u8]) -> Result<(String, Verified), PgpError> {
    if message.len() > MAX_CLEARTEXT {
        return Err(PgpError::TooLarge {
            what: "the signed message",
            size: message.len(),
            limit: MAX_CLEARTEXT,
        });
    }
    let parts = split_cleartext(message)?;
    let signatures = read_signatures(parts.signature)?;
    let verified = verify_signatures(
        keyring,
        &signatures,
        parts.text.as_bytes(),
        Data::Canonical(&parts.hashes),
    )?;
    Ok((parts.text, verified))
}

/// A detached signature, binary or armoured, over a file streamed from `data` (read
/// once, in chunks, whatever its size).
pub fn verify_detached(
    keyring: &Keyring,
    data: impl Read,
    signature: &[u8],
) -> Result<Verified, PgpError> {
    let signatures = read_signatures(signature)?;
    verify_signatures(keyring, &signatures, data, Data::File)
}

// --- The cleartext framework (RFC 9580 section 7) ---

struct Cleartext<'a> {
    text: String,
    /// The `Hash:` headers; empty when there are none.
    hashes: Vec<HashAlgorithm>,
    /// From `-----BEGIN PGP SIGNATURE-----` to the end of its END line.
    signature: &'a [u8],
}

/// Lines of a buffer, split on LF, each with its start offset.
struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Option<(usize, &'a [u8])> {
        let start = self.pos;
        let rest = self.buf.get(start..).filter(|r| !r.is_empty())?;
        let (line, advance) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        self.pos += advance;
        Some((start, line))
    }
}

/// Trailing spaces, tabs and CRs: what "the same line" ignores when matching armour.
fn trim_line(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|&b| !matches!(b, b' ' | b'\t' | b'\r'))
        .map_or(0, |i| i + 1);
    &line[..end]
}

fn split_cleartext(message: &[u8]) -> Result<Cleartext<'_>, PgpError> {
    let bad = |why: &str| PgpError::BadMessage(why.to_string());
    let mut lines = Lines {
        buf: message,
        pos: 0,
    };

    // Text before the header is not signed; refusing it means nobody downstream can
    // mistake it for signed text.
    loop {
        let Some((_, line)) = lines.next_line() else {
            return Err(PgpError::NoSignature);
        };
        let line = trim_line(line);
        if line.is_empty() {
            continue;
        }
        if line == CLEARTEXT_BEGIN {
            break;
        }
        return Err(bad(
            "it does not begin with -----BEGIN PGP SIGNED MESSAGE----- \
             (text before it would be unsigned: refused)",
        ));
    }

    // Armour headers: only `Hash:` belongs here, up to an empty line.
    let mut hashes = Vec::new();
    let mut header_lines = 0;
    loop {
        let Some((_, line)) = lines.next_line() else {
            return Err(bad("it ends inside its header"));
        };
        let line = trim_line(line);
        if line.is_empty() {
            break;
        }
        header_lines += 1;
        if header_lines > 16 {
            return Err(bad("its header has more than 16 lines"));
        }
        let Some(value) = line.strip_prefix(b"Hash:") else {
            return Err(PgpError::BadMessage(format!(
                "unexpected header line \"{}\" (only Hash: is allowed)",
                String::from_utf8_lossy(&line[..line.len().min(60)])
            )));
        };
        for name in value.split(|&b| b == b',') {
            let name = String::from_utf8_lossy(name.trim_ascii());
            let hash = name.parse::<HashAlgorithm>().map_err(|()| {
                PgpError::BadMessage(format!("unknown hash \"{name}\" in its header"))
            })?;
            hashes.push(hash);
        }
    }

    // The signed text, up to the signature's armour line.
    let mut text = Vec::with_capacity(message.len());
    let mut first = true;
    let mut line_no = 0usize;
    let signature_start = loop {
        let Some((start, line)) = lines.next_line() else {
            return Err(bad(
                "no -----BEGIN PGP SIGNATURE----- after the signed text",
            ));
        };
        line_no += 1;
        let content = if let Some(escaped) = line.strip_prefix(b"- ") {
            escaped
        } else if line.first() == Some(&b'-') {
            if trim_line(line) == SIGNATURE_BEGIN {
                break start;
            }
            // Signers dash-escape every line starting with a dash; one that is not is
            // armour we do not expect, or an edit.
            return Err(PgpError::BadMessage(format!(
                "line {line_no} of the signed text starts with a dash but is not dash-escaped"
            )));
        } else {
            line
        };
        // The line's CR (of CRLF) and then trailing blanks are not part of what is
        // signed (RFC 9580 section 7.2).
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        let end = content
            .iter()
            .rposition(|&b| b != b' ' && b != b'\t')
            .map_or(0, |i| i + 1);
        if !first {
            text.extend_from_slice(b"\r\n");
        }
        first = false;
        text.extend_from_slice(&content[..end]);
    };

    let signature_end = loop {
        let Some((start, line)) = lines.next_line() else {
            return Err(bad(
                "its signature block has no -----END PGP SIGNATURE----- line",
            ));
        };
        if trim_line(line) == SIGNATURE_END {
            break start + line.len();
        }
    };
    if !message[signature_end..].trim_ascii().is_empty() {
        return Err(bad(
            "there is data after -----END PGP SIGNATURE----- (refused)",
        ));
    }
    let signature = &message[signature_start..signature_end];
    if signature.len() > MAX_SIGNATURE {
        return Err(PgpError::TooLarge {
            what: "the signature block",
            size: signature.len(),
            limit: MAX_SIGNATURE,
        });
    }
    let text = String::from_utf8(text).map_err(|_| bad("the signed text is not UTF-8"))?;
    Ok(Cleartext {
        text,
        hashes,
        signature,
    })
}

// --- Signature packets ---

/// The signature packets of a detached signature or a signature block.
fn read_signatures(bytes: &[u8]) -> Result<Vec<Signature>, PgpError> {
    if bytes.len() > MAX_SIGNATURE {
        return Err(PgpError::TooLarge {
            what: "the signature",
            size: bytes.len(),
            limit: MAX_SIGNATURE,
        });
    }
    let bytes = bytes.trim_ascii_start();
    let bad = |e: &dyn std::fmt::Display| PgpError::BadSignature(e.to_string());
    let dearmored;
    let binary = match bytes.first() {
        None => return Err(PgpError::NoSignature),
        Some(b) if b & 0x80 != 0 => bytes,
        Some(_) if bytes.starts_with(SIGNATURE_BEGIN) => {
            let opts = DearmorOptions::new().set_limit(MAX_SIGNATURE);
            let mut dearmor = Dearmor::with_options(bytes, opts);
            let mut out = Vec::new();
            // Base64 only shrinks, but the cap does not depend on that.
            (&mut dearmor)
                .take(MAX_SIGNATURE as u64)
                .read_to_end(&mut out)
                .map_err(|e| bad(&e))?;
            if dearmor.typ != Some(BlockType::Signature) {
                return Err(PgpError::BadSignature("not a signature block".into()));
            }
            dearmored = out;
            &dearmored[..]
        }
        Some(_) => {
            return Err(PgpError::BadSignature(
                "it is neither a binary OpenPGP signature nor an armoured one \
                 (-----BEGIN PGP SIGNATURE-----)"
                    .into(),
            ));
        }
    };

    let mut signatures = Vec::new();
    for packet in PacketParser::new(binary) {
        match packet {
            Ok(Packet::Signature(sig)) => {
                if signatures.len() >= MAX_SIGNATURES {
                    return Err(PgpError::BadSignature(format!(
                        "more than {MAX_SIGNATURES} signatures (refused)"
                    )));
                }
                signatures.push(sig);
            }
            // Padding, by design meaningless.
            Ok(Packet::Marker(_) | Packet::Padding(_)) => {}
            Ok(other) => {
                return Err(PgpError::BadSignature(format!(
                    "it holds a {:?} packet where only signatures belong",
                    pgp::packet::PacketTrait::tag(&other)
                )));
            }
            Err(e) => return Err(bad(&e)),
        }
    }
    if signatures.is_empty() {
        return Err(PgpError::NoSignature);
    }
    Ok(signatures)
}

// --- Verification ---

/// What the signatures are over.
#[derive(Clone, Copy)]
enum Data<'a> {
    /// Cleartext already in canonical form, with the message's `Hash:` headers.
    Canonical(&'a [HashAlgorithm]),
    /// A file as is (a text-mode signature hashes it with CRLF line ends).
    File,
}

impl Data<'_> {
    fn what(self) -> &'static str {
        match self {
            Data::Canonical(_) => "signed text",
            Data::File => "file",
        }
    }
}

/// A key that may have made a signature: a primary key, or a subkey and its primary.
#[derive(Clone, Copy)]
struct Signer<'a> {
    primary: &'a SignedPublicKey,
    subkey: Option<&'a SignedPublicSubKey>,
}

impl Signer<'_> {
    fn fingerprint(&self) -> String {
        match self.subkey {
            Some(sub) => format!("{:X}", sub.fingerprint()),
            None => format!("{:X}", self.primary.fingerprint()),
        }
    }

    fn version(&self) -> KeyVersion {
        match self.subkey {
            Some(sub) => sub.version(),
            None => self.primary.version(),
        }
    }

    fn verify(&self, hash: HashAlgorithm, digest: &[u8], sig: &Signature) -> bool {
        let Some(bytes) = sig.signature() else {
            return false;
        };
        match self.subkey {
            Some(sub) => sub.verify(hash, digest, bytes).is_ok(),
            None => self.primary.verify(hash, digest, bytes).is_ok(),
        }
    }
}

/// One signature being hashed.
struct Pending<'a> {
    sig: &'a Signature,
    config: &'a SignatureConfig,
    signer: Signer<'a>,
    hasher: Box<dyn DynDigest + Send>,
    /// Text-mode normalisation of a file: `Some(previous byte was CR)`.
    text: Option<bool>,
}

impl Pending<'_> {
    fn update(&mut self, chunk: &[u8]) {
        let Some(last_was_cr) = self.text.as_mut() else {
            self.hasher.update(chunk);
            return;
        };
        // CR, LF and CRLF each become CRLF (what rpgp and GnuPG sign in text mode).
        let mut rest = chunk;
        if *last_was_cr && rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
        *last_was_cr = false;
        while let Some(i) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            self.hasher.update(&rest[..i]);
            self.hasher.update(b"\r\n");
            if rest[i] == b'\r' {
                match rest.get(i + 1) {
                    Some(b'\n') => rest = &rest[i + 2..],
                    Some(_) => rest = &rest[i + 1..],
                    None => {
                        *last_was_cr = true;
                        rest = &[];
                    }
                }
            } else {
                rest = &rest[i + 1..];
            }
        }
        self.hasher.update(rest);
    }

    /// Whether the signature holds, once all data is in.
    fn finish(mut self) -> bool {
        let Ok(len) = self.config.hash_signature_data(&mut self.hasher) else {
            return false;
        };
        let Ok(trailer) = self.config.trailer(len) else {
            return false;
        };
        self.hasher.update(&trailer);
        let digest = self.hasher.finalize();
        // The two bytes in the packet are a quick check, and RFC 9580 requires it for v6.
        if self.sig.signed_hash_value().as_ref().map(|v| &v[..]) != digest.get(..2) {
            return false;
        }
        self.signer.verify(self.config.hash_alg, &digest, self.sig)
    }
}

/// Why one signature did not count; the most telling one is reported.
struct Refusals {
    /// (rank, error): lower ranks say more about what went wrong.
    errors: Vec<(u8, PgpError)>,
    untrusted: Vec<String>,
}

impl Refusals {
    fn add(&mut self, rank: u8, error: PgpError) {
        self.errors.push((rank, error));
    }

    fn into_error(self, keyring: &Keyring) -> PgpError {
        if let Some((_, error)) = self.errors.into_iter().min_by_key(|(rank, _)| *rank) {
            return error;
        }
        if self.untrusted.is_empty() {
            return PgpError::NoSignature;
        }
        PgpError::UntrustedSigner {
            signers: self.untrusted,
            trusted: keyring.fingerprints(),
        }
    }
}

const RANK_MISMATCH: u8 = 0;
const RANK_KEY: u8 = 1;
const RANK_HASH: u8 = 2;
const RANK_UNSUPPORTED: u8 = 3;

fn verify_signatures(
    keyring: &Keyring,
    signatures: &[Signature],
    mut data: impl Read,
    mode: Data<'_>,
) -> Result<Verified, PgpError> {
    let mut refusals = Refusals {
        errors: Vec::new(),
        untrusted: Vec::new(),
    };
    let mut pending = Vec::new();
    for sig in signatures {
        let named = issuer_name(sig);
        if sig.issuer_fingerprint().is_empty() && sig.issuer_key_id().is_empty() {
            // Every tool of the last twenty years names the key; trying each key in the
            // keyring instead would let one signature cost a pass per key.
            refusals.add(
                RANK_UNSUPPORTED,
                PgpError::Unsupported {
                    key: named,
                    why: "the signature does not say which key made it".into(),
                },
            );
            continue;
        }
        let signers = find_signers(keyring, sig);
        if signers.is_empty() {
            if !refusals.untrusted.contains(&named) {
                refusals.untrusted.push(named);
            }
            continue;
        }
        match prepare(sig, &signers, mode) {
            Ok(mut ready) => pending.append(&mut ready),
            Err((rank, error)) => refusals.add(rank, error),
        }
    }
    if pending.is_empty() {
        return Err(refusals.into_error(keyring));
    }

    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PgpError::Read(e)),
        };
        for p in &mut pending {
            p.update(&buf[..n]);
        }
    }

    for p in pending {
        let (sig, signer) = (p.sig, p.signer);
        if p.finish() {
            return Ok(Verified {
                fingerprint: format!("{:X}", signer.primary.fingerprint()),
                signed_at: sig.created().map(|t| i64::from(t.as_secs())),
                signing_key: signer.fingerprint(),
            });
        }
        refusals.add(
            RANK_MISMATCH,
            PgpError::Mismatch {
                key: signer.fingerprint(),
                what: mode.what(),
            },
        );
    }
    Err(refusals.into_error(keyring))
}

/// The hashers for one signature, one per key it may be by; or why it cannot count.
fn prepare<'a>(
    sig: &'a Signature,
    signers: &[Signer<'a>],
    mode: Data<'_>,
) -> Result<Vec<Pending<'a>>, (u8, PgpError)> {
    let key = signers
        .first()
        .map_or_else(|| issuer_name(sig), Signer::fingerprint);
    let unsupported = |why: String| {
        (
            RANK_UNSUPPORTED,
            PgpError::Unsupported {
                key: key.clone(),
                why,
            },
        )
    };
    let Some(config) = sig.config() else {
        return Err(unsupported(format!(
            "signature version {:?}",
            sig.version()
        )));
    };
    if !matches!(config.typ, SignatureType::Binary | SignatureType::Text) {
        return Err(unsupported(format!(
            "a {:?} signature is not a signature over data",
            config.typ
        )));
    }
    match config.hash_alg {
        HashAlgorithm::Sha256
        | HashAlgorithm::Sha384
        | HashAlgorithm::Sha512
        | HashAlgorithm::Sha224
        | HashAlgorithm::Sha3_256
        | HashAlgorithm::Sha3_512 => {}
        other => {
            return Err((
                RANK_HASH,
                PgpError::WeakHash {
                    key: key.clone(),
                    hash: other.to_string(),
                },
            ));
        }
    }
    if let Data::Canonical(hashes) = mode
        && !hashes.is_empty()
        && !hashes.contains(&config.hash_alg)
    {
        // GnuPG refuses this conflict too: the header is meant to announce the hash.
        return Err(unsupported(format!(
            "it uses {} but the message's Hash: header does not list it",
            config.hash_alg
        )));
    }
    // An unknown critical subpacket or a malformed hashed area fails here, before
    // reading what may be gigabytes.
    let mut probe = config
        .hash_alg
        .new_hasher()
        .map_err(|e| unsupported(e.to_string()))?;
    config
        .hash_signature_data(&mut probe)
        .map_err(|e| unsupported(e.to_string()))?;

    let created = sig.created().map(|t| t.as_secs());
    let mut ready = Vec::new();
    let mut last_error = None;
    for signer in signers {
        // v6 keys make only v6 signatures and v6 signatures come only from v6 keys.
        let v6_key = signer.version() == KeyVersion::V6;
        if v6_key != (config.version() == SignatureVersion::V6) {
            last_error = Some(unsupported(format!(
                "a version {:?} signature by a version {:?} key",
                config.version(),
                signer.version()
            )));
            continue;
        }
        if let Err(e) = check_signer(signer, created) {
            last_error = Some((RANK_KEY, e));
            continue;
        }
        let mut hasher = config
            .hash_alg
            .new_hasher()
            .map_err(|e| unsupported(e.to_string()))?;
        if let SignatureVersionSpecific::V6 { salt } = &config.version_specific {
            if config.hash_alg.salt_len() != Some(salt.len()) {
                return Err(unsupported("a v6 salt of the wrong length".into()));
            }
            hasher.update(salt);
        }
        let text = matches!((mode, config.typ), (Data::File, SignatureType::Text));
        ready.push(Pending {
            sig,
            config,
            signer: *signer,
            hasher,
            text: text.then_some(false),
        });
    }
    match (ready.is_empty(), last_error) {
        (true, Some(error)) => Err(error),
        _ => Ok(ready),
    }
}

/// Keys in the keyring a signature says it is by. The issuer subpackets may be in the
/// unsigned area: they only choose which key to try.
fn find_signers<'a>(keyring: &'a Keyring, sig: &Signature) -> Vec<Signer<'a>> {
    let fps = sig.issuer_fingerprint();
    let ids = sig.issuer_key_id();
    let names = |k: &dyn KeyDetails| {
        fps.iter().any(|fp| **fp == k.fingerprint())
            || ids.iter().any(|id| **id == k.legacy_key_id())
    };
    let mut out = Vec::new();
    for primary in &keyring.keys {
        if names(primary) {
            out.push(Signer {
                primary,
                subkey: None,
            });
        }
        for sub in &primary.public_subkeys {
            if names(sub) {
                out.push(Signer {
                    primary,
                    subkey: Some(sub),
                });
            }
        }
    }
    out.truncate(MAX_SIGNERS);
    out
}

/// How a signature names its key: fingerprint, else key ID.
fn issuer_name(sig: &Signature) -> String {
    if let Some(fp) = sig.issuer_fingerprint().first() {
        return format!("{fp:X}");
    }
    if let Some(id) = sig.issuer_key_id().first() {
        return hex_upper(id.as_ref());
    }
    "(unnamed)".into()
}

fn keys_phrase(keys: &[String]) -> String {
    match keys {
        [one] => format!("key {one}"),
        many => format!("keys {}", many.join(", ")),
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

// --- Which key may sign, and when ---

/// Binding signatures (self-signatures, subkey bindings, back-signatures): see the
/// module doc for why SHA-1 is still accepted here.
fn binding_hash_ok(sig: &Signature) -> bool {
    matches!(
        sig.hash_alg(),
        Some(
            HashAlgorithm::Sha1
                | HashAlgorithm::Sha256
                | HashAlgorithm::Sha384
                | HashAlgorithm::Sha512
                | HashAlgorithm::Sha224
                | HashAlgorithm::Sha3_256
                | HashAlgorithm::Sha3_512
        )
    )
}

fn created_secs(sig: &Signature) -> u32 {
    sig.created().map_or(0, |t| t.as_secs())
}

/// The key flags a signature states, if it states any.
fn stated_sign_flag(sig: &Signature) -> Option<bool> {
    let config = sig.config()?;
    config.hashed_subpackets().find_map(|p| match &p.data {
        SubpacketData::KeyFlags(flags) => Some(flags.sign()),
        _ => None,
    })
}

/// When a key stops being valid according to its newest binding signature.
fn expiry(created: u32, binding: &Signature) -> Option<u64> {
    binding
        .key_expiration_time()
        .map(|d| d.as_secs())
        .filter(|&secs| secs != 0)
        .map(|secs| u64::from(created) + u64::from(secs))
}

fn when(secs: u64) -> String {
    crate::text::format_ms(i64::try_from(secs).ok().and_then(|s| s.checked_mul(1000)))
}

/// Whether `signer` could sign at `at` (unix seconds; `None` if the signature says not).
fn check_signer(signer: &Signer<'_>, at: Option<u32>) -> Result<(), PgpError> {
    let primary = signer.primary;
    let primary_fp = format!("{:X}", primary.fingerprint());
    let unusable = |key: &str, why: &str| PgpError::KeyUnusable {
        key: key.to_string(),
        why: why.to_string(),
    };

    // The primary key's own statements: its newest valid self-signature (over a user ID,
    // or directly on the key), and any valid revocation.
    let pk = &primary.primary_key;
    let mut newest: Option<&Signature> = None;
    let user_sigs = primary.details.users.iter().flat_map(|user| {
        user.signatures.iter().filter(move |sig| {
            sig.is_certification()
                && sig.typ() != Some(SignatureType::CertRevocation)
                && binding_hash_ok(sig)
                && sig.verify_certification(pk, Tag::UserId, &user.id).is_ok()
        })
    });
    let direct_sigs = primary.details.direct_signatures.iter().filter(|sig| {
        sig.typ() == Some(SignatureType::Key) && binding_hash_ok(sig) && sig.verify_key(pk).is_ok()
    });
    for sig in user_sigs.chain(direct_sigs) {
        if newest.is_none_or(|n| created_secs(sig) >= created_secs(n)) {
            newest = Some(sig);
        }
    }
    let Some(self_sig) = newest else {
        return Err(unusable(&primary_fp, "it carries no valid self-signature"));
    };
    let revocations = primary.details.revocation_signatures.iter().filter(|sig| {
        // Any revocation that verifies is honoured, whatever its hash: a forged one
        // could only refuse more.
        sig.typ() == Some(SignatureType::KeyRevocation) && sig.verify_key(pk).is_ok()
    });
    check_revocations(&primary_fp, revocations, at)?;
    check_lifetime(
        &primary_fp,
        primary.created_at().as_secs(),
        expiry(primary.created_at().as_secs(), self_sig),
        at,
    )?;

    let Some(sub) = signer.subkey else {
        return match stated_sign_flag(self_sig) {
            Some(false) => Err(unusable(
                &primary_fp,
                "its self-signature does not allow signing",
            )),
            _ => Ok(()),
        };
    };

    // A subkey counts through its newest valid binding by the primary key, which must
    // allow signing and carry the subkey's back-signature (else anyone could bind
    // someone else's signing key to theirs).
    let sub_fp = format!("{:X}", sub.fingerprint());
    let mut binding: Option<&Signature> = None;
    for sig in sub.signatures.iter().filter(|sig| {
        sig.typ() == Some(SignatureType::SubkeyBinding)
            && binding_hash_ok(sig)
            && sig.verify_subkey_binding(pk, &sub.key).is_ok()
    }) {
        if binding.is_none_or(|b| created_secs(sig) >= created_secs(b)) {
            binding = Some(sig);
        }
    }
    let Some(binding) = binding else {
        return Err(unusable(
            &sub_fp,
            &format!("it is not validly bound to primary key {primary_fp}"),
        ));
    };
    if stated_sign_flag(binding) != Some(true) {
        return Err(unusable(&sub_fp, "its binding does not allow signing"));
    }
    let backsig_ok = binding.embedded_signature().is_some_and(|back| {
        binding_hash_ok(back) && back.verify_primary_key_binding(&sub.key, pk).is_ok()
    });
    if !backsig_ok {
        return Err(unusable(
            &sub_fp,
            "its binding lacks a valid back-signature",
        ));
    }
    let revocations = sub.signatures.iter().filter(|sig| {
        sig.typ() == Some(SignatureType::SubkeyRevocation)
            && sig.verify_subkey_binding(pk, &sub.key).is_ok()
    });
    check_revocations(&sub_fp, revocations, at)?;
    let created = sub.created_at().as_secs();
    check_lifetime(&sub_fp, created, expiry(created, binding), at)
}

fn check_revocations<'a>(
    key: &str,
    revocations: impl Iterator<Item = &'a Signature>,
    at: Option<u32>,
) -> Result<(), PgpError> {
    for rev in revocations {
        let code = rev.revocation_reason_code();
        // Superseded or retired: signatures made before stay good. Any other reason
        // (compromised, none given) voids every signature, of any date.
        let soft = matches!(
            code,
            Some(RevocationCode::KeySuperseded | RevocationCode::KeyRetired)
        );
        let revoked_at = created_secs(rev);
        if soft && at.is_some_and(|at| at < revoked_at) {
            continue;
        }
        let reason = match code {
            Some(RevocationCode::KeySuperseded) => "superseded",
            Some(RevocationCode::KeyRetired) => "retired",
            Some(RevocationCode::KeyCompromised) => "compromised",
            _ => "no reason given, so treated as compromised",
        };
        return Err(PgpError::Revoked {
            key: key.to_string(),
            when: format!(" on {}", when(u64::from(revoked_at))),
            reason: reason.to_string(),
        });
    }
    Ok(())
}

fn check_lifetime(
    key: &str,
    created: u32,
    expires: Option<u64>,
    at: Option<u32>,
) -> Result<(), PgpError> {
    let Some(at) = at else {
        // Without a creation time nothing can be judged in time; only a key that never
        // expires is safe to accept.
        return match expires {
            None => Ok(()),
            Some(_) => Err(PgpError::KeyUnusable {
                key: key.to_string(),
                why: "the signature has no creation time and the key expires".into(),
            }),
        };
    };
    if at < created {
        return Err(PgpError::KeyUnusable {
            key: key.to_string(),
            why: format!(
                "the signature ({}) is older than the key ({})",
                when(u64::from(at)),
                when(u64::from(created))
            ),
        });
    }
    if let Some(expires) = expires
        && u64::from(at) >= expires
    {
        return Err(PgpError::Expired {
            key: key.to_string(),
            expired: when(expires),
            signed: when(u64::from(at)),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    const DEBIAN_KEYRING: &[u8] = include_bytes!("../../images/keys/debian-archive-keyring.gpg");
    const IN_RELEASE: &[u8] = include_bytes!("../../tests/fixtures/catalog/bookworm-InRelease");

    macro_rules! throwaway {
        ($name:literal) => {
            include_bytes!(concat!("../../tests/fixtures/catalog/throwaway/", $name)).as_slice()
        };
    }
    const MESSAGE: &[u8] = throwaway!("message.txt");

    // From `gpgv --status-fd 1 --keyring images/keys/debian-archive-keyring.gpg
    // tests/fixtures/catalog/bookworm-InRelease`, its first VALIDSIG line: the signing
    // subkey, the creation time, and (last field) the primary key.
    const BOOKWORM_ARCHIVE_KEY: &str = "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8";
    const BOOKWORM_ARCHIVE_SUBKEY: &str = "4CB50190207B4758A3F73A796ED0E7B82643E131";
    const BOOKWORM_SIGNED_AT: i64 = 1783765031;

    // From tests/fixtures/catalog/throwaway/fingerprints.txt (written by make.sh).
    const KEY_A: &str = "86F759FEEC610A4D19A43230BCF8C74579952F28";
    const KEY_A_SUBKEY: &str = "4E6166F31340122BD514DA2C39FA9EE85B52A1CF";
    const KEY_B: &str = "69BA40F9774B1F149E2B1EA9C5801676FCBE5DD0";
    const KEY_C: &str = "21E915F936C9D6825555C682487AF6390E922452";

    fn debian() -> Keyring {
        Keyring::from_bytes(DEBIAN_KEYRING).unwrap()
    }

    fn key_a() -> Keyring {
        Keyring::from_bytes(throwaway!("key-a.asc")).unwrap()
    }

    /// `bytes` with the byte at the first `at` changed.
    fn flip(bytes: &[u8], at: &str) -> Vec<u8> {
        let mut out = bytes.to_vec();
        let i = find(bytes, at.as_bytes()).unwrap();
        out[i] ^= 0x01;
        out
    }

    #[test]
    fn debian_keyring_lists_what_gpg_lists() {
        // `gpg --show-keys --with-colons images/keys/debian-archive-keyring.gpg`: 9 `pub`
        // lines, the fingerprints below in that order.
        let fps = debian().fingerprints();
        assert_eq!(
            fps,
            [
                "1F89983E0081FDE018F3CC9673A4F27B8DD47936",
                "AC530D520F2F3269F5E98313A48449044AAD5C5D",
                "A4285295FC7B1A81600062A9605C66F00D6C9793",
                "4D64FEC119C2029067D6E791F8D2585B8783D481",
                "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8",
                "05AB90340C0C5E797F44A8C8254CF3B5AEC0A8F0",
                "04B54C3CDCA79751B16BC6B5225629DF75B188BD",
                "5E04A1E3223A19A20706E20F9904613D4CCE68C6",
                "41587F7DB8C774BCCF131416762F67A0B2C39DE4",
            ]
        );
    }

    #[test]
    fn bookworm_in_release_verifies() {
        let (text, verified) = verify_cleartext(&debian(), IN_RELEASE).unwrap();
        assert!(text.starts_with("Origin: Debian\r\n"), "{:?}", &text[..40]);
        assert!(text.contains("\r\nCodename: bookworm\r\n"));
        assert!(!text.contains("PGP"));
        assert_eq!(
            verified,
            Verified {
                fingerprint: BOOKWORM_ARCHIVE_KEY.into(),
                signed_at: Some(BOOKWORM_SIGNED_AT),
                signing_key: BOOKWORM_ARCHIVE_SUBKEY.into(),
            }
        );
        assert!(debian().fingerprints().contains(&verified.fingerprint));
    }

    #[test]
    fn bookworm_in_release_changed_is_refused() {
        let changed = flip(IN_RELEASE, "Codename: bookworm");
        let err = verify_cleartext(&debian(), &changed).unwrap_err();
        assert!(matches!(err, PgpError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains("changed after signing"), "{err}");
    }

    #[test]
    fn bookworm_in_release_with_other_keyring_names_the_key() {
        let err = verify_cleartext(&key_a(), IN_RELEASE).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PgpError::UntrustedSigner { .. }), "{msg}");
        assert!(msg.contains(BOOKWORM_ARCHIVE_SUBKEY), "{msg}");
        assert!(msg.contains(&format!("(trusted: {KEY_A})")), "{msg}");
    }

    #[test]
    fn each_debian_signature_verifies_alone() {
        // Only the trixie archive key: the second signature (a subkey, RSA) counts.
        let mut trixie = debian();
        trixie.keys.retain(|k| {
            format!("{:X}", k.fingerprint()) == "04B54C3CDCA79751B16BC6B5225629DF75B188BD"
        });
        let (_, v) = verify_cleartext(&trixie, IN_RELEASE).unwrap();
        assert_eq!(v.signing_key, "B8E5F13176D2A7A75220028078DBA3BC47EF2265");
        // Only the bookworm stable release key: the third (a primary key, ed25519).
        let mut release = debian();
        release.keys.retain(|k| {
            format!("{:X}", k.fingerprint()) == "4D64FEC119C2029067D6E791F8D2585B8783D481"
        });
        let (_, v) = verify_cleartext(&release, IN_RELEASE).unwrap();
        assert_eq!(v.fingerprint, v.signing_key);
        assert_eq!(v.signed_at, Some(1783765141));
    }

    #[test]
    fn throwaway_clearsigned_verifies_and_undoes_the_framework() {
        let (text, v) = verify_cleartext(&key_a(), throwaway!("clearsigned.asc")).unwrap();
        assert_eq!(v.fingerprint, KEY_A);
        assert_eq!(v.signing_key, KEY_A_SUBKEY);
        assert!(v.signed_at.is_some());
        // message.txt, in canonical form: dash escapes undone, trailing blanks gone.
        assert_eq!(
            text,
            "Signed by throwaway key A.\r\n-dash line\r\n\
             -----BEGIN PGP SIGNATURE----- (just text)\r\ntrailing blanks\r\n\r\nlast line"
        );
        let expected = String::from_utf8(MESSAGE.to_vec()).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>().len(),
            expected.lines().count()
        );
    }

    #[test]
    fn throwaway_clearsigned_changed_is_refused() {
        let changed = flip(throwaway!("clearsigned.asc"), "last line");
        let err = verify_cleartext(&key_a(), &changed).unwrap_err();
        assert!(matches!(err, PgpError::Mismatch { .. }), "{err}");
        // Also when the change is only in what dash-escaping hides.
        let unescaped = String::from_utf8(throwaway!("clearsigned.asc").to_vec())
            .unwrap()
            .replace("- -dash line", "- - dash line");
        let err = verify_cleartext(&key_a(), unescaped.as_bytes()).unwrap_err();
        assert!(matches!(err, PgpError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn throwaway_detached_signatures_verify() {
        for (name, sig, signing_key) in [
            ("binary", throwaway!("detached.sig"), KEY_A_SUBKEY),
            ("armoured", throwaway!("detached-armored.asc"), KEY_A_SUBKEY),
            ("text mode", throwaway!("detached-text.sig"), KEY_A_SUBKEY),
            ("by the primary", throwaway!("detached-primary.sig"), KEY_A),
        ] {
            let v =
                verify_detached(&key_a(), MESSAGE, sig).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(v.fingerprint, KEY_A, "{name}");
            assert_eq!(v.signing_key, signing_key, "{name}");
        }
    }

    #[test]
    fn throwaway_detached_changed_is_refused() {
        let changed = flip(MESSAGE, "last line");
        for sig in [
            throwaway!("detached.sig"),
            throwaway!("detached-armored.asc"),
            throwaway!("detached-text.sig"),
            throwaway!("detached-primary.sig"),
        ] {
            let err = verify_detached(&key_a(), &changed[..], sig).unwrap_err();
            assert!(matches!(err, PgpError::Mismatch { .. }), "{err}");
            assert!(err.to_string().contains("does not match the file"), "{err}");
            // A byte more or less, too.
            let longer = [MESSAGE, b"\n"].concat();
            let err = verify_detached(&key_a(), &longer[..], sig).unwrap_err();
            assert!(matches!(err, PgpError::Mismatch { .. }), "{err}");
        }
    }

    #[test]
    fn text_mode_signature_ignores_line_endings_binary_does_not() {
        let crlf = String::from_utf8(MESSAGE.to_vec())
            .unwrap()
            .replace('\n', "\r\n");
        verify_detached(&key_a(), crlf.as_bytes(), throwaway!("detached-text.sig")).unwrap();
        let err = verify_detached(&key_a(), crlf.as_bytes(), throwaway!("detached.sig"));
        assert!(matches!(err, Err(PgpError::Mismatch { .. })));
    }

    #[test]
    fn streaming_across_chunks_matches() {
        // A reader that hands out one byte at a time: the text-mode CR/LF state and the
        // hashers must not depend on where reads split the file.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let Some((first, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = *first;
                self.0 = rest;
                Ok(1)
            }
        }
        let crlf = String::from_utf8(MESSAGE.to_vec())
            .unwrap()
            .replace('\n', "\r\n");
        for sig in [throwaway!("detached.sig"), throwaway!("detached-text.sig")] {
            verify_detached(&key_a(), Trickle(MESSAGE), sig).unwrap();
        }
        verify_detached(
            &key_a(),
            Trickle(crlf.as_bytes()),
            throwaway!("detached-text.sig"),
        )
        .unwrap();
    }

    #[test]
    fn sha1_is_refused() {
        let err = verify_detached(&key_a(), MESSAGE, throwaway!("detached-sha1.sig")).unwrap_err();
        assert!(matches!(err, PgpError::WeakHash { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("unsupported or weak hash SHA1 (refused)"),
            "{err}"
        );
        let err = verify_cleartext(&key_a(), throwaway!("clearsigned-sha1.asc")).unwrap_err();
        assert!(matches!(err, PgpError::WeakHash { .. }), "{err}");
    }

    #[test]
    fn signature_by_an_untrusted_key_is_refused() {
        let err = verify_detached(&key_a(), MESSAGE, throwaway!("detached-other.sig")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PgpError::UntrustedSigner { .. }), "{msg}");
        assert!(
            msg.contains(&format!(
                "signed by key {KEY_B} which is not in the trusted"
            )),
            "{msg}"
        );
        // With B trusted as well, it verifies: the keyrings merge.
        let mut both = key_a();
        both.merge(Keyring::from_bytes(throwaway!("key-b.asc")).unwrap());
        assert_eq!(both.fingerprints(), [KEY_A, KEY_B]);
        let v = verify_detached(&both, MESSAGE, throwaway!("detached-other.sig")).unwrap();
        assert_eq!(v.fingerprint, KEY_B);
    }

    #[test]
    fn signature_by_a_revoked_key_is_refused() {
        let revoked = Keyring::from_bytes(throwaway!("key-c-revoked.asc")).unwrap();
        assert_eq!(revoked.fingerprints(), [KEY_C]);
        let err =
            verify_detached(&revoked, MESSAGE, throwaway!("detached-revoked.sig")).unwrap_err();
        assert!(matches!(err, PgpError::Revoked { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("key {KEY_C} was revoked on ")),
            "{err}"
        );
    }

    #[test]
    fn any_good_trusted_signature_counts() {
        // Two signatures, one by an untrusted key and one by A: A's counts, whichever
        // comes first; with only the untrusted one left, the refusal names it.
        let a = throwaway!("detached.sig");
        let b = throwaway!("detached-other.sig");
        for both in [[a, b].concat(), [b, a].concat()] {
            let v = verify_detached(&key_a(), MESSAGE, &both).unwrap();
            assert_eq!(v.fingerprint, KEY_A);
        }
        // A bad signature by A next to a good one by A: the good one counts.
        let both = [throwaway!("detached-sha1.sig"), a].concat();
        verify_detached(&key_a(), MESSAGE, &both).unwrap();
    }

    #[test]
    fn armoured_rpm_style_key_file_loads() {
        let keyring = key_a();
        assert_eq!(keyring.fingerprints(), [KEY_A]);
        // Several armoured blocks in one file, with text around them, as some
        // RPM-GPG-KEY files have.
        let file = [
            b"Comment: two keys\n".as_slice(),
            throwaway!("key-a.asc"),
            b"\n",
            throwaway!("key-b.asc"),
        ]
        .concat();
        assert_eq!(
            Keyring::from_bytes(&file).unwrap().fingerprints(),
            [KEY_A, KEY_B]
        );
    }

    #[test]
    fn truncated_signatures_are_errors() {
        for sig in [
            throwaway!("detached.sig"),
            throwaway!("detached-armored.asc"),
        ] {
            // Up to the last byte that is not the final line break.
            for len in 0..sig.trim_ascii_end().len() {
                let result = verify_detached(&key_a(), MESSAGE, &sig[..len]);
                assert!(result.is_err(), "truncated to {len} bytes verified");
            }
        }
        let clear = throwaway!("clearsigned.asc");
        for len in 0..clear.trim_ascii_end().len() {
            assert!(
                verify_cleartext(&key_a(), &clear[..len]).is_err(),
                "truncated to {len}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"   \n\t".to_vec(),
            b"hello".to_vec(),
            vec![0xff; 64],
            vec![0x00; 64],
            // A signature packet header claiming 4 GiB.
            vec![0xc2, 0xff, 0xff, 0xff, 0xff, 0xff, 0x04, 0x00],
            // Old-format header claiming an indeterminate length.
            vec![0x8b, 0x04, 0x00],
            b"-----BEGIN PGP SIGNATURE-----\n\n!!!!\n-----END PGP SIGNATURE-----\n".to_vec(),
            b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nx\n".to_vec(),
            b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: MD4\n\nx\n".to_vec(),
            b"-----BEGIN PGP SIGNED MESSAGE-----\n\n-x\n-----BEGIN PGP SIGNATURE-----\n".to_vec(),
            b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"
                .to_vec(),
        ];
        // Every single-byte corruption of a real signature.
        let sig = throwaway!("detached.sig");
        for i in 0..sig.len() {
            let mut s = sig.to_vec();
            s[i] ^= 0x55;
            inputs.push(s);
        }
        let original = read_signatures(sig).unwrap();
        for input in &inputs {
            if verify_detached(&key_a(), MESSAGE, input.as_slice()).is_ok() {
                // Only the unhashed area (the issuer key ID) is not signed, so a change
                // there may still verify; nothing that is signed may change.
                let parsed = read_signatures(input).unwrap();
                let (a, b) = (original[0].config().unwrap(), parsed[0].config().unwrap());
                assert_eq!(a.hashed_subpackets, b.hashed_subpackets);
                assert_eq!(original[0].signature(), parsed[0].signature());
                assert_ne!(a.unhashed_subpackets, b.unhashed_subpackets);
            }
            assert!(verify_cleartext(&key_a(), input).is_err());
            let _ = Keyring::from_bytes(input);
        }
        for input in [
            b"".as_slice(),
            b"hello",
            &[0xff; 64],
            &[0x99, 0x00, 0x05, 0x04],
        ] {
            assert!(Keyring::from_bytes(input).is_err());
        }
        // A keyring cut short anywhere is an error or fewer keys, never a panic.
        for len in (0..DEBIAN_KEYRING.len()).step_by(97) {
            let _ = Keyring::from_bytes(&DEBIAN_KEYRING[..len]);
        }
    }

    #[test]
    fn framing_errors_say_what_is_wrong() {
        let no_sig = verify_detached(&key_a(), MESSAGE, b"").unwrap_err();
        assert_eq!(no_sig.to_string(), "no signature found");
        let clear = throwaway!("clearsigned.asc");
        let leading = [b"unsigned words\n".as_slice(), clear].concat();
        let err = verify_cleartext(&key_a(), &leading)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not begin with -----BEGIN PGP SIGNED"),
            "{err}"
        );
        let trailing = [clear, b"\nmore words\n"].concat();
        let err = verify_cleartext(&key_a(), &trailing)
            .unwrap_err()
            .to_string();
        assert!(err.contains("data after"), "{err}");
        let private = b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nAAAA\n";
        let err = Keyring::from_bytes(private).unwrap_err().to_string();
        assert!(err.contains("private key"), "{err}");
        // A cleartext message whose Hash: header disagrees with its signature.
        let lying = String::from_utf8(clear.to_vec())
            .unwrap()
            .replace("Hash: SHA256", "Hash: SHA512");
        let err = verify_cleartext(&key_a(), lying.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("Hash: header"), "{err}");
    }

    #[test]
    fn sizes_are_capped() {
        let big = vec![b'a'; MAX_CLEARTEXT + 1];
        let err = verify_cleartext(&key_a(), &big).unwrap_err();
        assert!(matches!(err, PgpError::TooLarge { .. }), "{err}");
        let err = verify_detached(&key_a(), MESSAGE, &big[..MAX_SIGNATURE + 1]).unwrap_err();
        assert!(matches!(err, PgpError::TooLarge { .. }), "{err}");
        let err = Keyring::from_bytes(&vec![0x99; MAX_KEYRING + 1]).unwrap_err();
        assert!(matches!(err, PgpError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("the key file is"), "{err}");
    }

    #[test]
    fn read_errors_are_reported() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let err = verify_detached(&key_a(), Broken, throwaway!("detached.sig")).unwrap_err();
        assert!(matches!(err, PgpError::Read(_)), "{err}");
    }
}
