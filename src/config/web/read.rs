//! The YAML walk of a web config: every key checked against the ones exporter-toolkit knows,
//! every value typed and validated, each error located at its key path and never quoting a
//! hash or a key.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::material::{
    CURVES, TLS12_CIPHER_SUITES, TLS13_CIPHER_SUITE_NAMES, UNSUPPORTED_GO_CIPHER_SUITES,
};
use super::{
    BasicAuthUser, ClientAuth, KeySource, PemSource, TlsSettings, TlsVersion, ALLOWED_HEADERS,
    TLS_KEYS,
};
use crate::config::error::KeyPath;
use crate::config::token::readable_by_others_mode;
use crate::config::ConfigError;
use crate::secret::Secret;

pub(super) struct Reader<'a> {
    pub(super) path: &'a Path,
}

impl Reader<'_> {
    /// An error at `key` (or about the whole file, at the root).
    pub(super) fn error(&self, key: &KeyPath, reason: impl Into<String>) -> ConfigError {
        let key = (!key.is_root()).then_some(key);
        ConfigError::new(Some(self.path.display().to_string()), key, reason)
    }

    /// The entries of a mapping (null counts as empty), every key checked against `allowed`.
    pub(super) fn mapping<'v>(
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

    pub(super) fn boolean(&self, value: &Value, key: &KeyPath) -> Result<bool, ConfigError> {
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

    pub(super) fn tls_settings(
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
            (Some(path), _) => {
                if let Some(mode) = std::fs::metadata(&path)
                    .ok()
                    .and_then(|metadata| readable_by_others_mode(&metadata))
                {
                    warnings.push(format!(
                        "web config {}: key_file {} is readable by group or others (mode \
                         {mode:04o}); restrict it with chmod 600",
                        self.path.display(),
                        path.display()
                    ));
                }
                KeySource::File(path)
            }
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

    pub(super) fn headers(
        &self,
        value: &Value,
        key: &KeyPath,
    ) -> Result<Vec<(String, String)>, ConfigError> {
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

    pub(super) fn users(
        &self,
        value: &Value,
        key: &KeyPath,
    ) -> Result<Vec<BasicAuthUser>, ConfigError> {
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
