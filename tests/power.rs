//! Power control against real peers: `ipmi_sim` (OpenIPMI's BMC simulator) driving a
//! QEMU VM through QEMU's external-BMC device, so `rackboot machine reinstall` and the
//! panel's Reinstall button (clicked in headless Chromium) power a real VM that
//! PXE-boots the installer; BMC failures (wrong password, unreachable, silent), alone
//! and across a rack; and Wake-on-LAN captured on the boot network. Everything runs
//! inside network namespaces the tests create.

use harness::browser::{Checked, Driver, Page, STEP, connect, screenshot_dir};
use harness::{BootNet, Netns, Proc, boot_fixtures, should_run, tail, wait_until};
use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

const MAC: &str = "52:54:00:1b:3c:01";
const IPMI_PORT: &str = "9623";
/// One install under TCG takes 15 to 40 s; a power-cycle adds a firmware start.
const INSTALL_DEADLINE: Duration = Duration::from_secs(300);
/// The panel user of the browser part.
const PANEL_PASSWORD: &str = "correct horse battery";

fn kinds(events: &str) -> Vec<String> {
    events
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3).map(str::to_string))
        .collect()
}

fn position(kinds: &[String], kind: &str, from: usize) -> Option<usize> {
    kinds
        .get(from..)?
        .iter()
        .position(|k| k == kind)
        .map(|i| i + from)
}

/// Runs the rackboot CLI inside `ns` (where the BMC's address is), returning its
/// output whatever the exit status.
fn cli_in(ns: &Netns, config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = ns.command(RACKBOOT);
    cmd.arg("--config").arg(config).args(args);
    match stdin {
        None => cmd
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run rackboot"),
        Some(text) => {
            use std::io::Write;
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn rackboot");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write password");
            child.wait_with_output().expect("rackboot output")
        }
    }
}

