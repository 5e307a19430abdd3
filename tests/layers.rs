//! Imports go one way. Every `crate::` and `super::` path in `src/` is resolved to
//! the module it names and checked against the layer table below: a module may use
//! modules of its own layer or lower ones, never a higher one, and the top-level
//! modules must not import each other in a cycle. Adding a module means adding it
//! here, on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers from the bottom up; a module path is placed by its longest prefix here.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundations",
        // `dhcp` and `tftp` themselves only declare their parts.
        &[
            "mac", "clock", "limits", "netif", "text", "throttle", "validate", "dhcp", "tftp",
            "catalog",
        ],
    ),
    (
        "codecs",
        &[
            "dhcp::wire",
            "tftp::packet",
            "tftp::options",
            "tftp::request",
            "catalog::openpgp",
            "catalog::release",
            "catalog::sums",
            "catalog::debpkg",
            "catalog::iso9660",
            "uki",
        ],
    ),
    (
        "pure decisions and domain types",
        &[
            "model",
            "lifecycle",
            "timeline",
            "diagnosis",
            "script",
            "config",
            "power",
            "dhcp::boot",
            "dhcp::leases",
            "dhcp::policy",
            "tftp::transfer",
            "secrets::rule",
            "auth",
            "catalog::definition",
        ],
    ),
    ("store", &["store", "inventory", "bulk"]),
    (
        "services",
        &[
            "service",
            "images",
            "secrets",
            "dhcp::persist",
            "catalog::fetch",
        ],
    ),
    (
        "servers",
        &[
            "dhcp::server",
            "dhcp::foreign",
            "tftp::files",
            "tftp::server",
            "ra",
            "http",
            "listen",
        ],
    ),
    ("web", &["panel", "api"]),
    ("entry points", &["serve", "cli", "check"]),
];

