//! Boot files over HTTP: a machine's kernel and initrd with HEAD, Range, ETag and
//! If-None-Match, and a thousand downloads at once from a server started with a
//! soft open-file limit of 1024, streamed (memory far below what whole files take).

use harness::{FILES_SERVER_IP, FileNet, peak_rss_kib, should_run, tail, test_bytes};
use std::io::Write;
use std::time::{Duration, Instant};

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

const MAC: &str = "52:54:00:aa:bb:02";
const INITRD_LEN: usize = 2 << 20;

fn url(file: &str) -> String {
    format!(
        "http://{FILES_SERVER_IP}:8080/boot/{}/{file}",
        MAC.replace(':', "-")
    )
}

fn serve(tag: &str, soft_nofile: Option<u32>) -> FileNet {
    let mut net = FileNet::new(RACKBOOT, tag);
    let kernel = net.put("src/kernel", &test_bytes(300_000, 21));
    let initrd = net.put("src/initrd", &test_bytes(INITRD_LEN, 22));
    net.cli(&[
        "image",
        "add",
        "img",
        "--kernel",
        kernel.to_str().expect("utf8"),
        "--initrd",
        initrd.to_str().expect("utf8"),
    ]);
    net.cli(&["machine", "add", MAC, "--image", "img"]);
    match soft_nofile {
        Some(limit) => net.start_with_soft_nofile(limit),
        None => net.start(),
    }
    net
}

/// `curl` in the client namespace: (status line and headers, body).
fn curl(net: &FileNet, args: &[&str]) -> (String, Vec<u8>) {
    let headers = net.path("out/headers");
    let body = net.path("out/body");
    let _ = std::fs::remove_file(&body);
    let output = net
        .client("curl")
        .args(["-sS", "--max-time", "60", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(args)
        .output()
        .expect("curl");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        std::fs::read_to_string(&headers)
            .unwrap_or_default()
            .to_ascii_lowercase(),
        std::fs::read(&body).unwrap_or_default(),
    )
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .map(str::trim)
}

#[test]
fn kernel_and_initrd_with_head_range_etag_and_if_none_match() {
    if !should_run("tftp_http_files", &["ip", "curl"]) {
        return;
    }
    let mut net = serve("hfiles", None);
    let initrd = test_bytes(INITRD_LEN, 22);

    let (headers, body) = curl(&net, &[&url("initrd")]);
    assert!(headers.starts_with("http/1.1 200"), "{headers}");
    assert_eq!(body, initrd);
    let etag = header(&headers, "etag").expect("ETag").to_string();
    assert!(etag.starts_with('"'), "a strong ETag: {etag}");
    assert_eq!(header(&headers, "accept-ranges"), Some("bytes"));

    // HEAD: the headers of a GET, no body.
    let (headers, body) = curl(&net, &["-I", &url("initrd")]);
    assert!(headers.starts_with("http/1.1 200"), "{headers}");
    assert_eq!(
        header(&headers, "content-length"),
        Some(INITRD_LEN.to_string().as_str())
    );
    assert_eq!(header(&headers, "etag"), Some(etag.as_str()));
    // curl -I writes the headers where the body would go: no file bytes.
    assert!(body.len() < 1024, "HEAD sent {} bytes", body.len());

    // Ranges: a middle, a suffix, an open end, and one past the end.
    let (headers, body) = curl(&net, &["-r", "100-199", &url("initrd")]);
    assert!(headers.starts_with("http/1.1 206"), "{headers}");
    assert_eq!(body, &initrd[100..200]);
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes 100-199/{INITRD_LEN}").as_str())
    );
    let (_, body) = curl(&net, &["-r", "-100", &url("initrd")]);
    assert_eq!(body, &initrd[INITRD_LEN - 100..]);
    let (_, body) = curl(&net, &["-r", "2000000-", &url("initrd")]);
    assert_eq!(body, &initrd[2_000_000..]);
    let (headers, _) = curl(&net, &["-r", "99999999-", &url("initrd")]);
    assert!(headers.starts_with("http/1.1 416"), "{headers}");

    // If-None-Match: the current ETag means "not modified", another does not.
    let (headers, body) = curl(
        &net,
        &["-H", &format!("If-None-Match: {etag}"), &url("initrd")],
    );
    assert!(headers.starts_with("http/1.1 304"), "{headers}");
    assert!(body.is_empty());
    let (headers, body) = curl(&net, &["-H", "If-None-Match: \"other\"", &url("initrd")]);
    assert!(headers.starts_with("http/1.1 200"), "{headers}");
    assert_eq!(body, initrd);

    let (headers, body) = curl(&net, &[&url("kernel")]);
    assert!(headers.starts_with("http/1.1 200"), "{headers}");
    assert_eq!(body, test_bytes(300_000, 21));
    net.assert_server_healthy();
}

#[test]
fn a_thousand_concurrent_downloads_hold() {
    if !should_run("tftp_http_files", &["ip", "curl"]) {
        return;
    }
    // 1024 descriptors would not hold 1000 sockets and 1000 open files: rackboot
    // must raise its own limit.
    let mut net = serve("hmany", Some(1024));
    assert!(
        net.server_log().contains("open-file limit raised"),
        "{}",
        tail(&net.server_log(), 10)
    );
    const CLIENTS: usize = 4;
    const EACH: usize = 250;
    let mut config = std::fs::File::create(net.path("out/urls")).expect("config");
    for _ in 0..EACH {
        writeln!(
            config,
            "url = \"{}\"\noutput = \"/dev/null\"",
            url("initrd")
        )
        .expect("write");
    }
    drop(config);
    let script = format!(
        "for i in $(seq 1 {CLIENTS}); do curl -s --no-progress-meter --parallel \
         --parallel-immediate --parallel-max {EACH} --max-time 300 -K {urls} \
         -w '%{{http_code}} %{{size_download}}\\n' > {out}/result$i 2>&1 & done; wait",
        urls = net.path("out/urls").display(),
        out = net.path("out").display()
    );
    let started = Instant::now();
    let status = net
        .client("sh")
        .arg("-c")
        .arg(&script)
        .status()
        .expect("clients");
    assert!(status.success());
    let elapsed = started.elapsed();
    let mut results = String::new();
    for i in 1..=CLIENTS {
        results.push_str(
            &std::fs::read_to_string(net.path(&format!("out/result{i}"))).unwrap_or_default(),
        );
    }
    let complete = results
        .lines()
        .filter(|line| *line == format!("200 {INITRD_LEN}"))
        .count();
    assert_eq!(
        complete,
        CLIENTS * EACH,
        "every download complete:\n{}\n{}",
        tail(&results, 20),
        tail(&net.server_log(), 20)
    );
    net.assert_server_healthy();
    // Streamed: the 1000 downloads together are 2 GiB; the server holds a small
    // part of one file per connection at a time.
    let peak = peak_rss_kib(net.server_pid()).expect("VmHWM");
    assert!(peak < 400 * 1024, "peak RSS {peak} KiB");
    println!(
        "{} downloads of {INITRD_LEN} bytes in {elapsed:?}, server peak RSS {peak} KiB",
        CLIENTS * EACH
    );
    assert!(elapsed < Duration::from_secs(300));
}
