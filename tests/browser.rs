//! The admin panel in a real browser: Debian's headless `chromium`, driven over
//! WebDriver by Debian's `chromedriver`, against `rackboot serve`. An operator logs in,
//! imports a CSV of machines through the preview, assigns an image to one, clicks
//! Reinstall and sees the event on the machine's page; every other page is opened and
//! checked too. A full-page screenshot of each page goes to `test-output/screenshots/`.
//!
//! `RACKBOOT_UPDATE_DOCS=1` also refreshes the screenshots the README shows
//! (`docs/panel-machine.png`, `docs/panel-machines.png`): a test run does not touch
//! tracked files unless asked to.

use harness::browser::{Checked, Driver, Page, STEP, connect, screenshot_dir, wait_for_port};
use harness::{Proc, should_run, tail};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

/// The whole browser part; a healthy run takes a few seconds.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(60);

const PASSWORD: &str = "correct horse battery";
const IMAGE: &str = "debian-12";
/// Added without an image (so in `local`): the one the test reinstalls.
const MAC: &str = "52:54:00:b0:00:02";
const CSV: &str = "mac,hostname,ip,image,rack,position\n\
                   52:54:00:b0:00:01,web-01,10.0.0.11,,R1,U01\n\
                   52-54-00-B0-00-02,web-02,10.0.0.12,,R1,U02\n\
                   52:54:00:b0:00:03,db-01,,debian-12,R2,U10\n";

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

    let driver = Driver::start(None, &dir.path().join("chromedriver.log"));
    let shots = screenshot_dir("screenshots");
    let profile = dir.path().join("chromium-profile");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = runtime.block_on(async {
        let client = connect(driver.addr, &profile).await;
        let scenario = Scenario {
            page: Page {
                client: &client,
                base: &base,
                shots: &shots,
            },
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
            tail(&driver.log_text(), 20)
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

struct Scenario<'a> {
    page: Page<'a>,
    csv: &'a Path,
    kernel_sha256: &'a str,
}

impl Scenario<'_> {
    async fn run(&self) -> Checked<()> {
        self.log_in().await?;
        self.import().await?;
        self.dashboard().await?;
        self.reinstall().await?;
        self.other_pages().await?;
        self.reinstall_a_selection().await
    }

    async fn log_in(&self) -> Checked<()> {
        // Any page sends a stranger to the login form, which returns them there after.
        self.page.open("/audit").await?;
        let url = self.page.url().await?;
        if url != "/login?next=%2Faudit" {
            return Err(self
                .page
                .failure(&format!("not sent to log in: at {url}"))
                .await);
        }
        self.page.screenshot("01-login").await?;
        self.page
            .find("//input[@name='user']")
            .await?
            .send_keys("admin")
            .await
            .map_err(|e| e.to_string())?;
        self.page
            .find("//input[@name='password']")
            .await?
            .send_keys(PASSWORD)
            .await
            .map_err(|e| e.to_string())?;
        self.page
            .click("//button[normalize-space()='Log in']")
            .await?;
        self.page
            .wait_for("//h1[normalize-space()='Audit log']")
            .await?;
        // The admin and the image the CLI added are in the audit log, as the CLI's doing.
        let rows = "//table[contains(@class,'events')]//tr";
        self.page
            .find(&format!(
                "{rows}[td[3]='user.added'][td[4]='admin role=admin'][starts-with(td[5],'cli:')]"
            ))
            .await?;
        self.page
            .find(&format!(
                "{rows}[td[3]='image.added'][starts-with(td[4],'{IMAGE} kernel={}')]\
             [starts-with(td[5],'cli:')]",
                self.kernel_sha256
            ))
            .await?;
        Ok(())
    }

    async fn import(&self) -> Checked<()> {
        self.page.open("/machines").await?;
        self.page
            .click("//a[normalize-space()='Import CSV/XLSX']")
            .await?;
        self.page
            .wait_for("//h1[normalize-space()='Import machines']")
            .await?;
        // A file input takes the file's path as keys.
        self.page
            .find("//input[@type='file' and @name='file']")
            .await?
            .send_keys(self.csv.to_str().ok_or("csv path is not UTF-8")?)
            .await
            .map_err(|e| e.to_string())?;
        self.page
            .click("//button[normalize-space()='Preview']")
            .await?;
        self.page
            .wait_for("//form[@action='/import/commit']")
            .await?;
        self.page
            .page_contains("3 rows: 3 ready, 0 with errors.")
            .await?;
        // Each row is previewed as it will be written: MACs normalized, new machines.
        for (mac, host) in [
            ("52:54:00:b0:00:01", "web-01"),
            (MAC, "web-02"),
            ("52:54:00:b0:00:03", "db-01"),
        ] {
            self.page
                .find(&format!(
                    "//tr[@class='ok'][td[2]='add'][td[3]='{mac}'][td[4]='{host}']"
                ))
                .await?;
        }
        // Nothing is written before the preview is confirmed.
        if self.machine_count_via_page().await? != 0 {
            return Err(self
                .page
                .failure("machines exist before the import was confirmed")
                .await);
        }
        self.page.screenshot("02-import-preview").await?;
        self.page
            .click("//button[normalize-space()='Import 3 machines']")
            .await?;
        self.page
            .wait_for("//p[@class='notice'][normalize-space()='Imported: 3 added, 0 updated.']")
            .await?;
        self.page
            .find("//h1[normalize-space()='Machines 3']")
            .await?;
        for (mac, host, mode) in [
            ("52:54:00:b0:00:01", "web-01", "local"),
            (MAC, "web-02", "local"),
            // A machine added with an image is new and needs its OS.
            ("52:54:00:b0:00:03", "db-01", "install"),
        ] {
            self.page
                .find(&format!(
                    "//tbody/tr[td[2]/a='{mac}'][td[3]='{host}'][td[6]/span='{mode}']"
                ))
                .await?;
        }
        self.page.screenshot("03-machines").await
    }

    async fn dashboard(&self) -> Checked<()> {
        self.page.open("/").await?;
        self.page
            .wait_for("//h1[normalize-space()='Dashboard']")
            .await?;
        for card in ["3 machines", "2 local", "1 install"] {
            self.page
                .find(&format!(
                    "//a[contains(@class,'card')][normalize-space()='{card}']"
                ))
                .await?;
        }
        self.page
            .find(
                "//table[contains(@class,'events')]//tr[td[3]='machine.added'][td[5]='user:admin']",
            )
            .await?;
        self.page.screenshot("04-dashboard").await
    }

    async fn reinstall(&self) -> Checked<()> {
        // From the list, as an operator would get there.
        self.page.open("/machines?q=web-02").await?;
        self.page
            .click(&format!("//a[normalize-space()='{MAC}']"))
            .await?;
        self.page
            .wait_for(&format!("//h1[starts-with(normalize-space(), '{MAC}')]"))
            .await?;
        self.page
            .find("//span[contains(@class,'mode big')][normalize-space()='local']")
            .await?;
        self.page.screenshot("05-machine-before").await?;

        // Reinstalling a machine without an image is refused: assign one first.
        self.page
            .find("//select[@name='image']")
            .await?
            .select_by_value(IMAGE)
            .await
            .map_err(|e| e.to_string())?;
        self.page
            .click("//form[contains(@action,'/image')]//button[normalize-space()='Assign']")
            .await?;
        self.page
            .wait_for(&format!(
                "//p[@class='notice'][normalize-space()='Image set to {IMAGE}.']"
            ))
            .await?;
        self.page
            .find(&format!(
                "//table[@class='kv']//tr[th='Image'][td='{IMAGE}']"
            ))
            .await?;

        self.page
            .click("//button[@name='mode'][@value='install'][normalize-space()='Reinstall']")
            .await?;
        self.page
            .wait_for("//p[@class='notice'][starts-with(normalize-space(), 'Reinstall set')]")
            .await?;
        self.page
            .find("//span[contains(@class,'mode big')][normalize-space()='install']")
            .await?;
        // An install carries a done-URL token with an expiry.
        self.page
            .find("//table[@class='kv']//tr[th='Mode']/td[contains(., 'done-URL valid until')]")
            .await?;
        // The timeline tells who did what.
        let events = "//table[contains(@class,'events')]//tr";
        self.page.find(&format!(
            "{events}[td[2]='{MAC}'][td[3]='image.set'][td[4]='- -> {IMAGE}'][td[5]='user:admin']"
        ))
        .await?;
        self.page.find(&format!(
            "{events}[td[2]='{MAC}'][td[3]='mode.set'][td[4]='local -> install'][td[5]='user:admin']"
        ))
        .await?;
        self.page.screenshot("06-machine-after-reinstall").await
    }

    async fn other_pages(&self) -> Checked<()> {
        self.page
            .click("//header//a[normalize-space()='Images']")
            .await?;
        self.page
            .wait_for("//h1[normalize-space()='Images']")
            .await?;
        // Shown whole in the title, shortened on screen; two machines use it now.
        self.page.find(&format!(
            "//tr[td[1]/strong='{IMAGE}'][td[2]/@title='{}'][td[6]/a='2'][td[7]/small='in use']",
            self.kernel_sha256
        ))
        .await?;
        self.page.screenshot("07-images").await?;

        self.page
            .click("//header//a[normalize-space()='Leases']")
            .await?;
        self.page
            .wait_for("//h1[normalize-space()='Leases 0']")
            .await?;
        self.page.page_contains("No leases.").await?;
        self.page.screenshot("08-leases").await?;

        self.page
            .click("//header//a[normalize-space()='Audit log']")
            .await?;
        self.page
            .wait_for("//h1[normalize-space()='Audit log']")
            .await?;
        self.page.find(&format!(
            "//tr[td[2]='{MAC}'][td[3]='mode.set'][td[4]='local -> install'][td[5]='user:admin']"
        ))
        .await?;
        self.page.screenshot("09-audit").await?;

        self.page
            .click("//header//a[normalize-space()='Users & tokens']")
            .await?;
        self.page
            .wait_for("//h1[normalize-space()='Users and API tokens']")
            .await?;
        self.page
            .find("//table//tr[td[1]='admin'][td[2]='admin']")
            .await?;
        self.page.screenshot("10-admin").await
    }

    /// Two machines ticked on the list and reinstalled together: the confirmation
    /// page names the one that cannot be (no image), the results say which did.
    async fn reinstall_a_selection(&self) -> Checked<()> {
        self.page.open("/machines").await?;
        for mac in ["52:54:00:b0:00:01", "52:54:00:b0:00:03"] {
            self.page
                .click(&format!("//input[@type='checkbox'][@value='{mac}']"))
                .await?;
        }
        self.page
            .select("//select[@name='action']", "reinstall")
            .await?;
        self.page
            .click("//button[normalize-space()='Apply…']")
            .await?;
        self.page
            .wait_for("//h1[normalize-space()='Reinstall 2 machines?']")
            .await?;
        self.page
            .find("//tr[@class='bad'][td[1]/a='52:54:00:b0:00:01'][contains(td[6], 'no image assigned')]")
            .await?;
        self.page.screenshot("11-selection-confirm").await?;
        self.page
            .click("//button[normalize-space()='Reinstall 2 machines']")
            .await?;
        self.page
            .wait_for("//h1[normalize-space()='Reinstall: 1 of 2 machines done']")
            .await?;
        self.page
            .find("//tr[@class='result-failed'][td[1]/a='52:54:00:b0:00:01'][td[2]='failed']")
            .await?;
        self.page
            .find("//tr[@class='result-ok'][td[1]/a='52:54:00:b0:00:03'][td[2]='ok']")
            .await?;
        self.page.screenshot("12-selection-result").await
    }

    // ---- helpers ----

    /// The machine count the machines page reports, read in a second tab so the page
    /// under test stays as it is.
    async fn machine_count_via_page(&self) -> Checked<u64> {
        let here = self.page.client.window().await.map_err(|e| e.to_string())?;
        let tab = self
            .page
            .client
            .new_window(true)
            .await
            .map_err(|e| e.to_string())?;
        self.page
            .client
            .switch_to_window(tab.handle)
            .await
            .map_err(|e| e.to_string())?;
        self.page.open("/machines").await?;
        let heading = self.page.find("//h1/small").await?.text().await;
        let closed = self.page.client.close_window().await;
        self.page
            .client
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
}