fn layer_of(module: &[String]) -> Option<(usize, String)> {
    let mut best: Option<(usize, usize, String)> = None;
    for (index, (_, prefixes)) in LAYERS.iter().enumerate() {
        for prefix in *prefixes {
            let parts: Vec<&str> = prefix.split("::").collect();
            if module.len() >= parts.len()
                && module.iter().zip(&parts).all(|(a, b)| a == b)
                && best.as_ref().is_none_or(|(len, _, _)| parts.len() > *len)
            {
                best = Some((parts.len(), index, (*prefix).to_string()));
            }
        }
    }
    best.map(|(_, index, prefix)| (index, prefix))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/dhcp/server.rs` is `dhcp::server`; `src/dhcp/mod.rs` is `dhcp`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The module paths a line names: `crate::a::b::Item` gives `[a, b, Item]`,
/// `super::x` is resolved against `module` (a file's own module; `mod.rs` files
/// are their directory's module).
fn referenced(line: &str, module: &[String], is_mod_file: bool) -> Vec<Vec<String>> {
    let code = line.split("//").next().unwrap_or("");
    let mut found = Vec::new();
    for (start, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        if start > 0 && code[..start].ends_with(is_ident) {
            continue;
        }
        let rest = &code[start..];
        let mut path: Vec<String> = Vec::new();
        let mut segments = rest.split("::");
        let head = segments.next().unwrap_or("");
        let mut base: Vec<String> = if head == "crate" {
            Vec::new()
        } else {
            // `super` in a mod.rs or a plain file is the parent of the file's module.
            let mut parent = module.to_vec();
            if !is_mod_file || !parent.is_empty() {
                parent.pop();
            }
            parent
        };
        for segment in segments {
            let name: String = segment.chars().take_while(|&c| is_ident(c)).collect();
            if name == "super" {
                base.pop();
                continue;
            }
            if name.is_empty() {
                break;
            }
            path.push(name.clone());
            if name.len() != segment.len() {
                break;
            }
        }
        base.extend(path);
        if !base.is_empty() {
            found.push(base);
        }
    }
    found
}

#[test]
fn imports_go_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut unplaced = BTreeSet::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        // lib.rs and main.rs declare and run, and in-crate test modules (`*_tests`,
        // compiled only under cfg(test)) drive several layers at once: all sit above.
        if module.is_empty() || module.last().is_some_and(|m| m.ends_with("_tests")) {
            continue;
        }
        let Some((own_layer, own_prefix)) = layer_of(&module) else {
            unplaced.insert(module.join("::"));
            continue;
        };
        let is_mod_file = file.file_name().is_some_and(|n| n == "mod.rs");
        let text = std::fs::read_to_string(file).expect("read source");
        // Inline modules (`mod tests { ... }`) make `super::` name the file's module.
        let (mut depth, mut inline_at) = (0usize, Vec::new());
        for (number, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            let opens_inline = (trimmed.starts_with("mod ") || trimmed.starts_with("pub mod "))
                && trimmed.trim_end().ends_with('{');
            if opens_inline {
                inline_at.push(depth);
            }
            depth += line.matches('{').count();
            depth = depth.saturating_sub(line.matches('}').count());
            while inline_at
                .last()
                .is_some_and(|&at| depth <= at && !opens_inline)
            {
                inline_at.pop();
            }
            let mut inner = module.clone();
            if !inline_at.is_empty() {
                inner.push("tests".into());
            }
            for target in referenced(line, &inner, is_mod_file && inline_at.is_empty()) {
                let Some((layer, prefix)) = layer_of(&target) else {
                    continue; // an item of lib.rs, or a name the table does not place
                };
                if target[0] != module[0] {
                    graph
                        .entry(module[0].clone())
                        .or_default()
                        .insert(target[0].clone());
                }
                if layer > own_layer {
                    wrong.push(format!(
                        "{}:{}: {own_prefix} ({}) uses {prefix} ({})",
                        file.strip_prefix(&src).expect("under src").display(),
                        number + 1,
                        LAYERS[own_layer].0,
                        LAYERS[layer].0,
                    ));
                }
            }
        }
    }
    let mut problems = Vec::new();
    if !unplaced.is_empty() {
        problems.push(format!(
            "modules missing from the layer table in tests/layers.rs: {unplaced:?}"
        ));
    }
    if !wrong.is_empty() {
        problems.push(format!("imports against the layers:\n{}", wrong.join("\n")));
    }
    if let Some(cycle) = find_cycle(&graph) {
        problems.push(format!(
            "top-level modules import each other: {}",
            cycle.join(" -> ")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_checker_sees_a_wrong_way_import_and_a_cycle() {
    let module = vec!["dhcp".to_string(), "wire".to_string()];
    let refs = referenced("use crate::dhcp::server::Server;", &module, false);
    assert_eq!(refs, vec![vec!["dhcp", "server", "Server"]]);
    let (from, _) = layer_of(&module).expect("placed");
    let (to, _) = layer_of(&refs[0]).expect("placed");
    assert!(to > from, "a codec using the server is against the layers");
    assert_eq!(
        referenced(
            "use super::packet::Packet;",
            &["tftp".into(), "server".into()],
            false
        ),
        vec![vec!["tftp", "packet", "Packet"]]
    );
    assert_eq!(
        referenced("mod x; use super::files;", &["panel".into()], true),
        vec![vec!["files"]]
    );
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}

/// Every top-level module of the tree is named in the module map at the top of
/// `src/lib.rs` (its parts are mapped in their own `mod.rs`).
#[test]
fn the_module_map_names_every_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let map: String = lib
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let tops: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_of(&src, f).first().cloned())
        .filter(|top| !top.ends_with("_tests"))
        .collect();
    let missing: Vec<&String> = tops
        .iter()
        .filter(|top| !map.contains(&format!("`{top}`")) && !map.contains(&format!("`{top}::")))
        .collect();
    assert!(
        missing.is_empty(),
        "modules the map in src/lib.rs does not name: {missing:?}"
    );
}

/// The store is reached through its typed functions over `store::Db`: nothing outside
/// `src/store/` names the database engine, and no SQL is written there.
#[test]
fn only_the_store_speaks_to_the_database() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let store = src.join("store");
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !f.starts_with(&store)) {
        let text = std::fs::read_to_string(file).expect("read source");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let sql = [
                "SELECT ",
                "INSERT INTO",
                "UPDATE machines",
                "DELETE FROM",
                "CREATE TABLE",
            ]
            .iter()
            .any(|k| code.contains(k));
            if code.contains("rusqlite") || sql {
                found.push(format!(
                    "{}:{}: {}",
                    file.strip_prefix(&src).expect("under src").display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the database outside src/store/:\n{}",
        found.join("\n")
    );
}
