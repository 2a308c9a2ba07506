//! The web configuration file: the exporter-toolkit format (`--web.config.file`) that every
//! official exporter reads, given here by `[server] web_config_file` or `--web.config.file`.
//!
//! This module owns reading and validating that YAML file into a typed [`WebConfig`] (the
//! types and the top level here, the walk of each section in `read`), and reading the PEM files
//! it names (certificate, key, client CA) into rustls types in `material` — once at load (so a
//! key that does not match its certificate is a configuration error, exit 2) and again by the
//! HTTP server whenever the files change ([`TlsSettings::load_material`]). `render` is
//! `check-config`'s redacted view.
//!
//! Invariants:
//! - Every error names the web config file and the key (`tls_server_config.key_file`), like
//!   every other [`ConfigError`], and never quotes a password hash or a private key.
//! - Unknown keys are errors (exporter-toolkit reads the file with `UnmarshalStrict`), and so is
//!   every setting rustls cannot honour: TLS 1.0/1.1, CBC and static-RSA cipher suites, curve
//!   P-521, e-mail SANs. Nothing is silently ignored that would make the endpoint less safe
//!   than the operator wrote.
//! - Relative paths inside the file are relative to the file's own directory (as in
//!   exporter-toolkit).

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use crate::config::error::KeyPath;
use crate::config::ConfigError;
use crate::secret::Secret;

mod material;
mod read;
mod render;
#[cfg(test)]
mod tests;

pub use material::{TlsMaterial, TlsMaterialError};
use read::Reader;
pub(crate) use render::render_redacted;

/// The response headers exporter-toolkit lets a web config set, with the values it accepts
/// (`None`: any value).
pub const ALLOWED_HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Content-Security-Policy", None),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-XSS-Protection", None),
    ("Strict-Transport-Security", None),
];

const TOP_LEVEL_KEYS: &[&str] = &[
    "tls_server_config",
    "http_server_config",
    "basic_auth_users",
    "rate_limit",
];
const TLS_KEYS: &[&str] = &[
    "cert",
    "key",
    "client_ca",
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
];
const HTTP_KEYS: &[&str] = &["http2", "headers"];

/// A validated web configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// `tls_server_config`, when it turns TLS on (a certificate and a key).
    pub tls: Option<TlsSettings>,
    /// `http_server_config.http2` (default true): offer HTTP/2 by ALPN. TLS only.
    pub http2: bool,
    /// `http_server_config.headers`, names from [`ALLOWED_HEADERS`], in file order.
    pub headers: Vec<(String, String)>,
    /// `basic_auth_users`, sorted by name; empty: no credentials asked.
    pub users: Vec<BasicAuthUser>,
}

/// One `basic_auth_users` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuthUser {
    pub name: String,
    /// A bcrypt hash (`$2a$`, `$2b$` or `$2y$`), already checked to parse.
    pub hash: Secret,
    /// The hash's cost, for `check-config`.
    pub cost: u32,
}

/// `tls_server_config`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub certificate: PemSource,
    pub key: KeySource,
    pub client_auth: ClientAuth,
    pub client_ca: Option<PemSource>,
    /// Exact SAN values (DNS name, IP address or URI) one of which the client certificate must
    /// carry; empty: no SAN check. Only with `RequireAnyClientCert` or
    /// `RequireAndVerifyClientCert`.
    pub client_allowed_sans: Vec<String>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// Go names of the TLS 1.2 suites to offer, in preference order; empty: rustls' defaults.
    pub cipher_suites: Vec<&'static str>,
    /// The server's suite order wins over the client's (rustls `ignore_client_order`).
    pub prefer_server_cipher_suites: bool,
    /// Go names of the key-exchange groups, in preference order; empty: rustls' defaults.
    pub curve_preferences: Vec<&'static str>,
}

/// A certificate (chain) or CA bundle: a PEM file, or PEM inline in the web config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    File(PathBuf),
    Inline(String),
}

/// The private key: a PEM file, or PEM inline (`key:`), which is a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Inline(Secret),
}

