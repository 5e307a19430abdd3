//! Power control through a machine's BMC: IPMI over LAN (`ipmitool`), Redfish
//! (HTTPS + JSON) and Wake-on-LAN, and the one-action reinstall/rescue/wipe that
//! sets the mode, asks for a network boot and power-cycles.
//!
//! - `ipmi`, `redfish`, `wol`: each protocol's pure request building and output
//!   parsing, and the thin code that sends it.
//! - here: the `[power]` settings, controllers and their secrets, the verbs and how
//!   they are sent, and the reprovision step plan (pure). Controllers are kept by
//!   `store::power`; the actions (audit events, the status cache, reprovision, the
//!   poller) are the service layer's (`service::power`).
//!
//! Passwords live in the database only. `Secret` has no `Display` and no
//! `Serialize`, and its `Debug` prints `set`, so a stray `{:?}` in a log or an
//! API response cannot leak one; views carry `password: "set"` instead.

pub mod ipmi;
pub mod redfish;
pub mod wol;

#[cfg(test)]
pub mod fake_redfish;

use crate::mac::MacAddr;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// The `[power]` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerConfig {
    /// How often every machine's power state is read; `None` turns polling off.
    pub poll_interval: Option<Duration>,
    /// BMC calls in flight at once, across the poller, the CLI and the panel.
    pub concurrency: usize,
    /// One attempt of one BMC call (an `ipmitool` run, a Redfish request).
    pub timeout: Duration,
    /// Further attempts after a timeout or an unreachable BMC (never after a
    /// refused password: that only locks accounts).
    pub retries: u32,
    pub ipmitool: PathBuf,
    /// Where magic packets go: the limited broadcast by default, sent out of
    /// `wol_interface` (the DHCP interface, the machines' boot network).
    pub wol_broadcast: Ipv4Addr,
    pub wol_port: u16,
    pub wol_interface: Option<String>,
    /// Extra CAs (PEM) trusted for Redfish BMCs with `verify_tls`, beside the
    /// system's: most BMCs carry certificates from a site's own CA.
    pub redfish_ca_pem: Option<Vec<u8>>,
}

impl Default for PowerConfig {
    fn default() -> Self {
        PowerConfig {
            poll_interval: Some(Duration::from_secs(60)),
            concurrency: 8,
            timeout: Duration::from_secs(15),
            retries: 2,
            ipmitool: PathBuf::from("ipmitool"),
            wol_broadcast: Ipv4Addr::BROADCAST,
            wol_port: 9,
            wol_interface: None,
            redfish_ca_pem: None,
        }
    }
}

/// A password or other secret. Never displayed, never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Self {
        Secret(text)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("set")
    }
}

/// How rackboot reaches a machine's power.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Controller {
    Ipmi {
        host: String,
        port: u16,
        user: String,
        password: Secret,
        cipher_suite: u8,
    },
    Redfish {
        /// `https://bmc.example` (no path): requests go to `/redfish/v1/...`.
        url: String,
        user: String,
        password: Secret,
        system_id: String,
        verify_tls: bool,
    },
    /// Power on only: a magic packet to the machine's MAC on the boot network.
    Wol,
}

