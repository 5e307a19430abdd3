//! rackboot: one binary that network-boots bare metal, per machine, from an inventory.
//!
//! Modules, and what each owns:
//! - `config`: the TOML file, validated; errors name the file and the key.
//! - `store`: the SQLite inventory (machines, images, leases, events; `store::auth`
//!   for users, sessions and tokens) on its own thread.
//! - `mac`: hardware addresses, parsed in every spelling firmware and people use.
//! - `dhcp`: the DHCPv4 server: `wire` (decode/encode, reply addressing), `boot`
//!   (which boot file for which firmware), `leases` (the lease book and its free-address
//!   index), `policy` (the pure decision, full and proxy mode), `server` (the socket
//!   loop on its own thread, grouped fsync'd commits).
//! - `tftp`: the read-only TFTP server (on tokio) for the iPXE binaries and
//!   `[tftp] root`: `packet`, `request`, `options`, `transfer` (the pure protocol
//!   core), `files` (lookup and the shared file cache), `server` (the sockets).
//! - `http`: boot scripts, kernels and initrds over HTTP (axum).
//! - `secrets`: the one rule for who may fetch a machine's secrets (done-URLs,
//!   install files, per-machine TFTP files): fixed address, unexpired lease, or in
//!   proxy mode an observed address the neighbour table (or the operator) confirms.
//! - `script`: iPXE script templates, built in and overridable at run time.
//! - `images`: copying image files under `data_dir` with their sha256.
//! - `netif`: interface addresses, ARP entries, socket buffers, recvmmsg/sendmmsg
//!   (Linux).
//! - `ra`: IPv6 router advertisements that end iPXE's wait for a router.
//! - `lifecycle`: boot modes, done-URL tokens and what each mode boots (pure);
//!   `inventory`: those decisions carried out on the database, with the audit trail.
//! - `timeline`: boots reconstructed from events, and their SVG drawing (pure).
//! - `auth`: roles, users, password hashing, session and token secrets and their
//!   digests, login rate limiting (no storage: the rows are `store::auth`'s, the
//!   actions `service::users`').
//! - `panel`: the admin panel, one file per page group (`panel::machines`,
//!   `panel::selection` for actions on many machines at once, ...), the session and
//!   CSRF extractors, the request-id and security-header layers it shares with the
//!   API, and the body limits per route group; `api`: the JSON API and its OpenAPI
//!   document;
//!   `bulk`: CSV/XLSX import and export, image uploads.
//! - `power`: power controllers (IPMI through `ipmitool`, Redfish, Wake-on-LAN), the
//!   power verbs, reinstall/rescue/wipe as one action (mode, network boot, power
//!   cycle), one at a time or many at once, and the background poll of every
//!   machine's power state.
//! - `serve`: starts the servers; `clock`: the wall clock, read only at the edges.
//! - `limits`: raises the open-file limit at start, and makes large freed blocks
//!   go back to the kernel.

pub mod api;
pub mod auth;
pub mod bulk;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dhcp;
pub mod http;
pub mod images;
/// Machines in the inventory: the store's `machines` module, by its older name.
pub use store::machines as inventory;
pub mod lifecycle;
pub mod limits;
pub mod mac;
pub mod model;
pub mod netif;
pub mod panel;
pub mod power;
pub mod ra;
pub mod script;
pub mod secrets;
#[cfg(test)]
mod secrets_tests;
pub mod serve;
pub mod service;
pub mod store;
pub mod text;
pub mod tftp;
pub mod timeline;
pub mod validate;
