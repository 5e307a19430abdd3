//! The admin panel in a real browser: Debian's headless `chromium`, driven over
//! WebDriver by Debian's `chromedriver`, against `rackboot serve`. An operator logs in,
//! imports a CSV of machines through the preview, assigns an image to one, clicks
//! Reinstall and sees the event on the machine's page; every other page is opened and
//! checked too. A full-page screenshot of each page goes to `test-output/screenshots/`.
//!
//! `RACKBOOT_UPDATE_DOCS=1` also refreshes the screenshots the README shows
//! (`docs/panel-machine.png`, `docs/panel-machines.png`): a test run does not touch
//! tracked files unless asked to.

mod harness;

use fantoccini::elements::Element;
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use harness::{Proc, RACKBOOT, should_run, tail, wait_until};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The window the screenshots are taken in (wider pages get a horizontal scrollbar,
/// taller ones are captured whole).
const WINDOW: (u32, u32) = (1280, 800);
/// The whole browser part; a healthy run takes a few seconds.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(60);
/// One page load or one form submission.
const STEP: Duration = Duration::from_secs(10);
/// Starting chromedriver or rackboot.
const START_DEADLINE: Duration = Duration::from_secs(20);

const PASSWORD: &str = "correct horse battery";
const IMAGE: &str = "debian-12";
/// Added without an image (so in `local`): the one the test reinstalls.
const MAC: &str = "52:54:00:b0:00:02";
const CSV: &str = "mac,hostname,ip,image,rack,position\n\
                   52:54:00:b0:00:01,web-01,10.0.0.11,,R1,U01\n\
                   52-54-00-B0-00-02,web-02,10.0.0.12,,R1,U02\n\
                   52:54:00:b0:00:03,db-01,,debian-12,R2,U10\n";

/// A process and every process it starts, killed together on drop: chromedriver
/// starts chromium, which starts zygotes, renderers and a GPU process; killing only
/// chromedriver would leave them running. They share the process group made here.
struct ProcGroup(Proc);

impl ProcGroup {
    fn spawn(mut cmd: Command, log: &Path) -> Self {
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
fn wait_for_port(proc: &mut Proc, pattern: &str, what: &str) -> u16 {
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

fn rackboot(config: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(RACKBOOT)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run rackboot {args:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().expect("wait for rackboot");
    assert!(
        output.status.success(),
        "rackboot {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[test]
fn operator_imports_assigns_and_reinstalls_in_a_browser() {
    if !should_run("browser", &["chromium", "chromedriver"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("rackboot.toml");
    // No [dhcp]: HTTP only. Port 0: rackboot reports the port it got ("rackboot ready
    // http=..."), so no port is guessed and none can be taken in between.
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write config");

    rackboot(
        &config,
        &["user", "add", "admin", "--role", "admin"],
        Some(&format!("{PASSWORD}\n")),
    );
    let kernel = dir.path().join("vmlinuz");
    let initrd = dir.path().join("initrd.img");
    std::fs::write(&kernel, b"not a kernel: the browser never boots it\n").expect("kernel");
    std::fs::write(&initrd, b"not an initrd either\n").expect("initrd");
    rackboot(
        &config,
        &[
            "image",
            "add",
            IMAGE,
            "--kernel",
            kernel.to_str().expect("utf8 path"),
            "--initrd",
            initrd.to_str().expect("utf8 path"),
            "--cmdline",
            "console=ttyS0",
        ],
        None,
    );
    let kernel_sha256 = hex::encode(Sha256::digest(std::fs::read(&kernel).expect("kernel")));
    let csv = dir.path().join("rack-r1.csv");
    std::fs::write(&csv, CSV).expect("csv");

    let mut serve_cmd = Command::new(RACKBOOT);
    serve_cmd.arg("--config").arg(&config).arg("serve");
    serve_cmd.env("RUST_LOG", "info");
    let mut server = Proc::spawn(serve_cmd, &dir.path().join("serve.log"));
    let port = wait_for_port(&mut server, "rackboot ready http=127.0.0.1:", "rackboot");
    let base = format!("http://127.0.0.1:{port}");

    // --port=0: chromedriver picks a free port and prints it.
    let mut driver_cmd = Command::new("chromedriver");
    driver_cmd.arg("--port=0");
    let mut driver = ProcGroup::spawn(driver_cmd, &dir.path().join("chromedriver.log"));
    let driver_port = wait_for_port(
        &mut driver.0,
        "started successfully on port ",
        "chromedriver",
    );
    let driver_addr = SocketAddr::from(([127, 0, 0, 1], driver_port));
    let driver_ready = wait_until(START_DEADLINE, || {
        http_get(driver_addr, "/status").is_some_and(|r| r.contains("\"ready\":true"))
    });
    assert!(
        driver_ready,
        "chromedriver not ready:\n{}",
        tail(&driver.0.log_text(), 40)
    );

    // Emptied first: screenshots left by an earlier run would pass for this run's.
    let shots = repo_path("test-output/screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("create test-output/screenshots");
    let profile = dir.path().join("chromium-profile");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = runtime.block_on(async {
        let client = connect(driver_addr, &profile).await;
        let scenario = Scenario {
            client: &client,
            base: &base,
            shots: &shots,
            csv: &csv,
            kernel_sha256: &kernel_sha256,
        };
        let result = tokio::time::timeout(SCENARIO_DEADLINE, scenario.run()).await;
        // Ends the session: chromedriver quits chromium. On failure the process group
        // is killed below anyway.
        let _ = tokio::time::timeout(STEP, client.close()).await;
        result
    });
    drop(runtime);
    let logs = || {
        format!(
            "--- rackboot serve ---\n{}\n--- chromedriver ---\n{}",
            tail(&server.log_text(), 40),
            tail(&driver.0.log_text(), 20)
        )
    };
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(failure)) => panic!("{failure}\n{}", logs()),
        Err(_) => panic!(
            "the browser scenario took longer than {SCENARIO_DEADLINE:?}\n{}",
            logs()
        ),
    }

    if std::env::var("RACKBOOT_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        for (shot, doc) in [
            ("06-machine-after-reinstall.png", "docs/panel-machine.png"),
            ("03-machines.png", "docs/panel-machines.png"),
        ] {
            std::fs::create_dir_all(repo_path("docs")).expect("create docs");
            std::fs::copy(shots.join(shot), repo_path(doc)).expect("copy screenshot to docs");
        }
    }
}

/// Opens a WebDriver session on a fresh headless chromium.
async fn connect(driver: SocketAddr, profile: &Path) -> Client {
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
type Checked<T> = Result<T, String>;

struct Scenario<'a> {
    client: &'a Client,
    base: &'a str,
    shots: &'a Path,
    csv: &'a Path,
    kernel_sha256: &'a str,
}

impl Scenario<'_> {
    async fn run(&self) -> Checked<()> {
        self.log_in().await?;
        self.import().await?;
        self.dashboard().await?;
        self.reinstall().await?;
        self.other_pages().await
    }

    async fn log_in(&self) -> Checked<()> {
        // Any page sends a stranger to the login form, which returns them there after.
        self.open("/audit").await?;
        let url = self.url().await?;
        if url != "/login?next=%2Faudit" {
            return Err(self.failure(&format!("not sent to log in: at {url}")).await);
        }
        self.screenshot("01-login").await?;
        self.find("//input[@name='user']")
            .await?
            .send_keys("admin")
            .await
            .map_err(|e| e.to_string())?;
        self.find("//input[@name='password']")
            .await?
            .send_keys(PASSWORD)
            .await
            .map_err(|e| e.to_string())?;
        self.click("//button[normalize-space()='Log in']").await?;
        self.wait_for("//h1[normalize-space()='Audit log']").await?;
        // The admin and the image the CLI added are in the audit log, as the CLI's doing.
        let rows = "//table[contains(@class,'events')]//tr";
        self.find(&format!(
            "{rows}[td[3]='user.added'][td[4]='admin role=admin'][starts-with(td[5],'cli:')]"
        ))
        .await?;
        self.find(&format!(
            "{rows}[td[3]='image.added'][starts-with(td[4],'{IMAGE} kernel={}')]\
             [starts-with(td[5],'cli:')]",
            self.kernel_sha256
        ))
        .await?;
        Ok(())
    }

    async fn import(&self) -> Checked<()> {
        self.open("/machines").await?;
        self.click("//a[normalize-space()='Import CSV/XLSX']")
            .await?;
        self.wait_for("//h1[normalize-space()='Import machines']")
            .await?;
        // A file input takes the file's path as keys.
        self.find("//input[@type='file' and @name='file']")
            .await?
            .send_keys(self.csv.to_str().ok_or("csv path is not UTF-8")?)
            .await
            .map_err(|e| e.to_string())?;
        self.click("//button[normalize-space()='Preview']").await?;
        self.wait_for("//form[@action='/import/commit']").await?;
        self.page_contains("3 rows: 3 ready, 0 with errors.")
            .await?;
        // Each row is previewed as it will be written: MACs normalized, new machines.
        for (mac, host) in [
            ("52:54:00:b0:00:01", "web-01"),
            (MAC, "web-02"),
            ("52:54:00:b0:00:03", "db-01"),
        ] {
            self.find(&format!(
                "//tr[@class='ok'][td[2]='add'][td[3]='{mac}'][td[4]='{host}']"
            ))
            .await?;
        }
        // Nothing is written before the preview is confirmed.
        if self.machine_count_via_page().await? != 0 {
            return Err(self
                .failure("machines exist before the import was confirmed")
                .await);
        }
        self.screenshot("02-import-preview").await?;
        self.click("//button[normalize-space()='Import 3 machines']")
            .await?;
        self.wait_for("//p[@class='notice'][normalize-space()='Imported: 3 added, 0 updated.']")
            .await?;
        self.find("//h1[normalize-space()='Machines 3']").await?;
        for (mac, host, mode) in [
            ("52:54:00:b0:00:01", "web-01", "local"),
            (MAC, "web-02", "local"),
            // A machine added with an image is new and needs its OS.
            ("52:54:00:b0:00:03", "db-01", "install"),
        ] {
            self.find(&format!(
                "//tbody/tr[td[1]/a='{mac}'][td[2]='{host}'][td[5]/span='{mode}']"
            ))
            .await?;
        }
        self.screenshot("03-machines").await
    }

    async fn dashboard(&self) -> Checked<()> {
        self.open("/").await?;
        self.wait_for("//h1[normalize-space()='Dashboard']").await?;
        for card in ["3 machines", "2 local", "1 install"] {
            self.find(&format!(
                "//a[contains(@class,'card')][normalize-space()='{card}']"
            ))
            .await?;
        }
        self.find(
            "//table[contains(@class,'events')]//tr[td[3]='machine.added'][td[5]='user:admin']",
        )
        .await?;
        self.screenshot("04-dashboard").await
    }

    async fn reinstall(&self) -> Checked<()> {
        // From the list, as an operator would get there.
        self.open("/machines?q=web-02").await?;
        self.click(&format!("//a[normalize-space()='{MAC}']"))
            .await?;
        self.wait_for(&format!("//h1[starts-with(normalize-space(), '{MAC}')]"))
            .await?;
        self.find("//span[contains(@class,'mode big')][normalize-space()='local']")
            .await?;
        self.screenshot("05-machine-before").await?;

        // Reinstalling a machine without an image is refused: assign one first.
        self.find("//select[@name='image']")
            .await?
            .select_by_value(IMAGE)
            .await
            .map_err(|e| e.to_string())?;
        self.click("//form[contains(@action,'/image')]//button[normalize-space()='Assign']")
            .await?;
        self.wait_for(&format!(
            "//p[@class='notice'][normalize-space()='Image set to {IMAGE}.']"
        ))
        .await?;
        self.find(&format!(
            "//table[@class='kv']//tr[th='Image'][td='{IMAGE}']"
        ))
        .await?;

        self.click("//button[@name='mode'][@value='install'][normalize-space()='Reinstall']")
            .await?;
        self.wait_for("//p[@class='notice'][starts-with(normalize-space(), 'Reinstall set')]")
            .await?;
        self.find("//span[contains(@class,'mode big')][normalize-space()='install']")
            .await?;
        // An install carries a done-URL token with an expiry.
        self.find("//table[@class='kv']//tr[th='Mode']/td[contains(., 'done-URL valid until')]")
            .await?;
        // The timeline tells who did what.
        let events = "//table[contains(@class,'events')]//tr";
        self.find(&format!(
            "{events}[td[2]='{MAC}'][td[3]='image.set'][td[4]='- -> {IMAGE}'][td[5]='user:admin']"
        ))
        .await?;
        self.find(&format!(
            "{events}[td[2]='{MAC}'][td[3]='mode.set'][td[4]='local -> install'][td[5]='user:admin']"
        ))
        .await?;
        self.screenshot("06-machine-after-reinstall").await
    }

    async fn other_pages(&self) -> Checked<()> {
        self.click("//header//a[normalize-space()='Images']")
            .await?;
        self.wait_for("//h1[normalize-space()='Images']").await?;
        // Shown whole in the title, shortened on screen; two machines use it now.
        self.find(&format!(
            "//tr[td[1]/strong='{IMAGE}'][td[2]/@title='{}'][td[6]/a='2'][td[7]/small='in use']",
            self.kernel_sha256
        ))
        .await?;
        self.screenshot("07-images").await?;

        self.click("//header//a[normalize-space()='Leases']")
            .await?;
        self.wait_for("//h1[normalize-space()='Leases 0']").await?;
        self.page_contains("No leases.").await?;
        self.screenshot("08-leases").await?;

        self.click("//header//a[normalize-space()='Audit log']")
            .await?;
        self.wait_for("//h1[normalize-space()='Audit log']").await?;
        self.find(&format!(
            "//tr[td[2]='{MAC}'][td[3]='mode.set'][td[4]='local -> install'][td[5]='user:admin']"
        ))
        .await?;
        self.screenshot("09-audit").await?;

        self.click("//header//a[normalize-space()='Users & tokens']")
            .await?;
        self.wait_for("//h1[normalize-space()='Users and API tokens']")
            .await?;
        self.find("//table//tr[td[1]='admin'][td[2]='admin']")
            .await?;
        self.screenshot("10-admin").await
    }

    // ---- helpers ----

    async fn open(&self, path: &str) -> Checked<()> {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .map_err(|e| format!("cannot open {path}: {e}"))
    }

    /// The current path and query.
    async fn url(&self) -> Checked<String> {
        let url = self.client.current_url().await.map_err(|e| e.to_string())?;
        Ok(match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        })
    }

    async fn find(&self, xpath: &str) -> Checked<Element> {
        match self.client.find(Locator::XPath(xpath)).await {
            Ok(element) => Ok(element),
            Err(e) => Err(self
                .failure(&format!("not on the page: {xpath} ({e})"))
                .await),
        }
    }

    /// Waits for an element a new page brings (the form just submitted leaves the
    /// old page in place until the response arrives).
    async fn wait_for(&self, xpath: &str) -> Checked<Element> {
        match self
            .client
            .wait()
            .at_most(STEP)
            .every(Duration::from_millis(50))
            .for_element(Locator::XPath(xpath))
            .await
        {
            Ok(element) => Ok(element),
            Err(e) => Err(self
                .failure(&format!("did not appear within {STEP:?}: {xpath} ({e})"))
                .await),
        }
    }

    async fn click(&self, xpath: &str) -> Checked<()> {
        let element = self.find(xpath).await?;
        element
            .click()
            .await
            .map_err(|e| format!("cannot click {xpath}: {e}"))
    }

    async fn page_contains(&self, text: &str) -> Checked<()> {
        let body = self.body_text().await;
        if body.contains(text) {
            Ok(())
        } else {
            Err(self.failure(&format!("{text:?} is not on the page")).await)
        }
    }

    async fn body_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The machine count the machines page reports, read in a second tab so the page
    /// under test stays as it is.
    async fn machine_count_via_page(&self) -> Checked<u64> {
        let here = self.client.window().await.map_err(|e| e.to_string())?;
        let tab = self
            .client
            .new_window(true)
            .await
            .map_err(|e| e.to_string())?;
        self.client
            .switch_to_window(tab.handle)
            .await
            .map_err(|e| e.to_string())?;
        self.open("/machines").await?;
        let heading = self.find("//h1/small").await?.text().await;
        let closed = self.client.close_window().await;
        self.client
            .switch_to_window(here)
            .await
            .map_err(|e| e.to_string())?;
        closed.map_err(|e| e.to_string())?;
        let heading = heading.map_err(|e| e.to_string())?;
        heading
            .trim()
            .parse()
            .map_err(|_| format!("machine count {heading:?} is not a number"))
    }

    /// A full-page PNG: the window grows to the document's height for the capture
    /// (WebDriver captures only the viewport), then returns to its size.
    async fn screenshot(&self, name: &str) -> Checked<()> {
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
    async fn failure(&self, what: &str) -> String {
        let url = self.url().await.unwrap_or_else(|e| format!("? ({e})"));
        let body = self.body_text().await;
        // The page as it was, for whoever reads the failure.
        let _ = self.screenshot("failure").await;
        // Notices and errors are at the top of the page.
        let head: Vec<&str> = body.lines().take(60).collect();
        format!("{what}\nat {url}; the page said:\n{}", head.join("\n"))
    }
}
