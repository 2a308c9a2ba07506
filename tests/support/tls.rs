//! Certificates made in the test (rcgen): a CA, server and client certificates it signs, and
//! web config files; HTTPS clients that trust only that CA, with or without a client
//! certificate; bcrypt hashes at the lowest cost (the tests check behaviour, not bcrypt's
//! speed).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The lowest bcrypt cost: fast in a debug build, still a real bcrypt hash.
pub const TEST_BCRYPT_COST: u32 = 4;

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct Pair {
    pub certificate: String,
    pub key: String,
}

pub struct TestCa {
    pub certificate: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key).unwrap().pem();
        TestCa {
            certificate,
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, common_name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Pair {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = sans.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let certificate = params.signed_by(&key, &self.issuer).unwrap().pem();
        Pair {
            certificate,
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self, common_name: &str) -> Pair {
        self.issue(
            common_name,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with these SANs (DNS names, IPs).
    pub fn client(&self, sans: &[&str]) -> Pair {
        self.issue("scraper", sans, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Writes `text` to `directory/name` and returns the path.
pub fn write(directory: &Path, name: &str, text: &str) -> PathBuf {
    let path = directory.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes the pair as `server.crt` / `server.key` (owner-only, as a key should be).
pub fn write_pair(directory: &Path, pair: &Pair) {
    write(directory, "server.crt", &pair.certificate);
    write_key(directory, "server.key", &pair.key);
}

/// Writes a private key, mode 0600.
pub fn write_key(directory: &Path, name: &str, key: &str) -> PathBuf {
    let path = write(directory, name, key);
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

pub fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, TEST_BCRYPT_COST).unwrap()
}

/// An HTTPS client trusting only `ca`, with `client` as its certificate when given.
pub fn https_client(ca: &str, client: Option<&Pair>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_gzip()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(10));
    if let Some(pair) = client {
        let identity =
            reqwest::Identity::from_pem(format!("{}{}", pair.certificate, pair.key).as_bytes())
                .unwrap();
        builder = builder.identity(identity);
    }
    builder.build().unwrap()
}

/// The DER of the certificate the server presented on this response's connection.
pub fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("TLS info with the peer certificate")
        .to_vec()
}

/// The DER of a PEM certificate.
pub fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}