/// Go's `tls.ClientAuthType`, by exporter-toolkit's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for (the default).
    NoClientCert,
    /// Asked for, not required, not verified against a CA (possession of its key is checked).
    RequestClientCert,
    /// Required, not verified against a CA (possession of its key is checked).
    RequireAnyClientCert,
    /// Not required; when sent, it must chain to `client_ca_file`.
    VerifyClientCertIfGiven,
    /// Required and must chain to `client_ca_file`: the only real client-certificate check.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    pub fn name(self) -> &'static str {
        match self {
            ClientAuth::NoClientCert => "NoClientCert",
            ClientAuth::RequestClientCert => "RequestClientCert",
            ClientAuth::RequireAnyClientCert => "RequireAnyClientCert",
            ClientAuth::VerifyClientCertIfGiven => "VerifyClientCertIfGiven",
            ClientAuth::RequireAndVerifyClientCert => "RequireAndVerifyClientCert",
        }
    }

    fn parse(name: &str) -> Option<ClientAuth> {
        Some(match name {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            // exporter-toolkit keeps the old name for compatibility.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            _ => return None,
        })
    }

    /// Whether a certificate that is sent is checked against the client CA.
    pub fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }

    /// Whether a client without a certificate is refused.
    pub fn requires_certificate(self) -> bool {
        matches!(
            self,
            ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLS12",
            TlsVersion::Tls13 => "TLS13",
        }
    }
}

/// Reads and validates the web config at `path`. `referenced_by` is where the path came from
/// (the config file or variable, and `server.web_config_file`); `None` for the command line.
/// Problems that are not errors are added to `warnings`.
pub(crate) fn load_web_config(
    path: &Path,
    referenced_by: Option<(String, &KeyPath)>,
    warnings: &mut Vec<String>,
) -> Result<WebConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        let reason = format!(
            "cannot read the web config file {}: {error}",
            path.display()
        );
        match &referenced_by {
            Some((origin, key)) => ConfigError::new(Some(origin.clone()), Some(key), reason),
            None => ConfigError::new(Some(path.display().to_string()), None, reason),
        }
    })?;
    let reader = Reader { path };
    let root: Value = serde_yaml_ng::from_str(&text).map_err(|error| {
        // The message names line and column; it does not quote the file.
        let location = error
            .location()
            .map(|at| format!(" at line {}, column {}", at.line(), at.column()))
            .unwrap_or_default();
        let message = error.to_string();
        let message = message.split(" at line ").next().unwrap_or_default();
        ConfigError::new(
            Some(path.display().to_string()),
            None,
            format!("not a valid web config (YAML){location}: {message}"),
        )
    })?;
    let directory = path.parent().unwrap_or(Path::new(""));
    let mut web = WebConfig {
        path: path.to_path_buf(),
        tls: None,
        http2: true,
        headers: Vec::new(),
        users: Vec::new(),
    };
    let root_key = KeyPath::root();
    for (name, value) in reader.mapping(&root, &root_key, TOP_LEVEL_KEYS)? {
        let key = root_key.field(name);
        match name {
            "tls_server_config" => {
                web.tls = reader.tls_settings(value, &key, directory, warnings)?;
            }
            "http_server_config" => {
                for (field, value) in reader.mapping(value, &key, HTTP_KEYS)? {
                    let field_key = key.field(field);
                    match field {
                        "http2" => web.http2 = reader.boolean(value, &field_key)?,
                        _ => web.headers = reader.headers(value, &field_key)?,
                    }
                }
            }
            "basic_auth_users" => web.users = reader.users(value, &key)?,
            _ => {
                if !value.is_null() {
                    return Err(reader.error(
                        &key,
                        "rate_limit is not supported by cometapi-keymon; remove it (the \
                         [server] max_connections cap bounds the load a client can cause)",
                    ));
                }
            }
        }
    }
    if web.tls.is_none() && !web.users.is_empty() {
        warnings.push(format!(
            "web config {}: basic_auth_users without tls_server_config: passwords travel in \
             clear text",
            path.display()
        ));
    }
    Ok(web)
}
