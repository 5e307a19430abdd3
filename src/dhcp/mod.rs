//! The DHCPv4 server. `wire` decodes and encodes, `boot` picks the boot file,
//! `leases` is the in-memory lease book, `policy` decides (pure), `server` does I/O.

pub mod boot;
pub mod leases;
pub mod policy;
pub mod server;
pub mod wire;
