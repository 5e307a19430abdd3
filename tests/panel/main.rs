//! In-process tests of the panel and the API: the library's router is called with
//! `oneshot`, no sockets (one test binary for all of them: each links the library).
//!
//! - `pages`: every page and API route, sessions, roles, CSRF, import, power, the
//!   selection of many machines, pools, the OpenAPI document.
//! - `limits`: body limits per route group, the streamed image upload (token before
//!   body, size cap, free-space floor), and the server's own request id in pages,
//!   error JSON and log lines.
//! - `hardening`: the hardening issue's defects, reproduced and shown closed.
//! - `same_rules`: the CLI, the API and the panel refuse an invalid machine alike.

// The fake BMC is the library's test module, compiled into this binary too: the
// library ships no test code.
#[allow(dead_code)]
#[path = "../../src/power/fake_redfish.rs"]
mod fake_redfish;
mod hardening;
mod limits;
mod pages;
mod same_rules;
mod support;
