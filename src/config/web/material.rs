//! The PEM files a web config names, read into what rustls uses: the certificate chain, the
//! private key (checked to match the certificate), the client CA bundle; and the Go names of
//! cipher suites and curves mapped to the ring provider's. Used once at load (a bad file is a
//! configuration error) and again by `http::tls` whenever the files change.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use super::{KeySource, PemSource, TlsSettings, TlsVersion};

/// Go's names of the TLS 1.2 cipher suites rustls implements, and the suite.
pub(super) const TLS12_CIPHER_SUITES: &[(&str, rustls::SupportedCipherSuite)] = {
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
pub(super) const TLS13_CIPHER_SUITE_NAMES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Suites Go's `tls.CipherSuites()` lists that rustls does not implement (CBC modes and the
/// static-RSA key exchange, which has no forward secrecy).
pub(super) const UNSUPPORTED_GO_CIPHER_SUITES: &[&str] = &[
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
pub(super) const CURVES: &[(&str, &dyn rustls::crypto::SupportedKxGroup)] = {
    use rustls::crypto::ring::kx_group::*;
    &[
        ("CurveP256", SECP256R1),
        ("CurveP384", SECP384R1),
        ("X25519", X25519),
    ]
};

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