impl Controller {
    pub fn kind(&self) -> &'static str {
        match self {
            Controller::Ipmi { .. } => "ipmi",
            Controller::Redfish { .. } => "redfish",
            Controller::Wol => "wol",
        }
    }

    /// What an operator may see: everything but the password.
    pub fn view(&self) -> ControllerView {
        match self {
            Controller::Ipmi {
                host,
                port,
                user,
                cipher_suite,
                ..
            } => ControllerView {
                kind: "ipmi",
                host: Some(host.clone()),
                port: Some(*port),
                user: Some(user.clone()),
                password: Some("set"),
                cipher_suite: Some(*cipher_suite),
                ..ControllerView::default()
            },
            Controller::Redfish {
                url,
                user,
                system_id,
                verify_tls,
                ..
            } => ControllerView {
                kind: "redfish",
                url: Some(url.clone()),
                user: Some(user.clone()),
                password: Some("set"),
                system_id: Some(system_id.clone()),
                verify_tls: Some(*verify_tls),
                ..ControllerView::default()
            },
            Controller::Wol => ControllerView {
                kind: "wol",
                ..ControllerView::default()
            },
        }
    }

    /// One line for events and the CLI; no secret in it.
    pub fn summary(&self) -> String {
        match self {
            Controller::Ipmi {
                host,
                port,
                user,
                cipher_suite,
                ..
            } => format!("ipmi {host}:{port} user={user} cipher={cipher_suite}"),
            Controller::Redfish {
                url,
                user,
                system_id,
                verify_tls,
                ..
            } => format!(
                "redfish {url} system={} user={user} verify_tls={verify_tls}",
                if system_id.is_empty() {
                    "(the only one)"
                } else {
                    system_id
                }
            ),
            Controller::Wol => "wol".into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ControllerView {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_tls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `"set"` when a password is stored; the password itself never leaves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher_suite: Option<u8>,
}

/// A controller as submitted by the API, the panel or the CLI. A missing password
/// keeps the stored one (forms never get it back to resubmit).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ControllerSpec {
    Ipmi {
        host: String,
        port: Option<u16>,
        user: String,
        password: Option<String>,
        cipher_suite: Option<u8>,
    },
    Redfish {
        url: String,
        user: String,
        password: Option<String>,
        system_id: Option<String>,
        verify_tls: Option<bool>,
    },
    Wol,
}

fn plain_token(what: &str, text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if text.starts_with('-') || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{what} {text:?} must not start with '-' or contain spaces"
        ));
    }
    Ok(())
}

impl ControllerSpec {
    /// Validates and resolves the password against the stored controller. A spec
    /// without a password keeps the stored one only while the secret would go to the
    /// same place, protected the same way: a changed host, port, user, cipher suite,
    /// URL or TLS verification needs the password again. Otherwise whoever may edit a
    /// controller could point it at a machine of theirs and receive the password an
    /// admin stored.
    pub fn resolve(self, stored: Option<&Controller>) -> Result<Controller, String> {
        let password =
            |given: Option<String>, kept: Option<Secret>, changed: Option<&str>| match given
                .filter(|p| !p.is_empty())
            {
                Some(p) if p.contains('\0') || p.contains('\n') => {
                    Err("the password must be one line".to_string())
                }
                Some(p) => Ok(Secret::new(p)),
                None => match (kept, changed) {
                    (Some(secret), None) => Ok(secret),
                    (Some(_), Some(what)) => Err(format!(
                        "a password is required: the {what} changed, and the stored password \
                         is only sent where it was set to go"
                    )),
                    (None, _) => Err("a password is required".to_string()),
                },
            };
        match self {
            ControllerSpec::Ipmi {
                host,
                port,
                user,
                password: given,
                cipher_suite,
            } => {
                let host = host.trim().to_string();
                plain_token("host", &host)?;
                plain_token("user", &user)?;
                let cipher_suite = cipher_suite.unwrap_or(3);
                if cipher_suite > 17 {
                    return Err(format!("cipher suite {cipher_suite} is not 0 to 17"));
                }
                let port = port.unwrap_or(623);
                let (kept, changed) = match stored {
                    Some(Controller::Ipmi {
                        host: old_host,
                        port: old_port,
                        user: old_user,
                        password,
                        cipher_suite: old_cipher,
                    }) => (
                        Some(password.clone()),
                        [
                            (old_host != &host, "host"),
                            (*old_port != port, "port"),
                            (old_user != &user, "user"),
                            (*old_cipher != cipher_suite, "cipher suite"),
                        ]
                        .into_iter()
                        .find_map(|(differs, what)| differs.then_some(what)),
                    ),
                    _ => (None, None),
                };
                Ok(Controller::Ipmi {
                    host,
                    port,
                    user,
                    password: password(given, kept, changed)?,
                    cipher_suite,
                })
            }
            ControllerSpec::Redfish {
                url,
                user,
                password: given,
                system_id,
                verify_tls,
            } => {
                let url = url.trim().trim_end_matches('/').to_string();
                let parsed = reqwest::Url::parse(&url)
                    .map_err(|e| format!("url {url:?} is not a URL: {e}"))?;
                if !matches!(parsed.scheme(), "https" | "http") || parsed.host().is_none() {
                    return Err(format!("url {url:?} must be https://HOST[:PORT]"));
                }
                // The URL is shown in events and logs: credentials belong in user and
                // password, never in it.
                if !parsed.username().is_empty() || parsed.password().is_some() {
                    return Err("the url must not carry a user or password".into());
                }
                plain_token("user", &user)?;
                // Empty: the BMC's only system, found at each call (most BMCs have
                // one, named `1`, `System.Embedded.1`, a serial number...).
                let system_id = system_id.map(|s| s.trim().to_string()).unwrap_or_default();
                if !system_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                {
                    return Err(format!(
                        "system id {system_id:?} must be letters, digits, . _ -"
                    ));
                }
                let verify_tls = verify_tls.unwrap_or(true);
                let (kept, changed) = match stored {
                    Some(Controller::Redfish {
                        url: old_url,
                        user: old_user,
                        password,
                        verify_tls: old_verify,
                        ..
                    }) => (
                        Some(password.clone()),
                        [
                            (old_url != &url, "url"),
                            (old_user != &user, "user"),
                            (*old_verify != verify_tls, "TLS verification"),
                        ]
                        .into_iter()
                        .find_map(|(differs, what)| differs.then_some(what)),
                    ),
                    _ => (None, None),
                };
                Ok(Controller::Redfish {
                    url,
                    user,
                    password: password(given, kept, changed)?,
                    system_id,
                    verify_tls,
                })
            }
            ControllerSpec::Wol => Ok(Controller::Wol),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    On,
    Off,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
        }
    }
}

