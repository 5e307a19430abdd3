//! Fuzzing, on the stable toolchain, inside `cargo test` (issue 17).
//!
//! **Why this engine.** cargo-fuzz (libFuzzer) needs a nightly compiler, which this
//! project's machines and CI do not have and cannot fetch. cargo-afl works on stable
//! but needs a second, instrumented build of the whole crate (`cargo afl build`) and
//! an AFL++ runtime compiled at install, and runs outside the test harness; bolero's
//! stable engine under `cargo test` is random generation without coverage too,
//! behind several more crates. So the harness is our own, in this test binary, with
//! no dependency added:
//! a seeded PRNG (xoshiro256**), AFL-style havoc mutation (bit flips, interesting
//! values, insertions, deletions, duplicated ranges, dictionary tokens, splices)
//! of a corpus of real inputs (packets built with the codecs, the example config, a
//! small workbook, the catalog fixtures read in place), and feedback by outcome: a
//! mutant whose result (an error kind, a decision) has not been seen joins the
//! corpus. No coverage guidance, then: structure-aware inputs (framed packet
//! sequences for the policy step, zip parts for XLSX, mode bytes for the catalog)
//! carry mutations past the outer layers instead. It reuses the one test build.
//!
//! Each target runs in a child process (this binary, re-run with one test), so an
//! abort is caught with its input: a panic (a failed assertion), an input over its
//! time bound (a watchdog thread), an allocation that takes the process over its
//! memory cap (a counting global allocator: the allocation fails and Rust aborts),
//! or a stack overflow. The input is saved under `fuzz/artifacts/<target>/`.
//!
//! Time: `FUZZ_SECONDS` per target; in a plain `cargo test` (scripts/test, CI),
//! `CI_SECONDS` each, 13 targets two at a time on two cores: under 2 minutes of
//! wall time, 4 of CPU. `scripts/fuzz` runs them longer, and reproduces a saved
//! input (`scripts/fuzz --repro TARGET FILE`). `FUZZ_SEED` repeats a run.

mod catalog;
mod dhcp;
mod engine;
mod text;
mod tftp;

use engine::{Target, fuzz, no_report};
use std::time::Duration;

#[global_allocator]
static ALLOC: engine::Counting = engine::Counting;

/// Seconds per target in a plain `cargo test`: 13 targets within 4 CPU minutes.
pub const CI_SECONDS: f64 = 18.0;

/// Time bounds per input, for a debug build on a loaded two-core machine: far above
/// what any input takes (the slowest seen are tens of milliseconds), so only a hang
/// or a blow-up crosses them.
const LIGHT: Duration = Duration::from_secs(2);
const HEAVY: Duration = Duration::from_secs(10);

#[test]
fn dhcp_wire() {
    fuzz(&Target {
        name: "dhcp_wire",
        max_len: 2048,
        per_input: LIGHT,
        seeds: dhcp::requests,
        dict: dhcp::WIRE_DICT,
        run: dhcp::wire,
        report: no_report,
    });
}

#[test]
fn dhcp_policy() {
    fuzz(&Target {
        name: "dhcp_policy",
        max_len: 16 << 10,
        per_input: LIGHT,
        seeds: dhcp::policy_seeds,
        dict: dhcp::POLICY_DICT,
        run: dhcp::policy,
        report: dhcp::report,
    });
}

#[test]
fn tftp_request() {
    fuzz(&Target {
        name: "tftp_request",
        max_len: 2048,
        per_input: LIGHT,
        seeds: Vec::new,
        dict: tftp::DICT,
        run: tftp::tftp,
        report: no_report,
    });
}

#[test]
fn mac_parse() {
    fuzz(&Target {
        name: "mac_parse",
        max_len: 256,
        per_input: LIGHT,
        seeds: Vec::new,
        dict: text::MAC_DICT,
        run: text::mac,
        report: no_report,
    });
}

#[test]
fn bulk_csv() {
    fuzz(&Target {
        name: "bulk_csv",
        max_len: 64 << 10,
        per_input: HEAVY,
        seeds: Vec::new,
        dict: text::CSV_DICT,
        run: text::csv,
        report: no_report,
    });
}

