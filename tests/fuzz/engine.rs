//! The engine: a seeded PRNG, a havoc mutator over a corpus, outcome feedback, and a
//! child process per target so that an abort (allocation over the cap, stack
//! overflow, an input over its time bound) is caught and its input kept.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---- Memory: a counting allocator with a cap ----

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static CAP: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The system allocator, counting live bytes. Over the cap an allocation fails, so
/// Rust's allocation-error handler aborts the child ("memory allocation of N bytes
/// failed"), and the parent keeps the input.
pub struct Counting;

fn reserve(bytes: usize) -> bool {
    let now = LIVE
        .fetch_add(bytes, Ordering::Relaxed)
        .saturating_add(bytes);
    if now > CAP.load(Ordering::Relaxed) {
        LIVE.fetch_sub(bytes, Ordering::Relaxed);
        let msg = b"fuzz: an allocation would take the target over its memory cap\n";
        // SAFETY: writes a static buffer to stderr; allocates nothing.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        return false;
    }
    PEAK.fetch_max(now, Ordering::Relaxed);
    true
}

// SAFETY: every call goes to `System`; only the bookkeeping is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout, passed on.
        let ptr = unsafe { System.alloc(layout) };
        if ptr.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        ptr
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as in `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if ptr.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !reserve(new_size - old) {
            return std::ptr::null_mut();
        }
        // SAFETY: as in `dealloc`, with the caller's new size.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if new.is_null() {
            if new_size > old {
                LIVE.fetch_sub(new_size - old, Ordering::Relaxed);
            }
        } else if new_size < old {
            LIVE.fetch_sub(old - new_size, Ordering::Relaxed);
        }
        new
    }
}

// ---- Randomness ----

/// xoshiro256** seeded through splitmix64: fast, and a run is repeated by its seed.
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    pub fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    /// A length, mostly small: 1..=8 often, up to `max` rarely.
    fn len(&mut self, max: usize) -> usize {
        let cap = match self.below(8) {
            0..=4 => 8,
            5 | 6 => 64,
            _ => 4096,
        };
        1 + self.below(cap.min(max.max(1)))
    }
}

// ---- Mutation ----

const INTERESTING_8: [u8; 9] = [0, 1, 0x7f, 0x80, 0xff, b'0', b'9', b'\n', b' '];
const INTERESTING_16: [u16; 8] = [0, 1, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 512];
const INTERESTING_32: [u32; 6] = [0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 2048];

/// Havoc: 1 to 16 stacked edits, AFL's classic mix plus dictionary tokens and
/// splices from other corpus entries.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], dict: &[&[u8]], max: usize) {
    let edits = 1 << rng.below(5);
    for _ in 0..edits {
        let at = |rng: &mut Rng, data: &Vec<u8>| rng.below(data.len() + 1);
        match rng.below(14) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            2 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = INTERESTING_8[rng.below(INTERESTING_8.len())];
            }
            3 if data.len() >= 2 => {
                let i = rng.below(data.len() - 1);
                let v = INTERESTING_16[rng.below(INTERESTING_16.len())];
                let b = if rng.chance(2) {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                data[i..i + 2].copy_from_slice(&b);
            }
            4 if data.len() >= 4 => {
                let i = rng.below(data.len() - 3);
                let v = INTERESTING_32[rng.below(INTERESTING_32.len())];
                let b = if rng.chance(2) {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                data[i..i + 4].copy_from_slice(&b);
            }
            5 if !data.is_empty() => {
                let i = rng.below(data.len());
                let delta = 1 + rng.below(16) as u8;
                data[i] = if rng.chance(2) {
                    data[i].wrapping_add(delta)
                } else {
                    data[i].wrapping_sub(delta)
                };
            }
            6 if !data.is_empty() => {
                let start = rng.below(data.len());
                let n = rng.len(data.len() - start);
                data.drain(start..(start + n).min(data.len()));
            }
            7 if !data.is_empty() => {
                // Duplicate a range somewhere (repeats, nesting, long fields).
                let start = rng.below(data.len());
                let n = rng.len(data.len() - start).min(data.len() - start);
                let chunk = data[start..start + n].to_vec();
                let to = at(rng, data);
                let times = if rng.chance(8) { 1 + rng.below(32) } else { 1 };
                for _ in 0..times {
                    data.splice(to..to, chunk.iter().copied());
                }
            }
            8 => {
                let to = at(rng, data);
                let n = rng.len(64);
                let byte = rng.next() as u8;
                let fill: Vec<u8> = if rng.chance(2) {
                    vec![byte; n]
                } else {
                    (0..n).map(|_| rng.next() as u8).collect()
                };
                data.splice(to..to, fill);
            }
            9 | 10 if !dict.is_empty() => {
                let token = dict[rng.below(dict.len())];
                let to = at(rng, data);
                if rng.chance(2) || to + token.len() > data.len() {
                    data.splice(to..to, token.iter().copied());
                } else {
                    data[to..to + token.len()].copy_from_slice(token);
                }
            }
            11 | 12 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                if other.is_empty() {
                    continue;
                }
                let start = rng.below(other.len());
                let n = rng.len(other.len() - start).min(other.len() - start);
                let chunk = &other[start..start + n];
                let to = at(rng, data);
                if rng.chance(2) || to + n > data.len() {
                    data.splice(to..to, chunk.iter().copied());
                } else {
                    data[to..to + n].copy_from_slice(chunk);
                }
            }
            13 if !data.is_empty() => {
                let keep = rng.below(data.len());
                data.truncate(keep);
            }
            _ => {}
        }
    }
    data.truncate(max);
}

// ---- Outcomes ----

/// An outcome's signature: the words of its text made of letters only, up to the
/// first quote (errors quote the input, and the input may hold quotes), so that
/// "line 3" and "line 4", two addresses, two member paths or two option names are
/// one outcome. Lines that quote the input (a TOML error's `12 | text` and
/// `   |   ^`) are left out. A mutant with an outcome not seen before joins the
/// corpus: feedback by behaviour, since this build has no coverage instrumentation.
pub fn sig(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    'lines: for line in text.lines() {
        let t = line
            .trim_start()
            .trim_start_matches(|c: char| c.is_ascii_digit());
        if t.trim_start().starts_with('|') {
            continue;
        }
        for word in line.split_whitespace() {
            if word.contains(['"', '\'', '`']) {
                break 'lines;
            }
            let word = word.trim_end_matches([',', ';', ':', '.', ')']);
            if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
                word.hash(&mut h);
            }
        }
    }
    h.finish()
}