/// What an operator can ask of a BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    On,
    Off,
    Cycle,
    Status,
    /// Next boot from the network (once).
    Pxe,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::On => "on",
            Verb::Off => "off",
            Verb::Cycle => "cycle",
            Verb::Status => "status",
            Verb::Pxe => "pxe",
        }
    }

    pub fn parse(text: &str) -> Option<Verb> {
        [Verb::On, Verb::Off, Verb::Cycle, Verb::Status, Verb::Pxe]
            .into_iter()
            .find(|v| v.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PowerError {
    #[error("the BMC refused the credentials: {0}")]
    Auth(String),
    #[error("the BMC did not answer: {0}")]
    Unreachable(String),
    #[error("the BMC did not answer within {0} s")]
    Timeout(u64),
    #[error("the BMC refused the request: {0}")]
    Refused(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot run the BMC client: {0}")]
    Local(String),
    #[error(
        "the BMC's TLS certificate is not trusted ({0}): add its CA to [power] redfish_ca_file, or turn verify_tls off for this controller"
    )]
    Certificate(String),
}

impl PowerError {
    /// Worth another attempt: the BMC may answer next time. A refused password is
    /// not retried (BMCs lock accounts after a few failures).
    pub fn transient(&self) -> bool {
        matches!(self, PowerError::Unreachable(_) | PowerError::Timeout(_))
    }
}

/// What a BMC call achieved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub state: Option<PowerState>,
    /// Done, but not as asked (an IPMI BMC that refuses `bootdev pxe`).
    pub warning: Option<String>,
}

/// Sends verbs to BMCs, at most `concurrency` at a time.
pub struct Power {
    pub config: PowerConfig,
    limit: tokio::sync::Semaphore,
    clients: std::sync::OnceLock<Result<redfish::Clients, String>>,
    redfish_systems: redfish::FoundSystems,
}

impl Power {
    pub fn new(config: PowerConfig) -> Self {
        Power {
            limit: tokio::sync::Semaphore::new(config.concurrency.max(1)),
            config,
            clients: std::sync::OnceLock::new(),
            redfish_systems: redfish::FoundSystems::default(),
        }
    }

