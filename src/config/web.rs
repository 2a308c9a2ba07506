//! The web configuration file: the exporter-toolkit format (`--web.config.file`) that every
//! official exporter reads, given here by `[server] web_config_file` or `--web.config.file`.
//!
//! This module owns reading and validating that YAML file into a typed [`WebConfig`], and
//! reading the PEM files it names (certificate, key, client CA) into rustls types — once at load
//! (so a key that does not match its certificate is a configuration error, exit 2) and again by
//! the HTTP server whenever the files change ([`TlsSettings::load_material`]).
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

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use serde_yaml_ng::Value;

use crate::config::error::KeyPath;
use crate::config::ConfigError;
use crate::secret::Secret;

/// The response headers exporter-toolkit lets a web config set, with the values it accepts
/// (`None`: any value).
pub const ALLOWED_HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Content-Security-Policy", None),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-XSS-Protection", None),
    ("Strict-Transport-Security", None),
];

/// Go's names of the TLS 1.2 cipher suites rustls implements, and the suite.
const TLS12_CIPHER_SUITES: &[(&str, rustls::SupportedCipherSuite)] = {
    use rustls::crypto::ring::cipher_suite::*;
    &[
        (
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ]
};

/// Go's TLS 1.3 suite names: Go accepts them in `cipher_suites` and ignores them (TLS 1.3
/// suites are not configurable there); so do we, with a warning.
const TLS13_CIPHER_SUITE_NAMES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Suites Go's `tls.CipherSuites()` lists that rustls does not implement (CBC modes and the
/// static-RSA key exchange, which has no forward secrecy).
const UNSUPPORTED_GO_CIPHER_SUITES: &[&str] = &[
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
];

/// Go's curve names and the rustls key-exchange group; `CurveP521` is Go's but not rustls'.
const CURVES: &[(&str, &dyn rustls::crypto::SupportedKxGroup)] = {
    use rustls::crypto::ring::kx_group::*;
    &[
        ("CurveP256", SECP256R1),
        ("CurveP384", SECP384R1),
        ("X25519", X25519),
    ]
};

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

/// The certificate, key and client CA as rustls uses them.
#[derive(Debug)]
pub struct TlsMaterial {
    pub certified_key: Arc<CertifiedKey>,
    pub client_roots: Option<Arc<RootCertStore>>,
}

/// A PEM file that cannot be used: which key of `tls_server_config` names it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsMaterialError {
    /// `cert_file`, `key_file`, `client_ca_file`, or the inline key (`cert`, `key`, `client_ca`).
    pub key: &'static str,
    pub reason: String,
}

impl fmt::Display for TlsMaterialError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "tls_server_config.{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for TlsMaterialError {}

impl TlsSettings {
    /// The files whose change means the material must be read again.
    pub fn watched_files(&self) -> Vec<&Path> {
        let mut files = Vec::new();
        if let PemSource::File(path) = &self.certificate {
            files.push(path.as_path());
        }
        if let KeySource::File(path) = &self.key {
            files.push(path.as_path());
        }
        if let Some(PemSource::File(path)) = &self.client_ca {
            files.push(path.as_path());
        }
        files
    }

    /// The ring provider with the configured cipher suites and curves (in the configured
    /// order), or rustls' defaults where the file sets none.
    pub fn crypto_provider(&self) -> CryptoProvider {
        let mut provider = rustls::crypto::ring::default_provider();
        if !self.cipher_suites.is_empty() {
            let mut suites: Vec<rustls::SupportedCipherSuite> = provider
                .cipher_suites
                .iter()
                .copied()
                .filter(|suite| suite.version() == &rustls::version::TLS13)
                .collect();
            suites.extend(self.cipher_suites.iter().filter_map(|name| {
                TLS12_CIPHER_SUITES
                    .iter()
                    .find(|(go_name, _)| go_name == name)
                    .map(|(_, suite)| *suite)
            }));
            provider.cipher_suites = suites;
        }
        if !self.curve_preferences.is_empty() {
            provider.kx_groups = self
                .curve_preferences
                .iter()
                .filter_map(|name| {
                    CURVES
                        .iter()
                        .find(|(go_name, _)| go_name == name)
                        .map(|(_, group)| *group)
                })
                .collect();
        }
        provider
    }

