//! The layering of the crate, checked from the source: every `crate::…` path in `src/` (in `use`
//! lines and in code) must point down the layers ARCHITECTURE.md draws, never up and never
//! sideways, so the import graph has no circle. Also: the pure core never reads the clock, the
//! wire format stays inside `api`, the simulator imports nothing of the daemon it imitates, and
//! no subcommand imports from `cli/mod.rs`.
//!
//! This reads text, not the compiler's resolution: it sees `crate::x` paths and `use
//! crate::{a, b}` groups (comments skipped). `super::` paths never leave a top-level module in
//! this crate except inside `cli/` (checked below), so they are not followed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, top first. A module may use modules of a lower layer only. `policy::rules` (the
/// pure rule model that `config` builds) is its own node; the rest of `policy` sits above `config`
/// and `metrics`. `simulator` is outside the daemon: only `cli` (for `demo`) uses it.
const LAYERS: &[(u32, &[&str])] = &[
    (100, &["cli"]),
    (90, &["app", "simulator"]),
    (80, &["poller", "schedule", "http"]),
    (70, &["policy"]),
    (60, &["metrics"]),
    (50, &["config"]),
    (40, &["policy::rules", "exposition"]),
    (30, &["api"]),
    (20, &["snapshot"]),
    (15, &["account"]),
    (10, &["clock", "cron", "secret", "shutdown"]),
];

/// Files of the pure core: no clock, no I/O; `now` is a parameter.
const PURE_CORE: &[&str] = &[
    "src/snapshot",
    "src/account",
    "src/exposition",
    "src/policy/rules.rs",
    "src/policy/history.rs",
    "src/policy/evaluate.rs",
];

fn rank(node: &str) -> Option<u32> {
    LAYERS
        .iter()
        .find(|(_, nodes)| nodes.contains(&node))
        .map(|(rank, _)| *rank)
}

fn source_files(directory: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            source_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

/// The node a file belongs to: its top-level module (`src/api/scan.rs` → `api`), with
/// `src/policy/rules.rs` as `policy::rules`. `None` for the crate root and the binary.
fn node_of(relative: &str) -> Option<String> {
    let path = relative.strip_prefix("src/")?;
    if path == "lib.rs" || path == "main.rs" {
        return None;
    }
    if path == "policy/rules.rs" {
        return Some("policy::rules".into());
    }
    let top = path.split('/').next()?;
    Some(top.trim_end_matches(".rs").to_owned())
}

/// The node a path after `crate::` names: `policy::rules::Rule` → `policy::rules`,
/// `policy::PolicyConfig` → `policy`, `api::KeyEdit` → `api`.
fn node_of_path(segments: &[String]) -> String {
    match segments {
        [first, second, ..] if first == "policy" && second == "rules" => "policy::rules".into(),
        [first, ..] => first.clone(),
        [] => String::new(),
    }
}

/// The source without comments (line comments and `//!`/`///` docs), keeping string literals
/// as they are (none of ours contains `crate::`).
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // `https://` inside a string: only cut at `//` preceded by whitespace or at the start.
            Some(at) if at == 0 || line[..at].ends_with(char::is_whitespace) => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(character: char) -> bool {
    character.is_ascii_alphanumeric() || character == '_'
}

/// Every path named after `crate::` in `text`, as segments; a `{…}` group gives one path per
/// item (`crate::{api::X, config}` → `[api, X]`, `[config]`).
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    paths_after(text, "crate::")
}

/// Every path named after `anchor` (`crate::` or `super::`), skipping `other_crate::` and
/// `super::super::` continuations and glob imports (`use super::*` in a file's own tests).
fn paths_after(text: &str, anchor: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(anchor) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + anchor.len()..];
        if before.is_some_and(|c| is_ident(c) || c == ':') || rest.starts_with('*') {
            continue;
        }
        paths.extend(parse_path_tree(rest, Vec::new()));
    }
    paths
}

/// Parses `a::b::{c, d::e}` at the start of `text` into full paths.
fn parse_path_tree(text: &str, prefix: Vec<String>) -> Vec<Vec<String>> {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 0;
        let mut end = group.len();
        for (index, character) in group.char_indices() {
            match character {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = index;
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        let inner = &group[..end];
        let mut items = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (index, character) in inner.char_indices() {
            match character {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[start..index]);
                    start = index + 1;
                }
                _ => {}
            }
        }
        items.push(&inner[start..]);
        return items
            .into_iter()
            .filter(|item| !item.trim().is_empty())
            .flat_map(|item| parse_path_tree(item, prefix.clone()))
            .collect();
    }
    let ident: String = text.chars().take_while(|&c| is_ident(c)).collect();
    if ident.is_empty() {
        return vec![prefix];
    }
    let mut path = prefix;
    if ident != "self" {
        path.push(ident.clone());
    }
    let after = &text[ident.len()..];
    match after.strip_prefix("::") {
        Some(next) if next.trim_start().starts_with('{') || next.starts_with(is_ident) => {
            parse_path_tree(next, path)
        }
        _ => vec![path],
    }
}

struct SourceFile {
    relative: String,
    node: Option<String>,
    code: String,
}

fn crate_sources() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    source_files(&root.join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let relative = path
                .strip_prefix(root)
                .expect("under the crate")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            SourceFile {
                node: node_of(&relative),
                code: without_comments(&text),
                relative,
            }
        })
        .collect()
}