#[test]
fn bulk_xlsx() {
    fuzz(&Target {
        name: "bulk_xlsx",
        max_len: 64 << 10,
        per_input: HEAVY,
        seeds: text::xlsx_seeds,
        dict: text::XLSX_DICT,
        run: text::xlsx,
        report: no_report,
    });
}

#[test]
fn config_parse() {
    fuzz(&Target {
        name: "config_parse",
        max_len: 32 << 10,
        per_input: LIGHT,
        seeds: text::config_seeds,
        dict: text::CONFIG_DICT,
        run: text::config,
        report: no_report,
    });
}

#[test]
fn script_render() {
    fuzz(&Target {
        name: "script_render",
        max_len: 16 << 10,
        per_input: HEAVY,
        seeds: text::script_seeds,
        dict: text::SCRIPT_DICT,
        run: text::script,
        report: no_report,
    });
}

#[test]
fn catalog_openpgp() {
    fuzz(&Target {
        name: "catalog_openpgp",
        max_len: 256 << 10,
        per_input: HEAVY,
        seeds: catalog::openpgp_seeds,
        dict: catalog::OPENPGP_DICT,
        run: catalog::openpgp,
        report: no_report,
    });
}

#[test]
fn catalog_release_sums() {
    fuzz(&Target {
        name: "catalog_release_sums",
        max_len: 256 << 10,
        per_input: HEAVY,
        seeds: catalog::release_sums_seeds,
        dict: catalog::RELEASE_DICT,
        run: catalog::release_sums,
        report: no_report,
    });
}

#[test]
fn catalog_debpkg() {
    fuzz(&Target {
        name: "catalog_debpkg",
        max_len: 64 << 10,
        per_input: HEAVY,
        seeds: catalog::debpkg_seeds,
        dict: catalog::DEBPKG_DICT,
        run: catalog::debpkg,
        report: no_report,
    });
}

#[test]
fn catalog_iso9660() {
    fuzz(&Target {
        name: "catalog_iso9660",
        max_len: 512 << 10,
        per_input: HEAVY,
        seeds: catalog::iso_seeds,
        dict: catalog::ISO_DICT,
        run: catalog::iso,
        report: no_report,
    });
}

#[test]
fn catalog_definition() {
    fuzz(&Target {
        name: "catalog_definition",
        max_len: 32 << 10,
        per_input: LIGHT,
        seeds: catalog::definition_seeds,
        dict: catalog::DEFINITION_DICT,
        run: catalog::definition,
        report: no_report,
    });
}

/// Outcomes that differ only in numbers, addresses, paths, what follows a quote or
/// the input quoted by TOML are one.
#[test]
fn outcome_signatures() {
    use engine::sig;
    assert_eq!(sig("line 3: bad"), sig("line 4: bad"));
    assert_eq!(
        sig("52:54:00:00:00:01 is not known"),
        sig("52:54:00:00:00:02 is not known")
    );
    assert_eq!(sig("option \"abc\" twice"), sig("option \"xyz\" twice"));
    assert_eq!(
        sig(
            "a.toml: TOML parse error at line 7, column 9\n  |\n7 | \"a\n  |         ^\nmissing value, expected `=`"
        ),
        sig(
            "a.toml: TOML parse error at line 2, column 1\n  |\n2 | x]]\n  | ^\nmissing value, expected `[`"
        ),
    );
    assert_eq!(
        sig(
            "clearsigned the signature could not be read: failed reading: armor footer Error(Error { input: [0, 0, 86, 43], code: Tag })"
        ),
        sig(
            "clearsigned the signature could not be read: failed reading: armor footer Error(Error { input: [101, 100, 32, 98, 121], code: Tag })"
        ),
    );
    assert_ne!(sig("missing value for key"), sig("unclosed table"));
    assert_ne!(sig("0 | x\nmissing value"), sig("0 | x\nunclosed table"));
}
