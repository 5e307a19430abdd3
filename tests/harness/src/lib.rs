//! The whole-system test harness of rackboot: what `tests/*.rs` use to run rackboot
//! as a datacenter sees it, in private network namespaces, with real clients, VMs and
//! a browser. (The in-process panel tests in `tests/panel/` do not use it.)
//!
//! It is a crate of its own (`publish = false`, a dev-dependency and workspace member
//! of rackboot) so that each test binary can use part of it without dead-code
//! warnings: everything here is public API, and clippy lints it once.
//!
//! The rackboot binary's path comes from the test: `env!("CARGO_BIN_EXE_rackboot")`
//! exists only while Cargo compiles rackboot's own test files. Each test file says
//! `const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");` and passes it to the test
//! networks (`BootNet::new(RACKBOOT, ...)`) and its own commands.
//!
//! Modules, one concern each (their items are re-exported here, except `browser` and
//! `debian_mirror`):
//!
//! - `prerequisites`: root and tools present, or skip (locally) / fail (CI).
//! - `process`: running and spawning processes (killed on drop), logs, waiting with a
//!   deadline, a process's peak memory and threads.
//! - `netns`: network namespaces, veth pairs, taps, threads and sockets inside a
//!   namespace, random UDP loss (netem or nftables).
//! - `rackboot`: `rackboot serve` started and waited for until ready, the CLI.
//! - `nets`: the test networks (`BootNet`, `FileNet`, `DhcpNet`): namespaces wired up
//!   with a rackboot config.
//! - `vm`: QEMU VMs (BIOS or UEFI firmware) on a `BootNet` tap, serial markers.
//! - `dhcp`: DHCP messages built and read by hand, one exchange from a namespace.
//! - `capture`: tcpdump captures and the UDP datagrams in a pcap file.
//! - `fixtures`: the kernel and initramfs boot fixtures, test bytes, the checkout.
//! - `debian_mirror`: the real Debian installer's kernel and initrd (cached), a Debian
//!   archive mirror built and signed by a throwaway key, and an HTTP server for it.
//! - `browser`: headless chromium through chromedriver, and the panel as a `Page`.

pub mod browser;
mod capture;
pub mod debian_mirror;
mod dhcp;
mod fixtures;
mod netns;
mod nets;
mod prerequisites;
mod process;
mod rackboot;
mod vm;

pub use capture::{Capture, Datagram, read_pcap_udp};
pub use dhcp::{DhcpSeen, RawDhcp, dhcp_exchange, dhcp_send_from, read_dhcp};
pub use fixtures::{boot_fixtures, test_bytes};
pub use netns::{Netns, in_netns, udp_socket_in};
pub use nets::{BootNet, DhcpNet, FILES_CLIENT_IP, FILES_SERVER_IP, FileNet, SERVER_IP};
pub use prerequisites::should_run;
pub use process::{Proc, peak_rss_kib, read_lossy, rss_kib, run, tail, thread_count, wait_until};
pub use rackboot::{serve_on_loopback, spawn_ready};
pub use vm::{Firmware, Vm, VmSpec};
