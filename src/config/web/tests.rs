//! The web config's typed values, defaults, warnings and the rustls settings they become. The
//! error messages (file, key, reason) are checked through the binary in
//! tests/web_config_errors.rs.

use super::*;

/// A directory with a self-signed pair (`server.crt`, `server.key`) and `web.yml` = `yaml`.
fn load(
    yaml: &str,
) -> (
    tempfile::TempDir,
    Result<WebConfig, ConfigError>,
    Vec<String>,
) {
    let directory = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(directory.path().join("server.crt"), certificate.pem()).unwrap();
    std::fs::write(directory.path().join("server.key"), key.serialize_pem()).unwrap();
    set_mode(&directory.path().join("server.key"), 0o600);
    std::fs::write(directory.path().join("ca.crt"), certificate.pem()).unwrap();
    let path = directory.path().join("web.yml");
    std::fs::write(&path, yaml).unwrap();
    let mut warnings = Vec::new();
    let result = load_web_config(&path, None, &mut warnings);
    (directory, result, warnings)
}

fn set_mode(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

#[test]
fn defaults_are_the_toolkits_and_paths_are_relative_to_the_web_config() {
    let (directory, web, warnings) = load(TLS);
    let web = web.unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(web.http2);
    assert!(web.users.is_empty() && web.headers.is_empty());
    let tls = web.tls.unwrap();
    assert_eq!(
        tls.certificate,
        PemSource::File(directory.path().join("server.crt"))
    );
    assert_eq!(
        tls.key,
        KeySource::File(directory.path().join("server.key"))
    );
    assert_eq!(tls.client_auth, ClientAuth::NoClientCert);
    assert_eq!(
        (tls.min_version, tls.max_version),
        (TlsVersion::Tls12, TlsVersion::Tls13)
    );
    assert!(tls.prefer_server_cipher_suites);
    assert_eq!(
        tls.watched_files(),
        [
            directory.path().join("server.crt").as_path(),
            directory.path().join("server.key").as_path()
        ]
    );
    let versions = tls.protocol_versions();
    assert_eq!(versions.len(), 2);
    let provider = tls.crypto_provider();
    assert_eq!(
        provider.cipher_suites.len(),
        rustls::crypto::ring::DEFAULT_CIPHER_SUITES.len()
    );
}

#[test]
fn cipher_suites_and_curves_are_offered_in_the_configured_order() {
    let (_directory, web, _) = load(&format!(
        "{TLS}  cipher_suites:\n    - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n    \
         - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n    - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n  \
         curve_preferences: [CurveP384, X25519]\n  prefer_server_cipher_suites: false\n"
    ));
    let tls = web.unwrap().tls.unwrap();
    assert_eq!(
        tls.cipher_suites,
        [
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        ],
        "duplicates dropped, order kept"
    );
    assert!(!tls.prefer_server_cipher_suites);
    let provider = tls.crypto_provider();
    let tls12: Vec<rustls::CipherSuite> = provider
        .cipher_suites
        .iter()
        .filter(|suite| suite.version() == &rustls::version::TLS12)
        .map(|suite| suite.suite())
        .collect();
    assert_eq!(
        tls12,
        [
            rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        ]
    );
    assert_eq!(
        provider
            .cipher_suites
            .iter()
            .filter(|suite| suite.version() == &rustls::version::TLS13)
            .count(),
        3,
        "TLS 1.3 suites are not configurable and all stay"
    );
    let groups: Vec<rustls::NamedGroup> = provider
        .kx_groups
        .iter()
        .map(|group| group.name())
        .collect();
    assert_eq!(
        groups,
        [rustls::NamedGroup::secp384r1, rustls::NamedGroup::X25519]
    );
}

#[test]
fn versions_narrow_the_protocols() {
    for (extra, expected) in [
        (
            "  min_version: TLS13\n",
            vec![rustls::ProtocolVersion::TLSv1_3],
        ),
        (
            "  max_version: TLS12\n",
            vec![rustls::ProtocolVersion::TLSv1_2],
        ),
    ] {
        let (_directory, web, _) = load(&format!("{TLS}{extra}"));
        let versions: Vec<rustls::ProtocolVersion> = web
            .unwrap()
            .tls
            .unwrap()
            .protocol_versions()
            .iter()
            .map(|version| version.version)
            .collect();
        assert_eq!(versions, expected, "{extra}");
    }
}

#[test]
fn what_go_ignores_is_accepted_with_a_warning() {
    let (_directory, web, warnings) =
        load(&format!("{TLS}  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"));
    assert!(web.unwrap().tls.unwrap().cipher_suites.is_empty());
    assert!(
        warnings
            .iter()
            .any(|warning| warning.contains("TLS_AES_128_GCM_SHA256 has no effect")),
        "{warnings:?}"
    );
    // TLS settings without a certificate: TLS is off, as in exporter-toolkit, and said so.
    let (_directory, web, warnings) = load("tls_server_config:\n  min_version: TLS13\n");
    assert!(web.unwrap().tls.is_none());
    assert!(warnings
        .iter()
        .any(|warning| warning.contains("TLS is off")));
    // Passwords without TLS travel in clear text.
    let hash = bcrypt::hash("pw", 4).unwrap();
    let (_directory, web, warnings) = load(&format!("basic_auth_users:\n  u: \"{hash}\"\n"));
    assert_eq!(web.unwrap().users.len(), 1);
    assert!(warnings
        .iter()
        .any(|warning| warning.contains("clear text")));
}

#[test]
fn the_old_client_auth_name_and_every_bcrypt_prefix_are_accepted() {
    let (directory, web, _) = load(&format!(
        "{TLS}  client_auth_type: RequireClientCert\n  client_ca_file: ca.crt\n"
    ));
    let tls = web.unwrap().tls.unwrap();
    assert_eq!(tls.client_auth, ClientAuth::RequireAnyClientCert);
    assert_eq!(
        tls.client_ca,
        Some(PemSource::File(directory.path().join("ca.crt")))
    );
    let hash = bcrypt::hash("pw", 5).unwrap();
    let suffix = hash.strip_prefix("$2b$").unwrap();
    let (_directory, web, _) = load(&format!(
        "basic_auth_users:\n  b: \"$2b${suffix}\"\n  a: \"$2a${suffix}\"\n  y: \"$2y${suffix}\"\n"
    ));
    let users = web.unwrap().users;
    let names: Vec<&str> = users.iter().map(|user| user.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "y"], "sorted by name");
    assert!(users.iter().all(|user| user.cost == 5));
    for user in &users {
        assert!(
            bcrypt::verify("pw", user.hash.expose()).unwrap(),
            "{}",
            user.name
        );
    }
}

