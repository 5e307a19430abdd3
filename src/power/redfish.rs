//! Redfish: plain HTTPS and JSON to `/redfish/v1/Systems/{id}` (DMTF DSP0266).
//! Power verbs are `ComputerSystem.Reset` actions; the one-time network boot is a
//! PATCH of `Boot.BootSourceOverrideTarget`. Which request each verb makes is pure;
//! sending it goes through reqwest (async, rustls with the `ring` provider), so no
//! BMC call blocks an async worker.

use super::{Outcome, PowerError, PowerState, Secret, Verb};
use serde_json::{Value, json};
use std::time::Duration;

pub struct Target<'a> {
    pub url: &'a str,
    pub user: &'a str,
    pub system_id: &'a str,
}

/// One request, as the BMC will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Value>,
}

/// Where the BMC lists its systems.
pub const SYSTEMS: &str = "/redfish/v1/Systems";

/// The path of system `system_id` (pure).
pub fn system_path(system_id: &str) -> String {
    format!("{SYSTEMS}/{system_id}")
}

/// The one system of a BMC's `Systems` collection (pure): its `@odata.id` path. A BMC
/// with several (a chassis of blades) needs the controller's system id, and the
/// error lists the ones it has.
pub fn only_system(status: u16, body: &str) -> Result<String, PowerError> {
    if !(200..=299).contains(&status) {
        return interpret(Verb::Status, "(the only one)", status, body).map(|_| String::new());
    }
    let value: Value = serde_json::from_str(body)
        .map_err(|e| PowerError::Refused(format!("{SYSTEMS} is not JSON: {e}")))?;
    let members: Vec<&str> = value
        .get("Members")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|member| member.get("@odata.id").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    match members.as_slice() {
        [only] => {
            // The path goes into later request URLs: only a plain child of the
            // collection is taken.
            let path = only.trim_end_matches('/');
            let plain = path
                .strip_prefix(SYSTEMS)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|id| {
                    !id.is_empty()
                        && id
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                });
            if plain {
                Ok(path.to_string())
            } else {
                Err(PowerError::Refused(format!(
                    "{SYSTEMS} names its system {only:?}, not a path under {SYSTEMS}/"
                )))
            }
        }
        [] => Err(PowerError::Refused(format!("{SYSTEMS} lists no system"))),
        many => Err(PowerError::Refused(format!(
            "the BMC has {} systems ({}); set the controller's system id to one of them",
            many.len(),
            many.iter()
                .map(|m| m.rsplit('/').next().unwrap_or(m))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The request for `verb` on the system at `system` (a path, pure). Cycle is
/// `ForceRestart`, the reset type every Redfish BMC implements (`PowerCycle` is
/// optional in the schema).
pub fn request(system: &str, verb: Verb) -> Request {
    let system = system.to_string();
    let reset = |kind: &str| Request {
        method: "POST",
        path: format!("{system}/Actions/ComputerSystem.Reset"),
        body: Some(json!({ "ResetType": kind })),
    };
    match verb {
        Verb::On => reset("On"),
        Verb::Off => reset("ForceOff"),
        Verb::Cycle => reset("ForceRestart"),
        Verb::Status => Request {
            method: "GET",
            path: system,
            body: None,
        },
        Verb::Pxe => Request {
            method: "PATCH",
            path: system,
            body: Some(json!({
                "Boot": {
                    "BootSourceOverrideTarget": "Pxe",
                    "BootSourceOverrideEnabled": "Once"
                }
            })),
        },
    }
}

/// What the BMC's answer means (pure).
pub fn interpret(
    verb: Verb,
    system_id: &str,
    status: u16,
    body: &str,
) -> Result<Outcome, PowerError> {
    let message = || redfish_message(body).unwrap_or_else(|| format!("HTTP {status}"));
    match status {
        200..=299 => {}
        401 | 403 => return Err(PowerError::Auth(format!("HTTP {status}: {}", message()))),
        // The usual first-time mistake: BMCs name their system differently
        // (`1`, `System.Embedded.1`, `437XR1138R2`...).
        404 => {
            return Err(PowerError::Refused(format!(
                "HTTP 404: the BMC has no system {system_id:?}; set the controller's system id to one that GET /redfish/v1/Systems lists"
            )));
        }
        500..=599 => {
            return Err(PowerError::Refused(format!("HTTP {status}: {}", message())));
        }
        _ => {
            return Err(PowerError::Refused(format!("HTTP {status}: {}", message())));
        }
    }
    if verb != Verb::Status {
        return Ok(Outcome::default());
    }
    let value: Value = serde_json::from_str(body)
        .map_err(|e| PowerError::Refused(format!("the system resource is not JSON: {e}")))?;
    let state = match value.get("PowerState").and_then(Value::as_str) {
        Some("On") | Some("PoweringOff") => PowerState::On,
        Some("Off") | Some("PoweringOn") => PowerState::Off,
        other => {
            return Err(PowerError::Refused(format!("unknown PowerState {other:?}")));
        }
    };
    Ok(Outcome {
        state: Some(state),
        warning: None,
    })
}

/// The human message of a Redfish error body (`error.message` or the first
/// `@Message.ExtendedInfo` entry).
fn redfish_message(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let error = value.get("error")?;
    error
        .get("@Message.ExtendedInfo")
        .and_then(|info| info.get(0))
        .and_then(|first| first.get("Message"))
        .or_else(|| error.get("message"))
        .and_then(Value::as_str)
        .map(|m| m.chars().take(300).collect())
}

/// The certificates of a PEM bundle (`[power] redfish_ca_file`); an error when
/// there is none or one does not parse.
pub fn parse_ca_bundle(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, String> {
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}

/// One client that verifies TLS (against the system's CAs and `extra_ca_pem`) and
/// one that does not (for BMCs with self-signed certificates, chosen per controller
/// with `verify_tls = false`).
pub struct Clients {
    pub verified: reqwest::Client,
    pub insecure: reqwest::Client,
}

impl Clients {
    pub fn new(extra_ca_pem: Option<&[u8]>) -> Result<Self, String> {
        // rackboot links rustls with the ring provider only; reqwest needs it installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let extra = match extra_ca_pem {
            Some(pem) => parse_ca_bundle(pem)?,
            None => Vec::new(),
        };
        let build = |insecure: bool| {
            let builder = reqwest::Client::builder();
            let builder = if insecure {
                builder.tls_danger_accept_invalid_certs(true)
            } else {
                builder.tls_certs_merge(extra.clone())
            };
            builder
                // A BMC that redirects elsewhere would get the credentials: refuse.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| format!("cannot build the Redfish HTTP client: {e}"))
        };
        Ok(Clients {
            verified: build(false)?,
            insecure: build(true)?,
        })
    }
}

/// Systems found by looking (controllers without a system id), by BMC URL: looked
/// up once, not before every call, and forgotten when the BMC answers 404 for one.
pub type FoundSystems = std::sync::Mutex<std::collections::HashMap<String, String>>;

pub async fn run(
    client: &reqwest::Client,
    found: &FoundSystems,
    target: &Target<'_>,
    password: &Secret,
    verb: Verb,
    timeout: Duration,
) -> Result<Outcome, PowerError> {
    let lock = || {
        found
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    let looked_up = target.system_id.is_empty();
    let system = if !looked_up {
        system_path(target.system_id)
    } else if let Some(known) = lock().get(target.url).cloned() {
        known
    } else {
        let (status, body) = send(client, target, password, "GET", SYSTEMS, None, timeout).await?;
        let only = only_system(status, &body)?;
        lock().insert(target.url.to_string(), only.clone());
        only
    };
    let req = request(&system, verb);
    let (status, body) = send(
        client,
        target,
        password,
        req.method,
        &req.path,
        req.body.as_ref(),
        timeout,
    )
    .await?;
    if looked_up && status == 404 {
        lock().remove(target.url);
    }
    let named = if target.system_id.is_empty() {
        system.as_str()
    } else {
        target.system_id
    };
    interpret(verb, named, status, &body)
}

/// One request with basic auth, its status and body.
async fn send(
    client: &reqwest::Client,
    target: &Target<'_>,
    password: &Secret,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<(u16, String), PowerError> {
    let url = format!("{}{path}", target.url);
    let method = match method {
        "GET" => reqwest::Method::GET,
        "PATCH" => reqwest::Method::PATCH,
        _ => reqwest::Method::POST,
    };
    let mut builder = client
        .request(method, &url)
        .basic_auth(target.user, Some(password.expose()))
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(timeout);
    if let Some(body) = body {
        builder = builder
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
    }
    let response = builder.send().await.map_err(|e| classify(&e, timeout))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| classify(&e, timeout))?;
    Ok((status, body))
}

fn classify(e: &reqwest::Error, timeout: Duration) -> PowerError {
    // reqwest's own text is only "error sending request for url (...)": the reason
    // (refused, reset, which certificate check failed) is in the sources. None of
    // it names the credentials: they travel in a header.
    let mut why = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        let text = inner.to_string();
        if !why.contains(&text) {
            why = format!("{why}: {text}");
        }
        source = inner.source();
    }
    if e.is_timeout() {
        PowerError::Timeout(timeout.as_secs().max(1))
    } else if why.contains("certificate") {
        // Not transient: retrying a certificate the client distrusts only waits.
        PowerError::Certificate(why)
    } else if e.is_connect() {
        PowerError::Unreachable(why)
    } else {
        PowerError::Refused(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_verb_is_one_request() {
        assert_eq!(
            request(&system_path("1"), Verb::On),
            Request {
                method: "POST",
                path: "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset".into(),
                body: Some(json!({"ResetType": "On"})),
            }
        );
        assert_eq!(
            request(&system_path("1"), Verb::Off).body,
            Some(json!({"ResetType": "ForceOff"}))
        );
        assert_eq!(
            request(&system_path("1"), Verb::Cycle).body,
            Some(json!({"ResetType": "ForceRestart"}))
        );
        let pxe = request(&system_path("System.Embedded.1"), Verb::Pxe);
        assert_eq!(pxe.method, "PATCH");
        assert_eq!(pxe.path, "/redfish/v1/Systems/System.Embedded.1");
        assert_eq!(
            pxe.body.expect("body")["Boot"]["BootSourceOverrideTarget"],
            "Pxe"
        );
        assert_eq!(request(&system_path("1"), Verb::Status).method, "GET");
    }

    #[test]
    fn answers_are_read() {
        let on = interpret(Verb::Status, "1", 200, r#"{"PowerState":"On"}"#).expect("on");
        assert_eq!(on.state, Some(PowerState::On));
        assert!(matches!(
            interpret(Verb::On, "1", 401, ""),
            Err(PowerError::Auth(_))
        ));
        let refused = interpret(
            Verb::Pxe,
            "1",
            400,
            r#"{"error":{"message":"x","@Message.ExtendedInfo":[{"Message":"Pxe is not allowed"}]}}"#,
        )
        .expect_err("400");
        assert!(
            refused.to_string().contains("Pxe is not allowed"),
            "{refused}"
        );
        assert!(interpret(Verb::Cycle, "1", 204, "").is_ok());
        let missing = interpret(Verb::Status, "1", 404, "").expect_err("404");
        assert!(
            missing.to_string().contains("no system \"1\"")
                && missing.to_string().contains("/redfish/v1/Systems"),
            "{missing}"
        );
    }

    #[test]
    fn the_only_system_is_found_and_several_are_named() {
        let one = r#"{"Members":[{"@odata.id":"/redfish/v1/Systems/System.Embedded.1"}]}"#;
        assert_eq!(
            only_system(200, one).expect("one"),
            "/redfish/v1/Systems/System.Embedded.1"
        );
        let two = r#"{"Members":[{"@odata.id":"/redfish/v1/Systems/a"},{"@odata.id":"/redfish/v1/Systems/b"}]}"#;
        let why = only_system(200, two).expect_err("two").to_string();
        assert!(why.contains("2 systems (a, b)"), "{why}");
        assert!(only_system(200, r#"{"Members":[]}"#).is_err());
        let odd = r#"{"Members":[{"@odata.id":"/elsewhere/x"}]}"#;
        assert!(
            only_system(200, odd).is_err(),
            "a path outside Systems is refused"
        );
        let sneaky = r#"{"Members":[{"@odata.id":"/redfish/v1/Systems/../../x"}]}"#;
        assert!(only_system(200, sneaky).is_err());
        assert!(matches!(only_system(401, ""), Err(PowerError::Auth(_))));
    }
}