/// The signature of an error's variant alone (its `Debug` name).
pub fn kind(e: &impl std::fmt::Debug) -> u64 {
    let text = format!("{e:?}");
    let end = text.find(['(', ' ', '{']).unwrap_or(text.len());
    sig(&text[..end])
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, catching a panic without printing it: for a third-party codec used as a
/// check (dhcproto 0.15 debug-asserts on some option lengths), not for the code under
/// test.
pub fn quietly<R>(f: impl FnOnce() -> R) -> Option<R> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                default(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    QUIET.with(|q| q.set(false));
    out
}

// ---- Targets and the run ----

pub struct Target {
    pub name: &'static str,
    /// Longest input handed to `run`.
    pub max_len: usize,
    /// No one input may take longer (a debug build).
    pub per_input: Duration,
    /// Seeds made in code: real packets built with the codecs, fixtures read from the
    /// repository. Files under `fuzz/corpus/<name>/` are added to them.
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub dict: &'static [&'static [u8]],
    /// Runs one input, asserting what must hold; returns the outcome's signature.
    pub run: fn(&[u8]) -> u64,
    /// A line for the end of the run (a measurement the target keeps), or "".
    pub report: fn() -> String,
}

pub fn no_report() -> String {
    String::new()
}

/// The memory cap of a target's process (`FUZZ_MEM_MB` sets another): far above
/// what any bounded reader here allocates for the inputs given (the largest is a
/// 128 MiB decoder window).
fn mem_cap() -> usize {
    std::env::var("FUZZ_MEM_MB")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .map_or(768 << 20, |mb| mb << 20)
}
const CHILD: &str = "RACKBOOT_FUZZ_CHILD";
const SHM: &str = "RACKBOOT_FUZZ_SHM";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Seconds per target: `FUZZ_SECONDS`, else the share of a plain `cargo test`.
fn seconds() -> f64 {
    std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(crate::CI_SECONDS)
}

