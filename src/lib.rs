//! rackboot: one binary that network-boots bare metal, per machine, from an inventory.
//!
//! The library is layered; imports go one way, from the top of this list down, and
//! `tests/layers.rs` fails on an import the other way or a cycle.
//!
//! Foundations and codecs (no I/O of the application):
//! - `mac`: hardware addresses, parsed in every spelling firmware and people use.
//! - `clock`: the wall clock, read only at the edges. `limits`: the open-file limit.
//! - `netif`: interface addresses, ARP entries, socket buffers, recvmmsg/sendmmsg.
//! - `text`: timestamps as people read them, terminal-safe text. `validate`: host and
//!   image names. `throttle`: repeated log lines held to a burst per window.
//! - `dhcp::wire` (requests and other servers' replies decoded, replies encoded and
//!   addressed) and `tftp::{packet, request, options}`: the wire formats,
//!   bounds-checked.
//! - `catalog` declares the image catalog's parts: `catalog::{openpgp, release, sums,
//!   debpkg, iso9660}` read the formats distributions sign their files in (OpenPGP
//!   signatures, Debian `Release` and `Packages`, checksum lists, `.deb` archives, ISO
//!   9660 images), bounded.
//! - `uki`: unified kernel images (systemd's EFI stub with the kernel, initrd and
//!   command line as PE sections), built without binutils and cached by their inputs.
//!
//! Domain types and pure decisions (no database, no sockets):
//! - `model`: machines, images, leases, events, what a batch of DHCP decisions writes.
//! - `config`: the TOML file, validated; errors name the file and the key.
//! - `lifecycle`: boot modes, done-URL tokens and what each mode boots.
//! - `timeline`: boots reconstructed from events, and their SVG drawing.
//! - `diagnosis`: why a boot failed, from its events and the time (a refused boot
//!   file, no boot file, another DHCP server, an installer that never called back).
//! - `script`: iPXE script and grub configuration templates, built in and
//!   overridable at run time.
//! - `dhcp::{boot, leases, policy}`: which boot file (by firmware and the machine's
//!   loader: iPXE, shim + grub, a unified kernel image), the lease book, the decision in
//!   full and proxy mode. `tftp::transfer`: the transfer state machine.
//! - `auth`: roles, users, password hashing, session and token secrets and their
//!   digests, the login limiter (no storage: the rows are `store::auth`'s).
//! - `catalog::definition`: image definitions (`images/*.toml` built in, overridden
//!   in `data_dir/images/`): the files, their chain of signatures, the templates.
//! - `power`: the `[power]` settings, controllers and their secrets, the verbs over
//!   IPMI (`ipmitool`), Redfish and Wake-on-LAN, and the reprovision step plan.
//!
//! The store (all SQL lives here):
//! - `store`: the SQLite file on its own thread, reached as a `store::Db` by typed
//!   functions only (nothing outside names the engine), migrations, transactions, leases,
//!   events and the DHCP group commit; `store::machines` (also reachable as
//!   `inventory`): machine rows, search, the audit log and boot timelines;
//!   `store::power`: controllers and the last power state read; `store::auth`: users,
//!   sessions and API tokens.
//! - `bulk`: CSV and XLSX read into import rows within bounds on rows, columns and
//!   unpacked size (`bulk::sheet`), previews staged (capped), exports.
//!
//! Services (every action written once; the surfaces only translate):
//! - `service`: `Services`, the `Caller` and typed `ServiceError`s; `boot` (a
//!   machine's boot configuration for iPXE over HTTP or grub over TFTP from one
//!   decision, its unified kernel image, and the shim and grub files), `machines`,
//!   `images`, `catalog` (the definitions in force, a verified fetch registered with
//!   its provenance, background fetch jobs), `import`, `power` (controllers, verbs,
//!   reprovision, the poller), `users` (users, sessions, tokens, login) and
//!   `diagnosis` (the sweeper that records why boots failed).
//! - `catalog::fetch`: follows a definition's chain from the signature to each file,
//!   downloading with resume or reading a local directory, cached by sha256.
//! - `images`: image files staged and copied under `data_dir` with their sha256.
//! - `secrets`: the one rule for who may fetch a machine's secrets (done-URLs, install
//!   files, per-machine TFTP files): its fixed address, its unexpired lease, or in
//!   proxy mode an observed address the neighbour table (or the operator) confirms.
//! - `dhcp::persist`: the narrow persistence interface of the DHCP server.
//!
//! Servers:
//! - `dhcp::server`: the DHCP socket loop on its own thread, grouped fsync'd commits.
//! - `dhcp::foreign`: other DHCP servers' replies on the boot link (port 68), recorded
//!   for the machines they answered (full mode only).
//! - `tftp::{files, server}`: file lookup with its shared cache (rackboot's own files
//!   from `service::boot` between `root` and `ipxe_dir`), and the sockets.
//! - `http`: boot scripts, kernels and initrds, done-URLs; the shared `AppState` and
//!   the HTTP status of each kind of service error.
//! - `ra`: IPv6 router advertisements that end iPXE's wait for a router.
//! - `listen`: the accept loop of each HTTP listener (plain or TLS): header-read and
//!   idle timeouts, the connection cap.
//!
//! Web surfaces:
//! - `panel`: the admin panel, one file per page group, the session, role and CSRF
//!   extractors, the request-id and security-header layers it shares with the API,
//!   and the body limits per route group; `panel::app` joins it to the boot routes.
//! - `api`: the JSON API under `/api/v1` and its OpenAPI document.
//!
//! Entry points:
//! - `serve`: starts every server from the config. `cli`: each subcommand.
//!   `check`: `check-config`, the config and the environment it names (data
//!   directory, interface, boot files, ports) checked before a start.

pub mod api;
pub mod auth;
pub mod bulk;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dhcp;
pub mod diagnosis;
pub mod http;
pub mod images;
/// Machines in the inventory: the store's `machines` module, by its older name.
pub use store::machines as inventory;
pub mod lifecycle;
pub mod limits;
pub mod listen;
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
pub mod throttle;
pub mod timeline;
pub mod uki;
pub mod validate;
