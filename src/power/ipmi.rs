//! IPMI over LAN through `ipmitool -I lanplus`, the client MAAS, Ironic and Foreman
//! run. Arguments go to the process as a vector (no shell); the password goes
//! through the environment (`-E` reads `IPMI_PASSWORD`), never on the command line
//! where `ps` would show it. Building the arguments and reading the output are pure.

use super::{Outcome, PowerError, PowerState, Secret, Verb};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

pub struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub cipher_suite: u8,
}

/// The ipmitool arguments for `verb` (pure). `-v` makes ipmitool say why a session
/// failed (a wrong password reads "RAKP 2 HMAC is invalid"), which is otherwise
/// the same message as an unreachable BMC.
pub fn args(target: &Target<'_>, verb: Verb) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-I".into(),
        "lanplus".into(),
        "-H".into(),
        target.host.into(),
        "-p".into(),
        target.port.to_string(),
        "-U".into(),
        target.user.into(),
        "-E".into(),
        // Naming the cipher suite skips "Get Channel Cipher Suites", which some BMCs
        // (ipmi_sim among them) do not answer: ~10 s saved per call.
        "-C".into(),
        target.cipher_suite.to_string(),
        "-v".into(),
    ];
    let command: &[&str] = match verb {
        Verb::On => &["chassis", "power", "on"],
        Verb::Off => &["chassis", "power", "off"],
        Verb::Cycle => &["chassis", "power", "cycle"],
        Verb::Status => &["chassis", "power", "status"],
        Verb::Pxe => &["chassis", "bootdev", "pxe"],
    };
    args.extend(command.iter().map(|s| s.to_string()));
    args
}

/// Reads what ipmitool printed and how it exited (pure).
pub fn interpret(
    verb: Verb,
    success: bool,
    stdout: &str,
    stderr: &str,
) -> Result<Outcome, PowerError> {
    let said = |needle: &str| stderr.contains(needle) || stdout.contains(needle);
    if said("RAKP 2 HMAC is invalid")
        || said("unauthorized name")
        || said("Unauthorized name")
        || said("invalid authentication algorithm")
        || said("insufficient resources for session")
    {
        return Err(PowerError::Auth(last_error_line(stderr)));
    }
    if said("Unable to establish IPMI v2 / RMCP+ session") || said("No response from remote") {
        return Err(PowerError::Unreachable(last_error_line(stderr)));
    }
    // `bootdev pxe` exits 0 even when the BMC refuses the boot parameters (ipmi_sim's
    // default configuration does): the machine is still on, and boots from the
    // network anyway if network comes first in its boot order. A warning, not a
    // failure.
    if verb == Verb::Pxe && said("Set Chassis Boot Parameter") && said("failed") {
        return Ok(Outcome {
            state: None,
            warning: Some(format!(
                "the BMC refused `bootdev pxe` ({}); the machine boots from the network only if its boot order puts the network first",
                last_error_line(stderr)
            )),
        });
    }
    if !success {
        return Err(PowerError::Refused(last_error_line(stderr)));
    }
    match verb {
        Verb::Status => {
            let state = stdout.lines().find_map(|line| {
                let line = line.trim();
                line.strip_prefix("Chassis Power is ")
                    .and_then(|s| match s.trim() {
                        "on" => Some(PowerState::On),
                        "off" => Some(PowerState::Off),
                        _ => None,
                    })
            });
            match state {
                Some(state) => Ok(Outcome {
                    state: Some(state),
                    warning: None,
                }),
                None => Err(PowerError::Refused(format!(
                    "no power state in ipmitool's answer: {:?}",
                    stdout.trim()
                ))),
            }
        }
        _ => Ok(Outcome::default()),
    }
}

/// The last line that says something, without ipmitool's harmless chatter.
fn last_error_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .rfind(|l| {
            !l.is_empty()
                && !l.starts_with("Loading IANA")
                && !l.starts_with("Unable to Get Channel Cipher Suites")
                && !l.starts_with('>')
        })
        .unwrap_or("ipmitool failed without a message")
        .chars()
        .take(300)
        .collect()
}

/// Runs ipmitool once, killed when `timeout` passes.
pub async fn run(
    ipmitool: &Path,
    target: &Target<'_>,
    password: &Secret,
    verb: Verb,
    timeout: Duration,
) -> Result<Outcome, PowerError> {
    let mut cmd = tokio::process::Command::new(ipmitool);
    cmd.args(args(target, verb))
        .env("IPMI_PASSWORD", password.expose())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A timed-out run is dropped below; this makes sure the process goes too.
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| PowerError::Local(format!("cannot run {}: {e}", ipmitool.display())))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(PowerError::Timeout(timeout.as_secs().max(1))),
        Ok(Err(e)) => Err(PowerError::Local(format!("ipmitool: {e}"))),
        Ok(Ok(output)) => interpret(
            verb,
            output.status.success(),
            &String::from_utf8_lossy(&output.stdout),
            &String::from_utf8_lossy(&output.stderr),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target<'static> {
        Target {
            host: "192.0.2.9",
            port: 9623,
            user: "admin",
            cipher_suite: 3,
        }
    }

    #[test]
    fn arguments_carry_no_password_and_name_the_command() {
        let a = args(&target(), Verb::Pxe);
        assert_eq!(
            a.join(" "),
            "-I lanplus -H 192.0.2.9 -p 9623 -U admin -E -C 3 -v chassis bootdev pxe"
        );
        assert!(!a.iter().any(|x| x == "-P"), "never -P on the command line");
        assert_eq!(
            args(&target(), Verb::Cycle)[12..].join(" "),
            "chassis power cycle"
        );
    }

    #[test]
    fn status_output_is_parsed() {
        let on = interpret(
            Verb::Status,
            true,
            "Chassis Power is on\n",
            "Unable to Get Channel Cipher Suites\n",
        );
        assert_eq!(on.expect("on").state, Some(PowerState::On));
        let off = interpret(Verb::Status, true, "Chassis Power is off\n", "");
        assert_eq!(off.expect("off").state, Some(PowerState::Off));
        assert!(interpret(Verb::Status, true, "garbage", "").is_err());
    }

    #[test]
    fn failures_are_told_apart() {
        let wrong_password = "Loading IANA PEN Registry...\n> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n";
        assert!(matches!(
            interpret(Verb::Status, false, "", wrong_password),
            Err(PowerError::Auth(_))
        ));
        let unreachable = "Error: Unable to establish IPMI v2 / RMCP+ session\n";
        let e = interpret(Verb::On, false, "", unreachable).expect_err("fails");
        assert!(e.transient(), "{e}");
        let bootdev = "Set Chassis Boot Parameter 4 failed: Invalid data field in request\nSet Chassis Boot Parameter 5 failed: Invalid data field in request\n";
        let warned = interpret(Verb::Pxe, true, "", bootdev).expect("a warning, not an error");
        assert!(
            warned
                .warning
                .as_deref()
                .is_some_and(|w| w.contains("Invalid data field")),
            "{warned:?}"
        );
        assert_eq!(
            interpret(Verb::Pxe, true, "Set Boot Device to pxe\n", "").expect("ok"),
            Outcome::default()
        );
    }
}