/// The test function of each target: in the test process, runs the target in a
/// child and judges how it ended; in the child, fuzzes.
pub fn fuzz(target: &Target) {
    if std::env::var(CHILD).as_deref() == Ok(target.name) {
        child(target);
        return;
    }
    let slot = std::env::temp_dir().join(format!(
        "rackboot-fuzz-{}-{}",
        std::process::id(),
        target.name
    ));
    let secs = seconds();
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            target.name,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD, target.name)
        .env(SHM, &slot)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the fuzz child");
    let deadline = Instant::now() + Duration::from_secs_f64(secs) + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the fuzz child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait for the killed child");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let saved = if status.success() {
        None
    } else {
        save_crash(target.name, &slot)
    };
    let _ = std::fs::remove_file(&slot);
    if !status.success() {
        match saved {
            Some(path) => panic!(
                "fuzz target {} failed ({status}); the input is in {} (scripts/fuzz --repro {} {})",
                target.name,
                path.display(),
                target.name,
                path.display()
            ),
            None => panic!(
                "fuzz target {} failed ({status}) before any input",
                target.name
            ),
        }
    }
}

/// Copies the input the child was running out of its slot, into
/// `fuzz/artifacts/<target>/crash-<hash>`.
fn save_crash(name: &str, slot: &Path) -> Option<PathBuf> {
    let bytes = std::fs::read(slot).ok()?;
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let input = bytes.get(8..8 + len)?;
    let mut h = DefaultHasher::new();
    input.hash(&mut h);
    let dir = root().join("fuzz/artifacts").join(name);
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("crash-{:016x}", h.finish()));
    std::fs::write(&path, input).ok()?;
    Some(path)
}

/// The input being run, in a file mapped shared with the parent: written before each
/// run, so it survives an abort.
struct Slot {
    ptr: *mut u8,
    cap: usize,
}

impl Slot {
    fn open(path: &Path, max_len: usize) -> Slot {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("create the input slot");
        let cap = 8 + max_len;
        file.set_len(cap as u64).expect("size the input slot");
        // SAFETY: a fresh shared mapping of a file of `cap` bytes, kept for the
        // process's life; the file descriptor may close after mmap.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert!(ptr != libc::MAP_FAILED, "map the input slot");
        Slot {
            ptr: ptr.cast(),
            cap,
        }
    }

    fn put(&self, input: &[u8]) {
        let n = input.len().min(self.cap - 8);
        // SAFETY: within the mapping; the length goes last, so the slot is whole
        // whenever the length is set.
        unsafe {
            std::ptr::copy_nonoverlapping(input.as_ptr(), self.ptr.add(8), n);
            std::ptr::copy_nonoverlapping((n as u64).to_le_bytes().as_ptr(), self.ptr, 8);
        }
    }
}

static STARTED_NS: AtomicU64 = AtomicU64::new(0);