#[test]
fn debug_output_never_shows_a_hash_or_an_inline_key() {
    let directory = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let indent =
        |pem: &str| -> String { pem.lines().map(|line| format!("    {line}\n")).collect() };
    let hash = bcrypt::hash("pw", 4).unwrap();
    let yaml = format!(
        "tls_server_config:\n  cert: |\n{}  key: |\n{}basic_auth_users:\n  u: \"{hash}\"\n",
        indent(&certificate.pem()),
        indent(&key.serialize_pem())
    );
    let path = directory.path().join("web.yml");
    std::fs::write(&path, yaml).unwrap();
    let web = load_web_config(&path, None, &mut Vec::new()).unwrap();
    let debug = format!("{web:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    assert!(!debug.contains(&hash), "{debug}");
    let rendered = render_redacted(&web);
    assert!(!rendered.contains("PRIVATE KEY") && !rendered.contains(&hash));
    assert!(web.tls.unwrap().load_material().is_ok());
}

#[test]
fn an_empty_header_value_means_unset() {
    let (_directory, web, _) = load(
        "http_server_config:\n  headers:\n    Content-Security-Policy: \"\"\n    \
         X-XSS-Protection: \"1; mode=block\"\n",
    );
    assert_eq!(
        web.unwrap().headers,
        [("X-XSS-Protection".to_owned(), "1; mode=block".to_owned())]
    );
}

#[test]
fn a_key_file_readable_by_others_is_a_warning() {
    let (directory, web, warnings) = load(TLS);
    assert!(web.is_ok() && warnings.is_empty(), "{warnings:?}");
    set_mode(&directory.path().join("server.key"), 0o644);
    let mut warnings = Vec::new();
    load_web_config(&directory.path().join("web.yml"), None, &mut warnings).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("server.key is readable by group or others (mode 0644)"),
        "{warnings:?}"
    );
}
