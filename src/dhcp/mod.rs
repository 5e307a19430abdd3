//! The DHCPv4 server. `wire` decodes and encodes, `boot` picks the boot file, `leases`
//! is the in-memory lease book, `policy` decides (pure; full and proxy mode), `server`
//! does I/O and commits leases before acknowledging them.

pub mod boot;
pub mod leases;
pub mod policy;
pub mod server;
pub mod wire;