#[test]
fn every_module_imports_only_from_the_layers_below_it() {
    let mut violations = Vec::new();
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in crate_sources() {
        let Some(node) = &file.node else { continue };
        let Some(own_rank) = rank(node) else {
            violations.push(format!(
                "{}: module `{node}` has no layer in tests/architecture.rs LAYERS (and \
                 ARCHITECTURE.md): place it",
                file.relative
            ));
            continue;
        };
        for path in crate_paths(&file.code) {
            let target = node_of_path(&path);
            if target.is_empty() || &target == node {
                continue;
            }
            // The rest of `policy` uses its own rule model; `policy::rules` must not use the rest.
            if node == "policy" && target == "policy::rules" {
                continue;
            }
            let Some(target_rank) = rank(&target) else {
                violations.push(format!(
                    "{}: uses crate::{} — `{target}` has no layer",
                    file.relative,
                    path.join("::")
                ));
                continue;
            };
            graph.entry(node.clone()).or_default().push(target.clone());
            if target_rank >= own_rank {
                violations.push(format!(
                    "{}: `{node}` (layer {own_rank}) uses crate::{} of `{target}` (layer \
                     {target_rank}): dependencies point down only",
                    file.relative,
                    path.join("::")
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "upward or sideways imports:\n{}",
        violations.join("\n")
    );
    // The check sees real edges, not nothing: the daemon's spine is there.
    for (from, to) in [
        ("cli", "app"),
        ("app", "poller"),
        ("poller", "policy"),
        ("http", "metrics"),
        ("metrics", "exposition"),
        ("exposition", "snapshot"),
        ("config", "policy::rules"),
        ("policy::rules", "api"),
    ] {
        assert!(
            graph
                .get(from)
                .is_some_and(|targets| targets.iter().any(|t| t == to)),
            "expected the edge {from} → {to} in the import graph: {graph:?}"
        );
    }
}

#[test]
fn the_pure_core_never_reads_the_clock_or_does_io() {
    let forbidden = [
        "crate::clock",
        "SystemTime",
        "Instant::now",
        "std::fs",
        "tokio::",
        "std::net",
        "reqwest",
    ];
    let mut violations = Vec::new();
    for file in crate_sources() {
        if !PURE_CORE
            .iter()
            .any(|prefix| file.relative.starts_with(prefix))
        {
            continue;
        }
        // Their unit tests too: a fixed `now` is the point.
        for word in forbidden {
            if file.code.contains(word) {
                violations.push(format!("{}: uses {word}", file.relative));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_wire_format_stays_inside_api() {
    let leaks: Vec<String> = crate_sources()
        .into_iter()
        .filter(|file| file.node.as_deref() != Some("api") && file.code.contains("api::wire"))
        .map(|file| file.relative)
        .collect();
    assert!(leaks.is_empty(), "api::wire used outside api: {leaks:?}");
}

#[test]
fn the_simulator_imports_nothing_of_the_daemon() {
    for file in crate_sources() {
        if file.node.as_deref() != Some("simulator") {
            continue;
        }
        let foreign: Vec<String> = crate_paths(&file.code)
            .into_iter()
            .filter(|path| path.first().is_some_and(|first| first != "simulator"))
            .map(|path| path.join("::"))
            .collect();
        assert!(
            foreign.is_empty(),
            "{} uses {foreign:?}: the simulator must stay independent of what it tests",
            file.relative
        );
    }
}

#[test]
fn subcommands_never_import_from_cli_mod() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli");
    let mut modules: Vec<String> = std::fs::read_dir(&root)
        .expect("src/cli exists")
        .map(|entry| {
            let path = entry.expect("an entry").path();
            path.file_stem()
                .expect("a name")
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name != "mod")
        .collect();
    modules.sort();
    assert!(
        modules.len() >= 6,
        "one file per subcommand under src/cli: {modules:?}"
    );
    let mut violations = Vec::new();
    for file in crate_sources() {
        if !file.relative.starts_with("src/cli/") || file.relative == "src/cli/mod.rs" {
            continue;
        }
        for path in crate_paths(&file.code) {
            if path.first().is_some_and(|first| first == "cli")
                && !path.get(1).is_some_and(|second| modules.contains(second))
            {
                violations.push(format!("{}: crate::{}", file.relative, path.join("::")));
            }
        }
        // `super::` in a file directly under src/cli/ is cli/mod.rs.
        let depth = file.relative.matches('/').count();
        if depth == 2 {
            for path in paths_after(&file.code, "super::") {
                if !path.first().is_some_and(|first| modules.contains(first)) {
                    violations.push(format!("{}: super::{}", file.relative, path.join("::")));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports from cli/mod.rs (move what is shared to cli/shared.rs):\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_path_parser_reads_groups_and_nesting() {
    let paths = crate_paths(
        "use crate::api::{self, scan::PAGE_SIZE, KeyEdit};\nuse crate::{config::{self, Config}, \
         secret::Secret};\nlet x = crate::clock::unix_now(); other_crate::thing();",
    );
    let joined: Vec<String> = paths.iter().map(|path| path.join("::")).collect();
    assert_eq!(
        joined,
        [
            "api",
            "api::scan::PAGE_SIZE",
            "api::KeyEdit",
            "config",
            "config::Config",
            "secret::Secret",
            "clock::unix_now"
        ]
    );
    assert_eq!(node_of_path(&paths[0]), "api");
    assert_eq!(
        node_of_path(&["policy".into(), "rules".into(), "Rule".into()]),
        "policy::rules"
    );
    assert_eq!(
        node_of("src/policy/rules.rs").as_deref(),
        Some("policy::rules")
    );
    assert_eq!(node_of("src/policy/engine.rs").as_deref(), Some("policy"));
    assert_eq!(node_of("src/cli/keys/fields.rs").as_deref(), Some("cli"));
    assert_eq!(node_of("src/lib.rs"), None);
    assert_eq!(
        without_comments("let a = 1; // crate::app\n//! crate::cli\nlet u = \"https://x\";"),
        "let a = 1; \n\nlet u = \"https://x\";"
    );
}