/// `rackboot power set MAC ipmi` for the BMC at `host:port`, user `admin`, the
/// password given on standard input (as an operator pipes it in).
fn set_ipmi(
    ns: &Netns,
    config: &Path,
    mac: &str,
    (host, port): (&str, &str),
    password: &str,
) -> Output {
    cli_in(
        ns,
        config,
        &[
            "power", "set", mac, "ipmi", "--host", host, "--port", port, "--user", "admin",
        ],
        Some(&format!("{password}\n")),
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The ipmi_sim configuration (the shape checked in docs/pxe-facts): IPMI over LAN on
/// loopback inside the namespace, and the VM wired to it through a socket chardev.
/// `startcmd` runs when the BMC powers the chassis on; no `-no-reboot`, so a reset
/// or a power-cycle restarts the VM instead of ending it.
fn write_ipmi_sim_config(dir: &Path, qemu: Option<&str>) {
    fs::write(
        dir.join("sim.emu"),
        "mc_setbmc 0x20\n\
         mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
         mc_enable 0x20\n",
    )
    .expect("write emu");
    let startcmd = qemu
        .map(|q| format!("  startcmd \"{q}\"\n  startnow false\n"))
        .unwrap_or_default();
    fs::write(
        dir.join("lan.conf"),
        format!(
            "name \"bmc1\"\n\
             set_working_mc 0x20\n\
             \x20 startlan 1\n\
             \x20   addr 127.0.0.1 {IPMI_PORT}\n\
             \x20   priv_limit admin\n\
             \x20   allowed_auths_admin none md2 md5 straight\n\
             \x20   guid a123456789abcdefa123456789abcdef\n\
             \x20 endlan\n\
             \x20 serial 15 127.0.0.1 9002 codec VM\n\
             {startcmd}\
             \x20 user 2 true \"admin\" \"secret\" admin 10 none md2 md5 straight\n"
        ),
    )
    .expect("write lan.conf");
    fs::create_dir_all(dir.join("sim-state")).expect("state dir");
}

/// Starts ipmi_sim in `ns` and waits until it answers IPMI over LAN.
fn start_ipmi_sim(ns: &Netns, dir: &Path) -> Proc {
    let mut cmd = ns.command("ipmi_sim");
    cmd.arg("-c")
        .arg(dir.join("lan.conf"))
        .arg("-f")
        .arg(dir.join("sim.emu"))
        .arg("-s")
        .arg(dir.join("sim-state"))
        .arg("-n");
    let mut sim = Proc::spawn(cmd, &dir.join("ipmi_sim.log"));
    let ready = wait_until(Duration::from_secs(20), || {
        if sim.exited() {
            return true;
        }
        ns.command("ipmitool")
            .args(["-I", "lanplus", "-H", "127.0.0.1", "-p", IPMI_PORT])
            .args(["-U", "admin", "-E", "-C", "3", "chassis", "power", "status"])
            .env("IPMI_PASSWORD", "secret")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(
        ready && !sim.exited(),
        "ipmi_sim did not answer:\n{}",
        sim.log_text()
    );
    sim
}

fn append_config(config: &Path, extra: &str) {
    let mut text = fs::read_to_string(config).expect("read config");
    text.push_str(extra);
    fs::write(config, text).expect("write config");
}

/// The whole loop from one command: a machine in `local` with an IPMI controller;
/// `rackboot machine reinstall` powers the (off) VM through ipmi_sim, the VM
/// PXE-boots the installer, calls its done-URL and is `local` again. Then the same
/// with the VM running: the reinstall power-cycles it. Then from the panel in
/// headless Chromium: the operator corrects the BMC password in the controller form,
/// reads the power state and clicks Reinstall; the page shows the machine back in
/// `local` with its install done.
#[test]
fn reinstall_powers_a_vm_through_ipmi_sim_and_it_installs() {
    if !should_run(
        "power_ipmi_reinstall",
        &[
            "ip",
            "qemu-system-x86_64",
            "cpio",
            "busybox",
            "apt-get",
            "ipmitool",
            "ipmi_sim",
            "chromium",
            "chromedriver",
        ],
    ) {
        return;
    }
    let fixtures = boot_fixtures();
    let mut net = BootNet::new(RACKBOOT, "ipmi", &["tap0"]);
    // No background poll during the test: every BMC call is one the test made.
    append_config(
        &net.config,
        "[power]\npoll_interval_secs = 0\ntimeout_secs = 20\n",
    );
    let dir = net.dir.path().to_path_buf();
    let serial = dir.join("vm.serial.log");
    let qemu = format!(
        "qemu-system-x86_64 -accel tcg -m 512 -display none -monitor none \
         -serial file:{serial} -boot n \
         -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
         -device e1000,netdev=n0,mac={MAC} \
         -chardev socket,id=ipmi0,host=127.0.0.1,port=9002,reconnect=10 \
         -device ipmi-bmc-extern,chardev=ipmi0,id=bmc0 -device isa-ipmi-bt,bmc=bmc0",
        serial = serial.display()
    );
    write_ipmi_sim_config(&dir, Some(&qemu));
    let _sim = start_ipmi_sim(&net.ns, &dir);

    let kernel = fixtures.join("vmlinuz");
    let installer = fixtures.join("installer.img");
    net.cli(&[
        "image",
        "add",
        "installer",
        "--kernel",
        kernel.to_str().expect("utf8 path"),
        "--initrd",
        installer.to_str().expect("utf8 path"),
        "--cmdline",
        "console=ttyS0 panic=-1",
    ]);
    net.cli(&[
        "machine",
        "add",
        MAC,
        "--hostname",
        "bmc-vm",
        "--image",
        "installer",
    ]);
    net.cli(&["machine", "set-mode", MAC, "local"]);
    let set = set_ipmi(
        &net.ns,
        &net.config,
        MAC,
        ("127.0.0.1", IPMI_PORT),
        "secret",
    );
    assert!(set.status.success(), "{}", text(&set));
    assert!(!text(&set).contains("secret"), "{}", text(&set));
    let status = cli_in(&net.ns, &net.config, &["power", "status", MAC], None);
    assert!(
        status.status.success() && text(&status).contains("ok off"),
        "{}",
        text(&status)
    );
    net.start();

    // 1. The VM is off: one command powers it on into the installer.
    let reinstall = cli_in(&net.ns, &net.config, &["machine", "reinstall", MAC], None);
    let said = text(&reinstall);
    assert!(reinstall.status.success(), "{said}");
    assert!(said.contains("mode=install"), "{said}");
    assert!(
        said.contains("pxe") && said.contains("warning"),
        "bootdev refusal is a warning: {said}"
    );
    assert!(
        said.contains("power is off") && said.contains("powered on"),
        "{said}"
    );
    let installed = |n: usize| {
        wait_until(INSTALL_DEADLINE, || {
            kinds(&net.cli(&["event", "list", "--mac", MAC]))
                .iter()
                .filter(|k| *k == "install.done")
                .count()
                >= n
        })
    };
    assert!(
        installed(1),
        "the VM did not install\n--- serial ---\n{}\n--- server ---\n{}",
        tail(&harness::read_lossy(&serial), 30),
        tail(&net.server_log(), 40)
    );
    let row = net.cli(&["machine", "list"]);
    assert!(
        row.lines()
            .any(|l| l.starts_with(MAC) && l.contains(" local ")),
        "{row}"
    );

    // 2. The VM is running (powered on, it boots the local-boot script and stays
    // up): the reinstall power-cycles it.
    // The installer powered the VM off when it finished.
    let off = wait_until(Duration::from_secs(60), || {
        text(&cli_in(
            &net.ns,
            &net.config,
            &["power", "status", MAC],
            None,
        ))
        .contains("ok off")
    });
    assert!(off, "the VM stayed on after its install");
    let on = cli_in(&net.ns, &net.config, &["power", "on", MAC], None);
    assert!(on.status.success(), "{}", text(&on));
    let local_boot = wait_until(INSTALL_DEADLINE, || {
        net.cli(&["event", "list", "--mac", MAC])
            .lines()
            .any(|l| l.contains("http.script") && l.contains("template=local.ipxe"))
    });
    assert!(local_boot, "{}", tail(&net.server_log(), 40));
    let again = cli_in(&net.ns, &net.config, &["machine", "reinstall", MAC], None);
    let said = text(&again);
    assert!(again.status.success(), "{said}");
    assert!(
        said.contains("power is on") && said.contains("power-cycled"),
        "{said}"
    );
    assert!(
        installed(2),
        "the running VM was not reinstalled\n--- serial ---\n{}\n--- server ---\n{}",
        tail(&harness::read_lossy(&serial), 30),
        tail(&net.server_log(), 40)
    );

    // The story, in order, each power step by the CLI user.
    let events = net.cli(&["event", "list", "--mac", MAC]);
    let k = kinds(&events);
    let set_install = position(&k, "mode.set", 0)
        .and_then(|local| position(&k, "mode.set", local + 1))
        .expect(&events);
    let pxe = position(&k, "power.warning", set_install).expect(&events);
    let status = position(&k, "power.status", pxe).expect(&events);
    let on = position(&k, "power.on", status).expect(&events);
    let ack = position(&k, "dhcp.ack", on).expect(&events);
    let script = position(&k, "http.script", ack).expect(&events);
    let done = position(&k, "install.done", script).expect(&events);
    let second = position(&k, "mode.set", done).expect(&events);
    let cycle = position(&k, "power.cycle", second).expect(&events);
    position(&k, "install.done", cycle).expect(&events);
    assert!(
        events
            .lines()
            .nth(pxe)
            .is_some_and(|l| l.contains("bootdev pxe")),
        "{events}"
    );
    let audit = net.cli(&["event", "list", "--mac", MAC]);
    assert!(!audit.contains("secret"), "no password in events: {audit}");

    // 3. The same from the panel, in a real browser. The VM powered itself off after
    // its second install. The CLI leaves a wrong password: the operator's form must
    // really store the new one, or the reinstall fails at the BMC.
    let stale = set_ipmi(&net.ns, &net.config, MAC, ("127.0.0.1", IPMI_PORT), "stale");
    assert!(stale.status.success(), "{}", text(&stale));
    let user = cli_in(
        &net.ns,
        &net.config,
        &["user", "add", "admin", "--role", "admin"],
        Some(&format!("{PANEL_PASSWORD}\n")),
    );
    assert!(user.status.success(), "{}", text(&user));
    let driver = Driver::start(Some(&net.ns), &dir.join("chromedriver.log"));
    let shots = screenshot_dir("power-screenshots");
    let (driver_addr, profile) = (driver.addr, dir.join("chromium-profile"));
    let outcome = harness::in_netns(&net.ns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async {
            let client = connect(driver_addr, &profile).await;
            let page = Page {
                client: &client,
                base: "http://192.0.2.1:8080",
                shots: &shots,
            };
            let result = tokio::time::timeout(
                INSTALL_DEADLINE + Duration::from_secs(60),
                reinstall_from_the_panel(&page),
            )
            .await
            .unwrap_or_else(|_| Err("the panel scenario did not end in time".into()));
            let _ = tokio::time::timeout(STEP, client.close()).await;
            result
        })
    });
    if let Err(failure) = outcome {
        panic!(
            "{failure}\n--- serial ---\n{}\n--- server ---\n{}\n--- chromedriver ---\n{}",
            tail(&harness::read_lossy(&serial), 30),
            tail(&net.server_log(), 40),
            tail(&driver.log_text(), 20)
        );
    }
    // The events say the operator did it, through the BMC, and the VM installed.
    let events = net.cli(&["event", "list", "--mac", MAC]);
    let k = kinds(&events);
    let by_admin = |i: usize| {
        events
            .lines()
            .nth(i)
            .is_some_and(|l| l.contains("user:admin"))
    };
    let set = position(&k, "power.controller", cycle).expect(&events);
    let controller = position(&k, "power.controller", set + 1).expect(&events);
    assert!(by_admin(controller), "{events}");
    let status = position(&k, "power.status", controller).expect(&events);
    let mode = position(&k, "mode.set", status).expect(&events);
    let on = position(&k, "power.on", mode).expect(&events);
    let done = position(&k, "install.done", on).expect(&events);
    assert!(
        by_admin(status) && by_admin(mode) && by_admin(on),
        "{events}"
    );
    position(&k, "dhcp.ack", on)
        .filter(|ack| *ack < done)
        .expect(&events);
    assert!(
        !events.contains("secret"),
        "no password in events: {events}"
    );
}

/// The operator's part of the loop: fix the controller's password, read the state,
/// click Reinstall, and watch the machine page until the install is done.
async fn reinstall_from_the_panel(page: &Page<'_>) -> Checked<()> {
    page.log_in("admin", PANEL_PASSWORD).await?;
    page.open(&format!("/machines/{MAC}")).await?;
    page.find(&format!(
        "//table[@class='kv']//tr[th='Power']/td[starts-with(normalize-space(), \
         'ipmi 127.0.0.1:{IPMI_PORT} user=admin')]"
    ))
    .await?;
    page.select("//select[@name='kind']", "ipmi").await?;
    page.type_into("//input[@name='password']", "secret")
        .await?;
    page.click("//button[normalize-space()='Save power controller']")
        .await?;
    page.wait_for(&format!(
        "//p[@class='notice'][normalize-space()='Power controller set: \
         ipmi 127.0.0.1:{IPMI_PORT} user=admin cipher=3.']"
    ))
    .await?;
    // The password is never sent back, not even into the form it was typed in.
    if page.source().await.contains("secret") {
        return Err(page.failure("the page carries the BMC password").await);
    }
    page.click("//button[@name='action'][@value='status']")
        .await?;
    page.wait_for("//p[@class='notice'][normalize-space()='Power status: off.']")
        .await?;
    page.find("//table[@class='kv']//tr[th='Power state']//span[normalize-space()='off']")
        .await?;
    page.screenshot("01-machine-off").await?;

    page.click("//button[@name='mode'][@value='install'][normalize-space()='Reinstall']")
        .await?;
    let notice = page
        .wait_for("//p[@class='notice'][starts-with(normalize-space(), 'Reinstall started through the BMC')]")
        .await?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    for words in ["mode set to install", "power is off", "on ok: powered on"] {
        if !notice.contains(words) {
            return Err(page
                .failure(&format!("the notice lacks {words:?}: {notice}"))
                .await);
        }
    }
    page.find("//span[contains(@class,'mode big')][normalize-space()='install']")
        .await?;
    page.screenshot("02-reinstall-started").await?;

    // The operator watches the machine page: it turns back to `local` with the
    // install's done-URL call in its events.
    let started = Instant::now();
    let installed = "//span[contains(@class,'mode big')][normalize-space()='local']";
    let done = "//table[contains(@class,'events')]//tr[td[3]='install.done']";
    loop {
        page.open(&format!("/machines/{MAC}")).await?;
        let found = |xpath: &'static str| async move {
            page.client
                .find(fantoccini::Locator::XPath(xpath))
                .await
                .is_ok()
        };
        if found(installed).await && found(done).await {
            break;
        }
        if started.elapsed() > INSTALL_DEADLINE {
            return Err(page
                .failure("the machine page never showed the install done")
                .await);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    page.screenshot("03-installed").await
}

/// A wrong password, an unreachable BMC and one that never answers each end in a
/// clear error within the configured bound; the mode change is kept and said so.
#[test]
fn bmc_failures_are_clear_bounded_and_keep_the_mode() {
    if !should_run("power_ipmi_failures", &["ip", "ipmitool", "ipmi_sim"]) {
        return;
    }
    let ns = Netns::new("ipmierr");
    let dir = tempfile::tempdir().expect("tempdir");
    write_ipmi_sim_config(dir.path(), None);
    let _sim = start_ipmi_sim(&ns, dir.path());
    let config = dir.path().join("rackboot.toml");
    fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[power]\npoll_interval_secs = 0\ntimeout_secs = 2\nretries = 1\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let cli = |args: &[&str], stdin: Option<&str>| cli_in(&ns, &config, args, stdin);
    let ok = |out: Output| {
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
    };
    ok(cli(&["machine", "add", MAC, "--hostname", "err-vm"], None));
    // Rescue needs no image of the machine's own, only a configured rescue image;
    // reinstall needs an image: use a fake one.
    let kernel = dir.path().join("k");
    fs::write(&kernel, b"k").expect("kernel");
    let k = kernel.to_str().expect("utf8");
    ok(cli(
        &["image", "add", "img", "--kernel", k, "--initrd", k],
        None,
    ));
    ok(cli(&["machine", "set-image", MAC, "img"], None));

    // (host, port, password, expected words, bound)
    // One attempt is bounded by timeout_secs (2 s), with one retry when transient.
    let cases = [
        (
            "127.0.0.1",
            IPMI_PORT,
            "wrong",
            "refused the credentials",
            2.0,
        ),
        ("198.18.0.99", "623", "secret", "did not answer", 8.0),
        ("127.0.0.1", "9999", "secret", "within 2 s", 8.0),
    ];
    for (host, port, password, words, bound) in cases {
        ok(cli(&["machine", "set-mode", MAC, "local"], None));
        ok(set_ipmi(&ns, &config, MAC, (host, port), password));
        let started = Instant::now();
        let out = cli(&["machine", "reinstall", MAC], None);
        let took = started.elapsed().as_secs_f64();
        let said = text(&out);
        assert!(!out.status.success(), "{host}:{port} must fail: {said}");
        assert!(took < bound, "{host}:{port} took {took:.1} s: {said}");
        assert!(said.contains(words), "{host}:{port}: {said}");
        assert!(
            said.contains("mode install is set, but power") && said.contains("mode=install"),
            "the kept mode change is reported: {said}"
        );
        assert!(
            !said.contains("secret") && !said.contains("wrong\n"),
            "{said}"
        );
        let events = ok(cli(&["event", "list", "--mac", MAC], None));
        let last = events.lines().last().unwrap_or_default();
        assert!(last.contains("power.failed"), "{events}");
    }
    let listed = ok(cli(&["machine", "list"], None));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(MAC) && l.contains(" install ")),
        "{listed}"
    );

    // A rack at once: one BMC answers, one refuses the password, two never answer,
    // one machine has no controller. Every machine gets its line, the summary names
    // each failure, the exit status says so, and the silent BMCs are waited on side
    // by side (one alone takes two 2 s attempts; in turn they would take over 8 s).
    let rack = [
        ("52:54:00:1b:3c:11", Some((IPMI_PORT, "secret"))),
        ("52:54:00:1b:3c:12", Some((IPMI_PORT, "wrong"))),
        ("52:54:00:1b:3c:13", Some(("9998", "secret"))),
        ("52:54:00:1b:3c:14", Some(("9999", "secret"))),
        ("52:54:00:1b:3c:15", None),
    ];
    for (mac, bmc) in rack {
        ok(cli(
            &["machine", "add", mac, "--rack", "R9", "--image", "img"],
            None,
        ));
        ok(cli(&["machine", "set-mode", mac, "local"], None));
        if let Some((port, password)) = bmc {
            ok(set_ipmi(&ns, &config, mac, ("127.0.0.1", port), password));
        }
    }
    let started = Instant::now();
    let out = cli(&["power", "status", "--rack", "R9"], None);
    let took = started.elapsed().as_secs_f64();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(took < 8.0, "the rack took {took:.1} s: {said}");
    let line = |mac: &str| {
        said.lines()
            .find(|l| l.starts_with(mac))
            .unwrap_or_else(|| panic!("no line for {mac}: {said}"))
            .to_string()
    };
    assert!(line(rack[0].0).contains("status ok off"), "{said}");
    assert!(
        line(rack[1].0).contains("FAILED") && line(rack[1].0).contains("credentials"),
        "{said}"
    );
    assert!(
        line(rack[2].0).contains("FAILED") && line(rack[2].0).contains("within 2 s"),
        "{said}"
    );
    assert!(line(rack[3].0).contains("FAILED"), "{said}");
    assert!(
        line(rack[4].0).contains("FAILED") && line(rack[4].0).contains("no power controller"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "1 of 5 machines: power status done; failed: {} {} {} {}",
            rack[1].0, rack[2].0, rack[3].0, rack[4].0
        )),
        "{said}"
    );
    assert!(
        !said.contains("secret") && !said.contains("wrong"),
        "{said}"
    );

    // Reinstalling the rack: every machine is set to install whatever its BMC does;
    // the one without a controller needs none, the BMC failures are named.
    let started = Instant::now();
    let out = cli(&["machine", "reinstall", "--rack", "R9"], None);
    let took = started.elapsed().as_secs_f64();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(took < 10.0, "the rack took {took:.1} s: {said}");
    assert!(
        said.contains(&format!(
            "failed: {} {} {}",
            rack[1].0, rack[2].0, rack[3].0
        )),
        "{said}"
    );
    assert!(said.contains("install failed for"), "{said}");
    let listed = ok(cli(&["machine", "list"], None));
    for (mac, _) in rack {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(mac) && l.contains(" install ")),
            "{mac} is not in install: {listed}"
        );
    }
}