    /// One verb on one controller, with the configured timeout and retries.
    pub async fn execute(
        &self,
        mac: MacAddr,
        controller: &Controller,
        verb: Verb,
    ) -> Result<Outcome, PowerError> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| PowerError::Local("shutting down".into()))?;
        let mut attempt = 0;
        loop {
            let result = self.attempt(mac, controller, verb).await;
            match result {
                Err(e) if e.transient() && attempt < self.config.retries => {
                    attempt += 1;
                    tracing::debug!(%mac, verb = verb.as_str(), attempt, "BMC call failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
    }

    async fn attempt(
        &self,
        mac: MacAddr,
        controller: &Controller,
        verb: Verb,
    ) -> Result<Outcome, PowerError> {
        let timeout = self.config.timeout;
        match controller {
            Controller::Ipmi {
                host,
                port,
                user,
                password,
                cipher_suite,
            } => {
                let target = ipmi::Target {
                    host,
                    port: *port,
                    user,
                    cipher_suite: *cipher_suite,
                };
                ipmi::run(&self.config.ipmitool, &target, password, verb, timeout).await
            }
            Controller::Redfish {
                url,
                user,
                password,
                system_id,
                verify_tls,
            } => {
                let clients = self
                    .clients
                    .get_or_init(|| redfish::Clients::new(self.config.redfish_ca_pem.as_deref()))
                    .as_ref()
                    .map_err(|e| PowerError::Local(e.clone()))?;
                let client = if *verify_tls {
                    &clients.verified
                } else {
                    &clients.insecure
                };
                let target = redfish::Target {
                    url,
                    user,
                    system_id,
                };
                redfish::run(
                    client,
                    &self.redfish_systems,
                    &target,
                    password,
                    verb,
                    timeout,
                )
                .await
            }
            Controller::Wol => match verb {
                Verb::On => {
                    wol::send(
                        mac,
                        self.config.wol_broadcast,
                        self.config.wol_port,
                        self.config.wol_interface.as_deref(),
                    )
                    .await?;
                    Ok(Outcome::default())
                }
                other => Err(PowerError::Unsupported(format!(
                    "Wake-on-LAN can only power on, not {}",
                    other.as_str()
                ))),
            },
        }
    }
}

// ---- reinstall, rescue, wipe in one action ----

/// The power steps that follow a mode change, before the BMC is asked anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Next boot from the network.
    Pxe,
    /// Read the power state: it decides between `On` and `Cycle`.
    Status,
    /// Power on if off, else power-cycle.
    OnOrCycle,
    /// Wake-on-LAN: can only power on; a running machine must be rebooted by hand.
    Wake,
}

/// The plan for a controller kind (pure).
pub fn plan(controller: Option<&Controller>) -> Vec<Step> {
    match controller {
        None => vec![],
        Some(Controller::Wol) => vec![Step::Wake],
        Some(_) => vec![Step::Pxe, Step::Status, Step::OnOrCycle],
    }
}

/// On or cycle, by the state just read (pure).
pub fn restart_verb(state: Option<PowerState>) -> Verb {
    match state {
        Some(PowerState::Off) => Verb::On,
        _ => Verb::Cycle,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    pub step: String,
    /// `ok`, `warning` or `failed`.
    pub result: &'static str,
    pub detail: String,
}

/// The last power state read, with when, or the error that read ended in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedStatus {
    /// `on`, `off`, or `error`.
    pub state: String,
    pub detail: String,
    pub checked_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Controller::Ipmi {
            host: "192.0.2.9".into(),
            port: 623,
            user: "admin".into(),
            password: Secret::new("hunter2".into()),
            cipher_suite: 3,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!c.summary().contains("hunter2"));
        let json = serde_json::to_string(&c.view()).expect("json");
        assert!(!json.contains("hunter2"), "{json}");
        assert!(json.contains(r#""password":"set""#), "{json}");
    }

    #[test]
    fn a_changed_destination_or_protection_needs_the_password_again() {
        let ipmi =
            |host: &str, port: Option<u16>, user: &str, cipher: Option<u8>| ControllerSpec::Ipmi {
                host: host.into(),
                port,
                user: user.into(),
                password: None,
                cipher_suite: cipher,
            };
        let stored = ControllerSpec::Ipmi {
            host: "192.0.2.9".into(),
            port: None,
            user: "admin".into(),
            password: Some("admins-secret".into()),
            cipher_suite: None,
        }
        .resolve(None)
        .expect("valid");
        assert!(
            ipmi("192.0.2.9", None, "admin", None)
                .resolve(Some(&stored))
                .is_ok()
        );
        for (changed, spec) in [
            ("host", ipmi("198.51.100.66", None, "admin", None)),
            ("port", ipmi("192.0.2.9", Some(6230), "admin", None)),
            ("user", ipmi("192.0.2.9", None, "other", None)),
            ("cipher suite", ipmi("192.0.2.9", None, "admin", Some(0))),
        ] {
            let refused = spec.resolve(Some(&stored)).expect_err(changed);
            assert!(
                refused.contains("password is required") && refused.contains(changed),
                "{changed}: {refused}"
            );
        }
        let redfish = |url: &str, user: &str, verify: Option<bool>| ControllerSpec::Redfish {
            url: url.into(),
            user: user.into(),
            password: None,
            system_id: Some("1".into()),
            verify_tls: verify,
        };
        let stored = ControllerSpec::Redfish {
            url: "https://bmc.example".into(),
            user: "root".into(),
            password: Some("admins-secret".into()),
            system_id: None,
            verify_tls: None,
        }
        .resolve(None)
        .expect("valid");
        // Another system on the same BMC is the same destination.
        assert!(
            redfish("https://bmc.example/", "root", None)
                .resolve(Some(&stored))
                .is_ok()
        );
        for (changed, spec) in [
            ("url", redfish("https://attacker.example", "root", None)),
            ("user", redfish("https://bmc.example", "admin", None)),
            (
                "TLS verification",
                redfish("https://bmc.example", "root", Some(false)),
            ),
        ] {
            let refused = spec.resolve(Some(&stored)).expect_err(changed);
            assert!(
                refused.contains("password is required") && refused.contains(changed),
                "{changed}: {refused}"
            );
        }
        // A password of another kind is never carried over.
        assert!(
            ipmi("192.0.2.9", None, "root", None)
                .resolve(Some(&stored))
                .is_err()
        );
    }

    #[test]
    fn specs_validate_and_keep_the_stored_password() {
        let spec = |password: Option<&str>| ControllerSpec::Ipmi {
            host: "192.0.2.9".into(),
            port: None,
            user: "admin".into(),
            password: password.map(str::to_string),
            cipher_suite: None,
        };
        assert!(
            spec(None).resolve(None).is_err(),
            "new controller needs one"
        );
        let first = spec(Some("pw1")).resolve(None).expect("valid");
        let kept = spec(None).resolve(Some(&first)).expect("kept");
        assert_eq!(kept, first);
        let Controller::Ipmi {
            port, cipher_suite, ..
        } = kept
        else {
            panic!("ipmi")
        };
        assert_eq!((port, cipher_suite), (623, 3));
        let bad_host = ControllerSpec::Ipmi {
            host: "-oProxyCommand=x".into(),
            port: None,
            user: "a".into(),
            password: Some("p".into()),
            cipher_suite: None,
        };
        assert!(bad_host.resolve(None).is_err());
        let redfish = ControllerSpec::Redfish {
            url: "https://bmc.example/".into(),
            user: "root".into(),
            password: Some("p".into()),
            system_id: None,
            verify_tls: None,
        }
        .resolve(None)
        .expect("valid");
        assert_eq!(
            redfish.view().verify_tls,
            Some(true),
            "TLS verification is on by default"
        );
        let bad_url = ControllerSpec::Redfish {
            url: "ftp://bmc".into(),
            user: "root".into(),
            password: Some("p".into()),
            system_id: None,
            verify_tls: None,
        };
        assert!(bad_url.resolve(None).is_err());
        let userinfo = ControllerSpec::Redfish {
            url: "https://root:calvin@bmc".into(),
            user: "root".into(),
            password: Some("p".into()),
            system_id: None,
            verify_tls: None,
        };
        assert!(userinfo.resolve(None).is_err(), "no password in the URL");
    }

    #[test]
    fn the_step_plan_follows_the_controller_and_the_state() {
        assert_eq!(plan(None), vec![]);
        assert_eq!(plan(Some(&Controller::Wol)), vec![Step::Wake]);
        let ipmi = Controller::Ipmi {
            host: "h".into(),
            port: 623,
            user: "u".into(),
            password: Secret::new("p".into()),
            cipher_suite: 3,
        };
        assert_eq!(
            plan(Some(&ipmi)),
            vec![Step::Pxe, Step::Status, Step::OnOrCycle]
        );
        assert_eq!(restart_verb(Some(PowerState::Off)), Verb::On);
        assert_eq!(restart_verb(Some(PowerState::On)), Verb::Cycle);
        assert_eq!(restart_verb(None), Verb::Cycle);
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_an_error() {
        assert!(redfish::parse_ca_bundle(include_bytes!("testdata/ca.pem")).is_ok());
        let why = redfish::parse_ca_bundle(b"not a certificate\n").expect_err("empty");
        assert!(why.contains("no PEM certificate"), "{why}");
    }
}
