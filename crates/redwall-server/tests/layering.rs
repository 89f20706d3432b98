//! The shape ARCHITECTURE.md promises, checked on the sources: the server
//! keeps only HTTP and reaches the data through the hub; the hub names no
//! HTTP crate; the server's modules import each other in one direction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (line comments and doc
/// comments; the sources use no block comments).
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.split("//").next().unwrap_or("").to_string()))
        .filter(|(_, l)| !l.trim().is_empty())
        .collect()
}

#[test]
fn no_module_of_the_server_touches_the_store() {
    let mut files = Vec::new();
    rust_files(&crate_dir().join("src"), &mut files);
    // Where the process starts: opening the database and building the hub
    // from it is their job.
    let composition = ["state.rs", "server.rs"];
    let mut found = Vec::new();
    for file in &files {
        if composition.iter().any(|c| file.ends_with(c)) {
            continue;
        }
        for (n, line) in code_lines(file) {
            let words: Vec<&str> = line
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || c == ':'))
                .collect();
            let touches = words.iter().any(|w| {
                w.contains(".store.")
                    || w.ends_with(".store")
                    || w.starts_with("Store::")
                    || *w == "Store"
                    || w.ends_with("redwall_store::Store")
                    || w.contains("AuditWriter")
            });
            if touches {
                found.push(format!("{}:{n}: {}", file.display(), line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the server reaches the store, not through the hub:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_hub_names_no_http_crate() {
    let manifest = std::fs::read_to_string(crate_dir().join("../redwall-hub/Cargo.toml")).unwrap();
    let http = [
        "axum",
        "axum-server",
        "hyper",
        "hyper-util",
        "tower",
        "tower-http",
        "http",
        "http-body",
        "reqwest",
    ];
    let named: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.split(['=', '.', ' ']).next())
        .filter(|name| http.contains(name))
        .collect();
    assert!(named.is_empty(), "redwall-hub depends on {named:?}");
}

/// The top-level modules of the server each `crate::X` reference points to.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = crate_dir().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let from = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        for (_, line) in code_lines(file) {
            for part in line.split("crate::").skip(1) {
                let to: String = part
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !to.is_empty() && to != from {
                    graph.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    graph
}

/// Whether `to` is reachable from `from`, not passing through the modules
/// that assemble the process (`state` holds every shell's shared parts).
fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen: BTreeSet<String> = ["state", "server", "lib"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut todo = vec![from.to_string()];
    while let Some(m) = todo.pop() {
        if m == to {
            return true;
        }
        if seen.insert(m.clone()) {
            todo.extend(graph.get(&m).into_iter().flatten().cloned());
        }
    }
    false
}

#[test]
fn the_servers_shells_import_each_other_in_one_direction() {
    let graph = module_graph();
    let shells = ["api", "proxy", "sso", "console", "login", "front_door"];
    let mut loops = Vec::new();
    for a in shells {
        for b in shells {
            if a < b && graph.get(a).is_some_and(|d| d.contains(b)) && reaches(&graph, b, a) {
                loops.push(format!("{a} -> {b} -> ... -> {a}"));
            }
            if a < b && graph.get(b).is_some_and(|d| d.contains(a)) && reaches(&graph, a, b) {
                loops.push(format!("{b} -> {a} -> ... -> {b}"));
            }
        }
    }
    assert!(loops.is_empty(), "import loops: {loops:?}\n{graph:#?}");
}