pub fn corpus_files(name: &str) -> Vec<Vec<u8>> {
    let dir = root().join("fuzz/corpus").join(name);
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

fn child(target: &Target) {
    let slot = Slot::open(
        Path::new(&std::env::var_os(SHM).expect("slot path")),
        target.max_len,
    );
    let base = Instant::now();
    // `FUZZ_INPUT_MS` sets another bound per input.
    let limit = std::env::var("FUZZ_INPUT_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(target.per_input, Duration::from_millis);
    let name = target.name;
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let started = STARTED_NS.load(Ordering::Relaxed);
            if started != 0 {
                let now = base.elapsed().as_nanos() as u64;
                if now.saturating_sub(started) > limit.as_nanos() as u64 {
                    eprintln!("fuzz {name}: one input ran over its bound of {limit:?}");
                    // SAFETY: ends the process at once; the parent keeps the input.
                    unsafe { libc::_exit(70) };
                }
            }
        }
    });
    let run_one = |input: &[u8]| {
        slot.put(input);
        STARTED_NS.store(base.elapsed().as_nanos().max(1) as u64, Ordering::Relaxed);
        let outcome = (target.run)(input);
        STARTED_NS.store(0, Ordering::Relaxed);
        outcome
    };

    if let Some(path) = std::env::var_os("FUZZ_REPRO") {
        let input = std::fs::read(&path).expect("read the input to reproduce");
        CAP.store(mem_cap(), Ordering::Relaxed);
        let t = Instant::now();
        let outcome = run_one(&input);
        eprintln!(
            "fuzz {name}: {} ran without failing in {:.1} ms (outcome {outcome:016x}, peak memory {:.1} MiB)",
            Path::new(&path).display(),
            t.elapsed().as_secs_f64() * 1e3,
            PEAK.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        );
        return;
    }

    let mut corpus: Vec<Vec<u8>> = (target.seeds)();
    if let Some(dir) = std::env::var_os("FUZZ_DUMP_SEEDS") {
        // The seeds made in code, to look at (or to keep as files).
        std::fs::create_dir_all(&dir).expect("create the seed directory");
        for (i, seed) in corpus.iter().enumerate() {
            std::fs::write(Path::new(&dir).join(format!("seed-{i:03}")), seed).expect("write");
        }
        return;
    }
    corpus.extend(corpus_files(name));
    for seed in &mut corpus {
        seed.truncate(target.max_len);
    }
    let seeds = corpus.len();
    assert!(seeds > 0, "fuzz {name}: no seeds");
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut rng = Rng::new(seed);
    let secs = seconds();
    let deadline = Duration::from_secs_f64(secs);
    CAP.store(mem_cap(), Ordering::Relaxed);

    let mut seen = HashSet::new();
    let mut execs = 0u64;
    let mut slowest = Duration::ZERO;
    let mut slowest_input = Vec::new();
    let mut timed = |input: &[u8], slowest: &mut Duration| {
        let t = Instant::now();
        let outcome = run_one(input);
        if t.elapsed() > *slowest {
            *slowest = t.elapsed();
            slowest_input = input.to_vec();
        }
        outcome
    };
    for input in corpus.clone() {
        seen.insert(timed(&input, &mut slowest));
        execs += 1;
    }
    let mut input = Vec::new();
    let mut corpus_bytes: usize = corpus.iter().map(Vec::len).sum();
    while base.elapsed() < deadline {
        let parent = &corpus[rng.below(corpus.len())];
        input.clear();
        input.extend_from_slice(parent);
        mutate(&mut rng, &mut input, &corpus, target.dict, target.max_len);
        let outcome = timed(&input, &mut slowest);
        execs += 1;
        if seen.insert(outcome) && corpus.len() < 20_000 && corpus_bytes < 64 << 20 {
            corpus_bytes += input.len();
            corpus.push(input.clone());
        }
    }
    let took = base.elapsed().as_secs_f64();
    // The slowest input, to look at: `scripts/fuzz --repro` times one input.
    let dir = root().join("fuzz/artifacts").join(name);
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("slowest"), &slowest_input);
    }
    eprintln!(
        "fuzz {name}: {execs} inputs in {took:.1} s ({:.0}/s), seed {seed}, {seeds} seeds, \
         {} outcomes, corpus {}, slowest input {:.1} ms, peak memory {:.1} MiB",
        execs as f64 / took,
        seen.len(),
        corpus.len(),
        slowest.as_secs_f64() * 1e3,
        PEAK.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
    );
    let report = (target.report)();
    if !report.is_empty() {
        eprintln!("fuzz {name}: {report}");
    }
}
