//! External programs some tests need (promtool, prometheus, kubectl, kubernetes-validate,
//! systemd-analyze, ...): found on PATH, or the test is skipped with one clear line per suite and
//! tool — except under `CI=true`, where a missing tool fails the test. `bash .ci/run` installs
//! every one of them.
//!
//! The skip line is written to the process's stderr directly (not through `eprintln!`, which the
//! test harness captures and hides for passing tests), so a plain `cargo test` shows it.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How to install each tool the tests use.
const HOW_TO_INSTALL: &[(&str, &str)] = &[
    ("promtool", "apt-get install prometheus"),
    ("prometheus", "apt-get install prometheus"),
    ("systemd-analyze", "apt-get install systemd"),
    ("kubectl", "see https://kubernetes.io/docs/tasks/tools/"),
    (
        "kubernetes-validate",
        "python3 -m pip install kubernetes-validate==1.37.0",
    ),
    ("python3", "apt-get install python3 python3-yaml"),
    ("ldd", "apt-get install libc-bin"),
    ("chromium", "apt-get install chromium"),
    ("nginx", "apt-get install nginx"),
    ("htpasswd", "apt-get install apache2-utils"),
    ("openssl", "apt-get install openssl"),
];

/// True when the environment says this is CI (`CI=true` or `CI=1`, as CI services set it).
pub fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| matches!(value.trim(), "true" | "1" | "TRUE" | "True"))
}

/// `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|directory| directory.join(name))
            .find(|candidate| is_executable_file(candidate))
    })
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// The tool's path, or `None` after saying (once per suite and tool) that the tests of this
/// suite needing it are skipped, why, and how to install it. Under `CI=true` a missing tool
/// panics instead: CI must run every test.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    if let Some(path) = find_on_path(name) {
        return Some(path);
    }
    let how = HOW_TO_INSTALL
        .iter()
        .find(|(tool, _)| *tool == name)
        .map_or("install it", |(_, how)| how);
    let suite = env!("CARGO_CRATE_NAME");
    if running_in_ci() {
        panic!(
            "{name} not found on PATH ({how}; `bash .ci/run` installs it): under CI=true a \
             missing tool is a failure, not a skip"
        );
    }
    static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let first_time = SAID
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(name.to_owned());
    if first_time {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the tests of tests/{suite}.rs that need {name}: not found on PATH \
             ({how}; `bash .ci/run` installs every tool the tests need)"
        );
    }
    None
}

/// Whether every tool in `names` is on PATH (each missing one reported as
/// [`require_tool`] does). A test starts with `if !tools_available(&[...]) { return; }`.
pub fn tools_available(names: &[&str]) -> bool {
    let mut all = true;
    for name in names {
        all &= require_tool(name).is_some();
    }
    all
}
