//! The read-only TFTP server on tokio, for the iPXE binaries (`ipxe_dir`) and an
//! optional `[tftp] root` with per-machine files.
//!
//! A pure protocol core, tested without sockets or clocks:
//! - `packet`: decode and encode (RFC 1350, 2347); never panics on any input.
//! - `request`: judges a datagram on the request port (read only, confined paths).
//! - `options`: blksize, timeout, tsize, windowsize negotiation.
//! - `transfer`: one transfer's state machine; events and the time in, packets out.
//!
//! And the I/O around it:
//! - `files`: which file a client gets, read once and shared between transfers.
//! - `server`: the sockets; one tokio task per transfer, no thread each.
//!
//! Written here rather than on async-tftp 0.4.2, which ignores a client's ERROR
//! (its issue #18: a UEFI `tsize` probe is retransmitted at until timeout) and
//! serves every request through one handler behind one mutex.

/// A file's bytes as transfers share them. The bytes sit in a `Box` of their own: the
/// file cache holds a `Weak` to each shared file, and a `Weak` keeps an `Arc`'s whole
/// allocation alive, so with `Arc<[u8]>` a file no transfer used any more would stay
/// resident for as long as its cache entry did.
pub type SharedBytes = std::sync::Arc<Box<[u8]>>;

pub mod files;
pub mod options;
pub mod packet;
pub mod request;
pub mod server;
pub mod transfer;

pub use server::{Settings, start};