    /// The protocol versions from `min_version` to `max_version`.
    pub fn protocol_versions(&self) -> Vec<&'static rustls::SupportedProtocolVersion> {
        let mut versions = Vec::new();
        if self.min_version <= TlsVersion::Tls12 && self.max_version >= TlsVersion::Tls12 {
            versions.push(&rustls::version::TLS12);
        }
        if self.max_version >= TlsVersion::Tls13 {
            versions.push(&rustls::version::TLS13);
        }
        versions
    }

    /// Reads the certificate chain, the key (checked to match the certificate) and the client
    /// CA bundle.
    pub fn load_material(&self) -> Result<TlsMaterial, TlsMaterialError> {
        let (certificate_key, certificate_pem) = match &self.certificate {
            PemSource::File(path) => ("cert_file", read_file("cert_file", path)?),
            PemSource::Inline(text) => ("cert", text.clone().into_bytes()),
        };
        let chain = parse_certificates(&certificate_pem).map_err(|reason| TlsMaterialError {
            key: certificate_key,
            reason: format!("{}{reason}", source_prefix(&self.certificate)),
        })?;
        let (key_key, key_pem, key_shown) = match &self.key {
            KeySource::File(path) => (
                "key_file",
                read_file("key_file", path)?,
                format!("{}: ", path.display()),
            ),
            KeySource::Inline(secret) => {
                ("key", secret.expose().as_bytes().to_vec(), String::new())
            }
        };
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| TlsMaterialError {
            key: key_key,
            reason: format!(
                "{key_shown}no PEM private key (PKCS#8, PKCS#1 or SEC1) found: {}",
                describe_pem_error(&error)
            ),
        })?;
        drop(key_pem);
        let provider = self.crypto_provider();
        let certified_key = CertifiedKey::from_der(chain, key, &provider).map_err(|error| {
            let reason = match error {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
                    "{key_shown}the key does not match the certificate in {}",
                    describe_source(&self.certificate)
                ),
                other => format!("{key_shown}unusable private key: {other}"),
            };
            TlsMaterialError {
                key: key_key,
                reason,
            }
        })?;
        let client_roots = match &self.client_ca {
            None => None,
            Some(source) => {
                let (ca_key, pem) = match source {
                    PemSource::File(path) => ("client_ca_file", read_file("client_ca_file", path)?),
                    PemSource::Inline(text) => ("client_ca", text.clone().into_bytes()),
                };
                let certificates = parse_certificates(&pem).map_err(|reason| TlsMaterialError {
                    key: ca_key,
                    reason: format!("{}{reason}", source_prefix(source)),
                })?;
                let mut roots = RootCertStore::empty();
                for (index, certificate) in certificates.into_iter().enumerate() {
                    roots.add(certificate).map_err(|error| TlsMaterialError {
                        key: ca_key,
                        reason: format!(
                            "{}certificate {} is not a usable CA certificate: {error}",
                            source_prefix(source),
                            index + 1
                        ),
                    })?;
                }
                Some(Arc::new(roots))
            }
        };
        Ok(TlsMaterial {
            certified_key: Arc::new(certified_key),
            client_roots,
        })
    }
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsMaterialError> {
    std::fs::read(path).map_err(|error| TlsMaterialError {
        key,
        reason: format!("cannot read {}: {error}", path.display()),
    })
}

fn source_prefix(source: &PemSource) -> String {
    match source {
        PemSource::File(path) => format!("{}: ", path.display()),
        PemSource::Inline(_) => String::new(),
    }
}

fn describe_source(source: &PemSource) -> String {
    match source {
        PemSource::File(path) => path.display().to_string(),
        PemSource::Inline(_) => "cert".to_owned(),
    }
}

fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("not valid PEM: {}", describe_pem_error(&error)))?;
    if certificates.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) found".to_owned());
    }
    for (index, certificate) in certificates.iter().enumerate() {
        if let Err(error) = webpki::EndEntityCert::try_from(certificate) {
            return Err(format!(
                "certificate {} cannot be parsed: {error}",
                index + 1
            ));
        }
    }
    Ok(certificates)
}

