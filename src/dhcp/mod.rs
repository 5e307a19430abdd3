//! The DHCPv4 server. `wire` decodes and encodes, `boot` picks the boot file, `leases`
//! is the in-memory lease book, `policy` decides (pure; full and proxy mode), `server`
//! does I/O and commits leases before acknowledging them, `persist` is the narrow
//! interface through which `server` reaches the database (implemented by `Store`; a
//! second engine plugs in there). `foreign` listens for other servers' replies on the
//! boot link.

pub mod boot;
pub mod foreign;
pub mod leases;
pub mod persist;
pub mod policy;
pub mod server;
pub mod wire;
