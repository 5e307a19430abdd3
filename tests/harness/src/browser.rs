//! Headless Chromium for the panel tests: Debian's `chromedriver` (which starts
//! `chromium`) in its own process group, a WebDriver session on it, and `Page`, the
//! steps a test takes on the panel (open, find, wait, click, screenshot), each
//! failing with what the page showed.
//!
//! Test files reach it as `harness::browser`.

use crate::fixtures::repo_root;
use crate::{Netns, Proc, in_netns, tail, wait_until};
use fantoccini::elements::Element;
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The window the screenshots are taken in (wider pages get a horizontal scrollbar,
/// taller ones are captured whole).
pub const WINDOW: (u32, u32) = (1280, 800);
/// One page load or one form submission.
pub const STEP: Duration = Duration::from_secs(10);
/// Starting chromedriver or rackboot.
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// The tools a browser test needs.
pub const TOOLS: [&str; 2] = ["chromium", "chromedriver"];

/// A process and every process it starts, killed together on drop: chromedriver
/// starts chromium, which starts zygotes, renderers and a GPU process; killing only
/// chromedriver would leave them running. They share the process group made here.
pub struct ProcGroup(pub Proc);

impl ProcGroup {
    pub fn spawn(mut cmd: Command, log: &Path) -> Self {
        cmd.process_group(0);
        ProcGroup(Proc::spawn(cmd, log))
    }
}

impl Drop for ProcGroup {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.0.child.id()) {
            // SAFETY: kill has no memory preconditions; the group is ours (made at spawn).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        // `Proc`'s own drop then reaps the group leader.
    }
}

/// Waits for `pattern` followed by a port number in the log of `proc` and returns it.
pub fn wait_for_port(proc: &mut Proc, pattern: &str, what: &str) -> u16 {
    let mut port = None;
    let found = wait_until(START_DEADLINE, || {
        port = proc.log_text().split_once(pattern).and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u16>().ok()
        });
        port.is_some() || proc.exited()
    });
    match port {
        Some(port) if found => port,
        _ => panic!("{what} did not start:\n{}", tail(&proc.log_text(), 40)),
    }
}

/// A plain HTTP GET without a client library: only chromedriver's /status uses it.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    // chromedriver may keep the connection open despite `Connection: close`: what
    // arrived before the read timed out is the answer.
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        response.extend_from_slice(&buf[..n]);
        if response.ends_with(b"}") {
            break;
        }
    }
    Some(String::from_utf8_lossy(&response).into_owned())
}

/// chromedriver, ready for sessions, with the address it listens on (loopback of
/// `ns` when given: a client must then connect from inside that namespace).
pub struct Driver {
    pub group: ProcGroup,
    pub addr: SocketAddr,
}

impl Driver {
    pub fn start(ns: Option<&Netns>, log: &Path) -> Self {
        // --port=0: chromedriver picks a free port and prints it.
        let mut cmd = match ns {
            Some(ns) => ns.command("chromedriver"),
            None => Command::new("chromedriver"),
        };
        cmd.arg("--port=0");
        let mut group = ProcGroup::spawn(cmd, log);
        let port = wait_for_port(
            &mut group.0,
            "started successfully on port ",
            "chromedriver",
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let status = || match ns {
            Some(ns) => in_netns(ns, move || http_get(addr, "/status")),
            None => http_get(addr, "/status"),
        };
        let ready = wait_until(START_DEADLINE, || {
            status().is_some_and(|r| r.contains("\"ready\":true"))
        });
        assert!(
            ready,
            "chromedriver not ready:\n{}",
            tail(&group.0.log_text(), 40)
        );
        Driver { group, addr }
    }

    pub fn log_text(&self) -> String {
        self.group.0.log_text()
    }
}

/// Opens a WebDriver session on a fresh headless chromium.
pub async fn connect(driver: SocketAddr, profile: &Path) -> Client {
    let args = [
        "--headless=new".to_string(),
        // The tests run as root (scripts/test), where chromium's sandbox cannot start.
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        // Containers have a small /dev/shm.
        "--disable-dev-shm-usage".into(),
        // The test network is closed: anything that phones home would hang or stall.
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-default-apps".into(),
        // No desktop keyring to wait for when the login form's password is seen.
        "--password-store=basic".into(),
        // Scrollbars would take 15 px off the screenshots' width.
        "--hide-scrollbars".into(),
        format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "binary": "/usr/bin/chromium", "args": args }),
    );
    let client = tokio::time::timeout(
        START_DEADLINE,
        ClientBuilder::native()
            .capabilities(caps)
            .connect(&format!("http://{driver}")),
    )
    .await
    .unwrap_or_else(|_| panic!("no WebDriver session within {START_DEADLINE:?}"))
    .unwrap_or_else(|e| panic!("cannot open a WebDriver session: {e}"));
    client
        .update_timeouts(TimeoutConfiguration::new(
            Some(STEP),
            Some(STEP),
            Some(Duration::ZERO),
        ))
        .await
        .expect("set WebDriver timeouts");
    client
        .set_window_size(WINDOW.0, WINDOW.1)
        .await
        .expect("set window size");
    client
}

/// A failed check, with what the page showed.
pub type Checked<T> = Result<T, String>;