/// `rackboot power on` for a Wake-on-LAN machine broadcasts the magic packet out of
/// the DHCP interface; tcpdump on that interface catches it.
#[test]
fn wake_on_lan_sends_the_magic_packet_on_the_boot_network() {
    if !should_run("power_wol", &["ip", "tcpdump"]) {
        return;
    }
    let net = BootNet::new(RACKBOOT, "wol", &["tap0"]);
    net.cli(&["machine", "add", MAC, "--hostname", "wol-vm"]);
    net.cli(&["power", "set", MAC, "wol"]);
    let pcap = net.dir.path().join("wol.pcap");
    let mut cmd = net.ns.command("tcpdump");
    cmd.args(["-i", "br0", "-U", "-c", "1", "-w"])
        .arg(&pcap)
        .args(["udp", "and", "dst", "port", "9"]);
    let mut dump = Proc::spawn(cmd, &net.dir.path().join("tcpdump.log"));
    let listening = wait_until(Duration::from_secs(20), || {
        dump.log_text().contains("listening on") || dump.exited()
    });
    assert!(listening && !dump.exited(), "{}", dump.log_text());
    let out = cli_in(&net.ns, &net.config, &["power", "on", MAC], None);
    assert!(out.status.success(), "{}", text(&out));
    // Off and cycle need a BMC: refused with a reason, not pretended.
    let off = cli_in(&net.ns, &net.config, &["power", "off", MAC], None);
    assert!(!off.status.success());
    assert!(text(&off).contains("can only power on"), "{}", text(&off));
    let captured = wait_until(Duration::from_secs(20), || dump.exited());
    assert!(captured, "no packet captured: {}", dump.log_text());
    let bytes = fs::read(&pcap).expect("pcap");
    let mut magic = vec![0xffu8; 6];
    for _ in 0..16 {
        magic.extend_from_slice(&[0x52, 0x54, 0x00, 0x1b, 0x3c, 0x01]);
    }
    assert!(
        bytes.windows(magic.len()).any(|w| w == magic.as_slice()),
        "the capture holds no magic packet for {MAC} ({} bytes)",
        bytes.len()
    );
    // Sent as a broadcast: the destination MAC of the frame is ff:ff:ff:ff:ff:ff
    // (the pcap record header is 16 bytes after the 24-byte file header).
    assert_eq!(bytes.get(40..46), Some(&[0xffu8; 6][..]));
    let events = net.cli(&["event", "list", "--mac", MAC]);
    assert!(events.contains("power.on"), "{events}");
}