/// A PEM error without any of the file's bytes (a key file's content is secret).
fn describe_pem_error(error: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::MissingSectionEnd { .. } => "a section has no END line".to_owned(),
        Error::IllegalSectionStart { .. } => "a BEGIN line is malformed".to_owned(),
        Error::Base64Decode(_) => "a section is not valid base64".to_owned(),
        Error::Io(error) => error.to_string(),
        Error::NoItemsFound => "no matching section".to_owned(),
        _ => "malformed".to_owned(),
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

struct Reader<'a> {
    path: &'a Path,
}

impl Reader<'_> {
    fn error(&self, key: &KeyPath, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(Some(self.path.display().to_string()), Some(key), reason)
    }

    /// The entries of a mapping (null counts as empty), every key checked against `allowed`.
    fn mapping<'v>(
        &self,
        value: &'v Value,
        key: &KeyPath,
        allowed: &[&str],
    ) -> Result<Vec<(&'v str, &'v Value)>, ConfigError> {
        let entries = match value {
            Value::Null => return Ok(Vec::new()),
            Value::Mapping(mapping) => mapping,
            other => {
                return Err(self.error(
                    key,
                    format!("expected a mapping of keys, found {}", kind_of(other)),
                ))
            }
        };
        let mut result = Vec::with_capacity(entries.len());
        for (name, entry) in entries {
            let Some(name) = name.as_str() else {
                return Err(self.error(key, "every key must be a string"));
            };
            if !allowed.is_empty() && !allowed.contains(&name) {
                return Err(self.error(
                    &key.field(name),
                    format!(
                        "unknown key \"{name}\"; expected one of: {}",
                        allowed.join(", ")
                    ),
                ));
            }
            result.push((name, entry));
        }
        Ok(result)
    }

    fn string(&self, value: &Value, key: &KeyPath) -> Result<String, ConfigError> {
        match value {
            Value::String(text) => Ok(text.clone()),
            Value::Null => Ok(String::new()),
            other => Err(self.error(key, format!("expected a string, found {}", kind_of(other)))),
        }
    }

    fn boolean(&self, value: &Value, key: &KeyPath) -> Result<bool, ConfigError> {
        match value {
            Value::Bool(flag) => Ok(*flag),
            other => Err(self.error(
                key,
                format!("expected true or false, found {}", kind_of(other)),
            )),
        }
    }

    fn strings(&self, value: &Value, key: &KeyPath) -> Result<Vec<String>, ConfigError> {
        match value {
            Value::Null => Ok(Vec::new()),
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(index, item)| self.string(item, &key.index(index)))
                .collect(),
            other => Err(self.error(
                key,
                format!("expected a list of strings, found {}", kind_of(other)),
            )),
        }
    }

    /// A file path relative to the web config's directory; empty means unset.
    fn path(
        &self,
        value: &Value,
        key: &KeyPath,
        directory: &Path,
    ) -> Result<Option<PathBuf>, ConfigError> {
        let text = self.string(value, key)?;
        let text = text.trim();
        Ok((!text.is_empty()).then(|| directory.join(text)))
    }

    fn tls_settings(
        &self,
        value: &Value,
        key: &KeyPath,
        directory: &Path,
        warnings: &mut Vec<String>,
    ) -> Result<Option<TlsSettings>, ConfigError> {
        let mut cert_file = None;
        let mut cert_inline = None;
        let mut key_file = None;
        let mut key_inline = None;
        let mut ca_file = None;
        let mut ca_inline = None;
        let mut client_auth_name = String::new();
        let mut allowed_sans = Vec::new();
        let mut allowed_sans_given = false;
        let mut min_version = TlsVersion::Tls12;
        let mut max_version = TlsVersion::Tls13;
        let mut cipher_suites = Vec::new();
        let mut prefer_server_cipher_suites = true;
        let mut curve_preferences = Vec::new();
        for (field, value) in self.mapping(value, key, TLS_KEYS)? {
            let field_key = key.field(field);
            match field {
                "cert_file" => cert_file = self.path(value, &field_key, directory)?,
                "key_file" => key_file = self.path(value, &field_key, directory)?,
                "client_ca_file" => ca_file = self.path(value, &field_key, directory)?,
                "cert" => cert_inline = Some(self.string(value, &field_key)?),
                "client_ca" => ca_inline = Some(self.string(value, &field_key)?),
                "key" => {
                    // Never echo it, not even in a type error.
                    let Value::String(text) = value else {
                        return Err(self.error(
                            &field_key,
                            "expected the PEM private key as a string (the value is not shown)",
                        ));
                    };
                    key_inline = Some(Secret::new(text.clone()));
                }
                "client_auth_type" => client_auth_name = self.string(value, &field_key)?,
                "client_allowed_sans" => {
                    allowed_sans_given = !value.is_null();
                    allowed_sans = self.strings(value, &field_key)?;
                }
                "min_version" => min_version = self.version(value, &field_key)?,
                "max_version" => max_version = self.version(value, &field_key)?,
                "cipher_suites" => {
                    for (index, name) in self.strings(value, &field_key)?.iter().enumerate() {
                        let item_key = field_key.index(index);
                        if let Some((go_name, _)) = TLS12_CIPHER_SUITES
                            .iter()
                            .find(|(go_name, _)| go_name == name)
                        {
                            cipher_suites.push(*go_name);
                        } else if TLS13_CIPHER_SUITE_NAMES.contains(&name.as_str()) {
                            warnings.push(format!(
                                "web config {}: {item_key} {name} has no effect: TLS 1.3 suites \
                                 are not configurable (as in exporter-toolkit)",
                                self.path.display()
                            ));
                        } else if UNSUPPORTED_GO_CIPHER_SUITES.contains(&name.as_str()) {
                            return Err(self.error(
                                &item_key,
                                format!(
                                    "cipher suite {name} is not supported: rustls implements no \
                                     CBC and no static-RSA suites; use one of {}",
                                    tls12_suite_names()
                                ),
                            ));
                        } else {
                            return Err(self.error(
                                &item_key,
                                format!(
                                    "unknown cipher suite \"{name}\"; expected one of {}",
                                    tls12_suite_names()
                                ),
                            ));
                        }
                    }
                }
                "prefer_server_cipher_suites" => {
                    prefer_server_cipher_suites = self.boolean(value, &field_key)?;
                }
                _ => {
                    for (index, name) in self.strings(value, &field_key)?.iter().enumerate() {
                        let item_key = field_key.index(index);
                        match CURVES.iter().find(|(go_name, _)| go_name == name) {
                            Some((go_name, _)) => curve_preferences.push(*go_name),
                            None if name == "CurveP521" => {
                                return Err(self.error(
                                    &item_key,
                                    "CurveP521 is not supported by rustls; use CurveP256, \
                                     CurveP384 or X25519",
                                ))
                            }
                            None => {
                                return Err(self.error(
                                    &item_key,
                                    format!(
                                        "unknown curve \"{name}\"; expected CurveP256, \
                                         CurveP384 or X25519"
                                    ),
                                ))
                            }
                        }
                    }
                }
            }
        }

        let cert_inline = cert_inline.filter(|text| !text.trim().is_empty());
        let key_inline = key_inline.filter(|secret| !secret.expose().trim().is_empty());
        let ca_inline = ca_inline.filter(|text| !text.trim().is_empty());
        for (file, inline, file_name, inline_name) in [
            (
                cert_file.is_some(),
                cert_inline.is_some(),
                "cert_file",
                "cert",
            ),
            (key_file.is_some(), key_inline.is_some(), "key_file", "key"),
            (
                ca_file.is_some(),
                ca_inline.is_some(),
                "client_ca_file",
                "client_ca",
            ),
        ] {
            if file && inline {
                return Err(self.error(
                    &key.field(inline_name),
                    format!("set either {file_name} or {inline_name}, not both"),
                ));
            }
        }
        let client_auth = ClientAuth::parse(client_auth_name.trim()).ok_or_else(|| {
            self.error(
                &key.field("client_auth_type"),
                format!(
                    "unknown client_auth_type \"{client_auth_name}\"; expected NoClientCert, \
                     RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or \
                     RequireAndVerifyClientCert"
                ),
            )
        })?;
        // exporter-toolkit's rule: any of these turns TLS on, and then both cert and key are
        // needed.
        let enabled = cert_file.is_some()
            || cert_inline.is_some()
            || key_file.is_some()
            || key_inline.is_some()
            || ca_file.is_some()
            || ca_inline.is_some()
            || !client_auth_name.trim().is_empty();
        if !enabled {
            if !value.is_null() {
                warnings.push(format!(
                    "web config {}: tls_server_config has no certificate and key, so TLS is off \
                     and /metrics is served over plain HTTP",
                    self.path.display()
                ));
            }
            return Ok(None);
        }
        let certificate = match (cert_file, cert_inline) {
            (Some(path), _) => PemSource::File(path),
            (None, Some(text)) => PemSource::Inline(text),
            (None, None) => {
                return Err(self.error(
                    &key.field("cert_file"),
                    "missing: TLS needs cert_file (or cert) and key_file (or key)",
                ))
            }
        };
        let private_key = match (key_file, key_inline) {
            (Some(path), _) => KeySource::File(path),
            (None, Some(secret)) => KeySource::Inline(secret),
            (None, None) => {
                return Err(self.error(
                    &key.field("key_file"),
                    "missing: TLS needs cert_file (or cert) and key_file (or key)",
                ))
            }
        };
        let client_ca = match (ca_file, ca_inline) {
            (Some(path), _) => Some(PemSource::File(path)),
            (None, Some(text)) => Some(PemSource::Inline(text)),
            (None, None) => None,
        };
        if client_ca.is_some() && client_auth == ClientAuth::NoClientCert {
            return Err(self.error(
                &key.field("client_auth_type"),
                "client_ca_file is set but client_auth_type is NoClientCert; set \
                 client_auth_type: RequireAndVerifyClientCert to check client certificates",
            ));
        }
        if client_auth.verifies() && client_ca.is_none() {
            return Err(self.error(
                &key.field("client_ca_file"),
                format!(
                    "client_auth_type {} needs client_ca_file (or client_ca): the CA that \
                     signs client certificates (Go would fall back to the system's public \
                     CAs, which is never what a metrics endpoint wants)",
                    client_auth.name()
                ),
            ));
        }
        if allowed_sans_given {
            if !client_auth.requires_certificate() {
                return Err(self.error(
                    &key.field("client_allowed_sans"),
                    "client_allowed_sans requires client_auth_type to be one of \
                     RequireAnyClientCert or RequireAndVerifyClientCert",
                ));
            }
            for (index, san) in allowed_sans.iter().enumerate() {
                if san.contains('@') && !san.contains("://") {
                    return Err(self.error(
                        &key.field("client_allowed_sans").index(index),
                        format!(
                            "\"{san}\" looks like an e-mail address; e-mail SANs cannot be \
                             matched by this build (rustls exposes DNS, IP and URI SANs); list a \
                             DNS name, IP address or URI of the client certificate"
                        ),
                    ));
                }
            }
            if allowed_sans.is_empty() {
                return Err(self.error(
                    &key.field("client_allowed_sans"),
                    "is empty: no client certificate could match; remove the key or list the \
                     allowed SANs",
                ));
            }
        }
        if min_version > max_version {
            return Err(self.error(
                &key.field("min_version"),
                format!(
                    "min_version {} is above max_version {}",
                    min_version.name(),
                    max_version.name()
                ),
            ));
        }
        if !cipher_suites.is_empty() && min_version == TlsVersion::Tls13 {
            warnings.push(format!(
                "web config {}: cipher_suites has no effect with min_version TLS13",
                self.path.display()
            ));
        }
        let mut seen = BTreeSet::new();
        cipher_suites.retain(|name| seen.insert(*name));
        let mut seen = BTreeSet::new();
        curve_preferences.retain(|name| seen.insert(*name));
        let settings = TlsSettings {
            certificate,
            key: private_key,
            client_auth,
            client_ca,
            client_allowed_sans: allowed_sans,
            min_version,
            max_version,
            cipher_suites,
            prefer_server_cipher_suites,
            curve_preferences,
        };
        settings
            .load_material()
            .map_err(|error| self.error(&key.field(error.key), error.reason))?;
        Ok(Some(settings))
    }

    fn version(&self, value: &Value, key: &KeyPath) -> Result<TlsVersion, ConfigError> {
        let name = self.string(value, key)?;
        match name.trim() {
            "TLS12" => Ok(TlsVersion::Tls12),
            "TLS13" => Ok(TlsVersion::Tls13),
            "TLS10" | "TLS11" => Err(self.error(
                key,
                format!("{name} is not supported: rustls speaks only TLS12 and TLS13"),
            )),
            _ => Err(self.error(
                key,
                format!("unknown TLS version \"{name}\"; expected TLS12 or TLS13"),
            )),
        }
    }

    fn headers(&self, value: &Value, key: &KeyPath) -> Result<Vec<(String, String)>, ConfigError> {
        let mut headers = Vec::new();
        for (name, value) in self.mapping(value, key, &[])? {
            let header_key = key.field(name);
            let Some((canonical, allowed_values)) =
                ALLOWED_HEADERS.iter().find(|(allowed, _)| *allowed == name)
            else {
                let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(name, _)| *name).collect();
                return Err(self.error(
                    &header_key,
                    format!(
                        "HTTP header \"{name}\" can not be configured; expected one of: {}",
                        names.join(", ")
                    ),
                ));
            };
            let text = self.string(value, &header_key)?;
            if let Some(allowed_values) = allowed_values {
                if !allowed_values.contains(&text.as_str()) {
                    return Err(self.error(
                        &header_key,
                        format!(
                            "invalid value \"{text}\"; expected one of: {}",
                            allowed_values.join(", ")
                        ),
                    ));
                }
            }
            if text.is_empty() {
                continue;
            }
            if hyper::header::HeaderValue::from_str(&text).is_err() {
                return Err(self.error(
                    &header_key,
                    "not a valid header value (control characters or non-ASCII)",
                ));
            }
            headers.push(((*canonical).to_owned(), text));
        }
        Ok(headers)
    }

    fn users(&self, value: &Value, key: &KeyPath) -> Result<Vec<BasicAuthUser>, ConfigError> {
        let mut users = Vec::new();
        for (name, value) in self.mapping(value, key, &[])? {
            let user_key = key.field(name);
            if name.is_empty() || name.contains(':') {
                return Err(self.error(
                    &user_key,
                    "a user name must be non-empty and contain no ':' (basic auth splits on it)",
                ));
            }
            let Value::String(hash) = value else {
                return Err(self.error(
                    &user_key,
                    "expected a bcrypt hash string (the value is not shown)",
                ));
            };
            let hash = hash.trim();
            let prefix_ok = ["$2a$", "$2b$", "$2y$"]
                .iter()
                .any(|prefix| hash.starts_with(prefix));
            let parts = hash.parse::<bcrypt::HashParts>();
            let cost = match (prefix_ok, parts) {
                (true, Ok(parts)) => parts.get_cost(),
                _ => {
                    return Err(self.error(
                        &user_key,
                        "not a bcrypt hash (the value is not shown): expected $2y$, $2b$ or \
                         $2a$ and a cost, as `htpasswd -nbBC 10 USER PASSWORD` writes; \
                         store the hash, never the password",
                    ))
                }
            };
            users.push(BasicAuthUser {
                name: name.to_owned(),
                hash: Secret::new(hash),
                cost,
            });
        }
        users.sort_by(|left, right| left.name.cmp(&right.name));
        Ok(users)
    }
}

fn tls12_suite_names() -> String {
    let names: Vec<&str> = TLS12_CIPHER_SUITES.iter().map(|(name, _)| *name).collect();
    names.join(", ")
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The web config as `check-config` shows it: commented YAML, every path and setting, and for
/// each user only the hash's cost; never a hash, never a key.
pub(crate) fn render_redacted(web: &WebConfig) -> String {
    use fmt::Write as _;
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
