//! `check-config`'s view of a web config: commented YAML lines (the output stays a valid TOML
//! config), every path and setting, and for each user only the hash's cost.

use std::fmt::Write as _;

use super::{KeySource, PemSource, WebConfig};

/// The web config as `check-config` shows it: commented YAML, every path and setting, and for
/// each user only the hash's cost; never a hash, never a key.
pub(crate) fn render_redacted(web: &WebConfig) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# The web config {} (exporter-toolkit format), as read; hashes and keys are never shown:",
        web.path.display()
    );
    match &web.tls {
        None => {
            let _ = writeln!(out, "#   tls_server_config: (none: plain HTTP)");
        }
        Some(tls) => {
            let _ = writeln!(out, "#   tls_server_config:");
            match &tls.certificate {
                PemSource::File(path) => {
                    let _ = writeln!(out, "#     cert_file: {}", path.display());
                }
                PemSource::Inline(_) => {
                    let _ = writeln!(out, "#     cert: (inline PEM)");
                }
            }
            match &tls.key {
                KeySource::File(path) => {
                    let _ = writeln!(out, "#     key_file: {}", path.display());
                }
                KeySource::Inline(_) => {
                    let _ = writeln!(out, "#     key: (inline, not shown)");
                }
            }
            let _ = writeln!(out, "#     client_auth_type: {}", tls.client_auth.name());
            match &tls.client_ca {
                Some(PemSource::File(path)) => {
                    let _ = writeln!(out, "#     client_ca_file: {}", path.display());
                }
                Some(PemSource::Inline(_)) => {
                    let _ = writeln!(out, "#     client_ca: (inline PEM)");
                }
                None => {}
            }
            if !tls.client_allowed_sans.is_empty() {
                let _ = writeln!(
                    out,
                    "#     client_allowed_sans: [{}]",
                    tls.client_allowed_sans.join(", ")
                );
            }
            let _ = writeln!(out, "#     min_version: {}", tls.min_version.name());
            let _ = writeln!(out, "#     max_version: {}", tls.max_version.name());
            if !tls.cipher_suites.is_empty() {
                let _ = writeln!(
                    out,
                    "#     cipher_suites: [{}]",
                    tls.cipher_suites.join(", ")
                );
            }
            let _ = writeln!(
                out,
                "#     prefer_server_cipher_suites: {}",
                tls.prefer_server_cipher_suites
            );
            if !tls.curve_preferences.is_empty() {
                let _ = writeln!(
                    out,
                    "#     curve_preferences: [{}]",
                    tls.curve_preferences.join(", ")
                );
            }
        }
    }
    let _ = writeln!(out, "#   http_server_config:");
    let _ = writeln!(out, "#     http2: {}", web.http2);
    if !web.headers.is_empty() {
        let _ = writeln!(out, "#     headers:");
        for (name, value) in &web.headers {
            let _ = writeln!(out, "#       {name}: {value}");
        }
    }
    if web.users.is_empty() {
        let _ = writeln!(out, "#   basic_auth_users: (none: no credentials asked)");
    } else {
        let _ = writeln!(out, "#   basic_auth_users:");
        for user in &web.users {
            let _ = writeln!(
                out,
                "#     {}: (bcrypt hash, cost {}, not shown)",
                user.name, user.cost
            );
        }
    }
    out
}