/// The panel as one browser tab sees it.
pub struct Page<'a> {
    pub client: &'a Client,
    /// `http://host:port`, without a trailing slash.
    pub base: &'a str,
    /// Where screenshots go.
    pub shots: &'a Path,
}

impl Page<'_> {
    /// Logs in through the form (the user was made with the CLI) and lands on the
    /// dashboard.
    pub async fn log_in(&self, user: &str, password: &str) -> Checked<()> {
        self.open("/login").await?;
        self.type_into("//input[@name='user']", user).await?;
        self.type_into("//input[@name='password']", password)
            .await?;
        self.click("//button[normalize-space()='Log in']").await?;
        self.wait_for("//h1[normalize-space()='Dashboard']").await?;
        Ok(())
    }

    pub async fn open(&self, path: &str) -> Checked<()> {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .map_err(|e| format!("cannot open {path}: {e}"))
    }

    /// The current path and query.
    pub async fn url(&self) -> Checked<String> {
        let url = self.client.current_url().await.map_err(|e| e.to_string())?;
        Ok(match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        })
    }

    pub async fn find(&self, xpath: &str) -> Checked<Element> {
        match self.client.find(Locator::XPath(xpath)).await {
            Ok(element) => Ok(element),
            Err(e) => Err(self
                .failure(&format!("not on the page: {xpath} ({e})"))
                .await),
        }
    }

    /// Waits for an element a new page brings (the form just submitted leaves the
    /// old page in place until the response arrives).
    pub async fn wait_for(&self, xpath: &str) -> Checked<Element> {
        self.wait_for_within(xpath, STEP).await
    }

    pub async fn wait_for_within(&self, xpath: &str, deadline: Duration) -> Checked<Element> {
        match self
            .client
            .wait()
            .at_most(deadline)
            .every(Duration::from_millis(50))
            .for_element(Locator::XPath(xpath))
            .await
        {
            Ok(element) => Ok(element),
            Err(e) => Err(self
                .failure(&format!(
                    "did not appear within {deadline:?}: {xpath} ({e})"
                ))
                .await),
        }
    }

    pub async fn click(&self, xpath: &str) -> Checked<()> {
        let element = self.find(xpath).await?;
        element
            .click()
            .await
            .map_err(|e| format!("cannot click {xpath}: {e}"))
    }

    /// Replaces the text of an input.
    pub async fn type_into(&self, xpath: &str, text: &str) -> Checked<()> {
        let input = self.find(xpath).await?;
        input.clear().await.map_err(|e| e.to_string())?;
        input.send_keys(text).await.map_err(|e| e.to_string())
    }

    pub async fn select(&self, xpath: &str, value: &str) -> Checked<()> {
        self.find(xpath)
            .await?
            .select_by_value(value)
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn page_contains(&self, text: &str) -> Checked<()> {
        let body = self.body_text().await;
        if body.contains(text) {
            Ok(())
        } else {
            Err(self.failure(&format!("{text:?} is not on the page")).await)
        }
    }

    pub async fn body_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The page's HTML as the browser has it (inputs' values included).
    pub async fn source(&self) -> String {
        self.client.source().await.unwrap_or_default()
    }

    /// A full-page PNG: the window grows to the document's height for the capture
    /// (WebDriver captures only the viewport), then returns to its size.
    pub async fn screenshot(&self, name: &str) -> Checked<()> {
        let sizes = self
            .client
            .execute(
                "return [document.documentElement.scrollHeight, \
                 window.outerHeight - window.innerHeight];",
                Vec::new(),
            )
            .await
            .map_err(|e| format!("page height for {name}: {e}"))?;
        let number = |i: usize| sizes.get(i).and_then(serde_json::Value::as_u64);
        let (Some(page), Some(frame)) = (number(0), number(1)) else {
            return Err(format!("page height for {name}: got {sizes}"));
        };
        // The page must be complete, yet a runaway page must not ask for a huge window.
        let height = u32::try_from(page + frame)
            .unwrap_or(u32::MAX)
            .clamp(WINDOW.1, 8000);
        self.client
            .set_window_size(WINDOW.0, height)
            .await
            .map_err(|e| e.to_string())?;
        let png = self.client.screenshot().await;
        self.client
            .set_window_size(WINDOW.0, WINDOW.1)
            .await
            .map_err(|e| e.to_string())?;
        let png = png.map_err(|e| format!("screenshot {name}: {e}"))?;
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A failure message with where the browser was and what the page said.
    pub async fn failure(&self, what: &str) -> String {
        let url = self.url().await.unwrap_or_else(|e| format!("? ({e})"));
        let body = self.body_text().await;
        // The page as it was, for whoever reads the failure.
        let _ = self.screenshot("failure").await;
        // Notices and errors are at the top of the page.
        let head: Vec<&str> = body.lines().take(60).collect();
        format!("{what}\nat {url}; the page said:\n{}", head.join("\n"))
    }
}

/// A directory under `test-output/` for one test's screenshots, emptied first:
/// screenshots left by an earlier run would pass for this run's.
pub fn screenshot_dir(name: &str) -> PathBuf {
    let dir = repo_root().join("test-output").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}
