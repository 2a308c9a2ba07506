//! Every bad web config is refused by the real binary with exit status 2 and one message that
//! names the web config file and the key (like every other configuration error), and never
//! quotes a password hash or a private key; `check-config` prints a good web config with the
//! hashes and keys left out. Covers `[server] web_config_file`, its `KEYMON_SERVER__*`
//! override, and `--web.config.file` on `check-config`, `run` and `demo`.

mod support;

use std::path::Path;
use std::process::Command;

use support::process::BINARY;
use support::tls::*;

const HASH_MARKER: &str = "$2y$04$";

fn command(arguments: &[&str], directory: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(arguments)
        .current_dir(directory)
        .env_remove("RUST_LOG")
        .env_remove("KEYMON_CONFIG")
        .env_remove("COMETAPI_ACCESS_TOKEN");
    command
}

/// A directory with a token, a keymon.toml pointing at web.yml, and a good certificate pair
/// (`server.crt`/`server.key`) plus a pair whose key does not match (`other.key`).
fn directory_with_config() -> tempfile::TempDir {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path();
    write(path, "token", "tok-web-config-test\n");
    std::fs::set_permissions(
        path.join("token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    write(
        path,
        "keymon.toml",
        "[server]\nlisten = \"127.0.0.1:0\"\nweb_config_file = \"web.yml\"\n\n\
         [[accounts]]\nname = \"main\"\nbase_url = \"http://127.0.0.1:9\"\ntoken_file = \"token\"\n",
    );
    let ca = TestCa::new("test CA");
    write_pair(path, &ca.server("keymon"));
    write(path, "other.key", &ca.server("other").key);
    write(path, "ca.crt", &ca.certificate);
    write(path, "garbage.pem", "this is not PEM\n");
    std::fs::create_dir(path.join("a-directory")).unwrap();
    directory
}

const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

/// (what, web.yml, the key the message must name, a fragment of the reason)
fn bad_web_configs() -> Vec<(&'static str, String, &'static str, &'static str)> {
    let hash = bcrypt_hash("pw").replacen("$2b$", "$2y$", 1);
    vec![
        ("unknown top-level key", "tls_config:\n  cert_file: x\n".into(), "tls_config", "unknown key"),
        ("unknown TLS key", "tls_server_config:\n  certfile: server.crt\n".into(), "tls_server_config.certfile", "unknown key"),
        ("unknown HTTP key", "http_server_config:\n  http3: true\n".into(), "http_server_config.http3", "unknown key"),
        ("missing cert_file", "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n".into(), "tls_server_config.cert_file", "cannot read"),
        ("unreadable key_file", "tls_server_config:\n  cert_file: server.crt\n  key_file: a-directory\n".into(), "tls_server_config.key_file", "cannot read"),
        ("cert_file not PEM", "tls_server_config:\n  cert_file: garbage.pem\n  key_file: server.key\n".into(), "tls_server_config.cert_file", "no PEM certificate"),
        ("key_file not a key", "tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n".into(), "tls_server_config.key_file", "no PEM private key"),
        ("key that does not match", "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n".into(), "tls_server_config.key_file", "does not match the certificate"),
        ("key without certificate", "tls_server_config:\n  key_file: server.key\n".into(), "tls_server_config.cert_file", "missing"),
        ("certificate without key", "tls_server_config:\n  cert_file: server.crt\n".into(), "tls_server_config.key_file", "missing"),
        ("unknown client_auth_type", format!("{TLS}  client_auth_type: Sometimes\n"), "tls_server_config.client_auth_type", "unknown client_auth_type"),
        ("verify without a CA", format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n"), "tls_server_config.client_ca_file", "needs client_ca_file"),
        ("CA without a policy", format!("{TLS}  client_ca_file: ca.crt\n"), "tls_server_config.client_auth_type", "NoClientCert"),
        ("SANs without a required certificate", format!("{TLS}  client_ca_file: ca.crt\n  client_auth_type: VerifyClientCertIfGiven\n  client_allowed_sans: [a.example]\n"), "tls_server_config.client_allowed_sans", "requires client_auth_type"),
        ("e-mail SAN", format!("{TLS}  client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: [ops@example.com]\n"), "tls_server_config.client_allowed_sans[0]", "e-mail"),
        ("TLS 1.1", format!("{TLS}  min_version: TLS11\n"), "tls_server_config.min_version", "only TLS12 and TLS13"),
        ("unknown version", format!("{TLS}  max_version: TLS14\n"), "tls_server_config.max_version", "unknown TLS version"),
        ("min above max", format!("{TLS}  min_version: TLS13\n  max_version: TLS12\n"), "tls_server_config.min_version", "above max_version"),
        ("CBC suite", format!("{TLS}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n"), "tls_server_config.cipher_suites[1]", "rustls implements no CBC"),
        ("invented suite", format!("{TLS}  cipher_suites: [TLS_MADE_UP]\n"), "tls_server_config.cipher_suites[0]", "unknown cipher suite"),
        ("curve P-521", format!("{TLS}  curve_preferences: [X25519, CurveP521]\n"), "tls_server_config.curve_preferences[1]", "CurveP521 is not supported"),
        ("unknown curve", format!("{TLS}  curve_preferences: [CurveP999]\n"), "tls_server_config.curve_preferences[0]", "unknown curve"),
        ("prefer_server_cipher_suites not a boolean", format!("{TLS}  prefer_server_cipher_suites: maybe\n"), "tls_server_config.prefer_server_cipher_suites", "expected true or false"),
        ("header not allowed", "http_server_config:\n  headers:\n    X-Powered-By: keymon\n".into(), "http_server_config.headers.X-Powered-By", "can not be configured"),
        ("header value not allowed", "http_server_config:\n  headers:\n    X-Frame-Options: allowall\n".into(), "http_server_config.headers.X-Frame-Options", "expected one of: deny, sameorigin"),
        ("http2 not a boolean", "http_server_config:\n  http2: 1\n".into(), "http_server_config.http2", "expected true or false"),
        ("password instead of a hash", "basic_auth_users:\n  prometheus: hunter2-plain\n".into(), "basic_auth_users.prometheus", "not a bcrypt hash"),
        ("apr1 (MD5) hash", "basic_auth_users:\n  prometheus: $apr1$abcdefgh$0123456789abcdefghijkl\n".into(), "basic_auth_users.prometheus", "not a bcrypt hash"),
        ("truncated bcrypt hash", format!("basic_auth_users:\n  prometheus: \"{}\"\n", &hash[..20]), "basic_auth_users.prometheus", "not a bcrypt hash"),
        ("user name with a colon", format!("basic_auth_users:\n  \"a:b\": \"{hash}\"\n"), "basic_auth_users.a:b", "no ':'"),
        ("users not a mapping", "basic_auth_users: [prometheus]\n".into(), "basic_auth_users", "expected a mapping"),
        ("rate_limit", "rate_limit:\n  interval: 1s\n  burst: 10\n".into(), "rate_limit", "not supported"),
    ]
}

#[test]
fn every_bad_web_config_exits_2_naming_the_file_and_the_key() {
    let directory = directory_with_config();
    let web = directory.path().join("web.yml");
    for (what, yaml, key, reason) in bad_web_configs() {
        std::fs::write(&web, &yaml).unwrap();
        // keymon.toml is given relative, so is the web config it names.
        let output = command(
            &["check-config", "--config", "keymon.toml"],
            directory.path(),
        )
        .output()
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{what}: {stderr}");
        let expected = format!("config error in web.yml: key \"{key}\": ");
        assert!(
            stderr.contains(&expected) && stderr.contains(reason),
            "{what}: expected `{expected}…{reason}…`, got:\n{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
        for secret in ["hunter2-plain", HASH_MARKER, "$apr1$", "PRIVATE KEY"] {
            assert!(
                !stderr.contains(secret),
                "{what}: leaked {secret}: {stderr}"
            );
        }
        assert!(output.stdout.is_empty(), "{what}: nothing on stdout");
    }
}

#[test]
fn a_yaml_syntax_error_and_a_missing_file_name_where_they_are() {
    let directory = directory_with_config();
    let path = directory.path();
    std::fs::write(
        path.join("web.yml"),
        "tls_server_config:\n  cert_file: [unclosed\n",
    )
    .unwrap();
    let output = command(&["check-config", "--config", "keymon.toml"], path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("config error in web.yml: not a valid web config (YAML) at line"),
        "{stderr}"
    );

    // A file that is YAML but not a mapping is about the whole file, not a key.
    std::fs::write(path.join("web.yml"), "- tls_server_config\n").unwrap();
    let output = command(&["check-config", "--config", "keymon.toml"], path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("config error in web.yml: expected a mapping of keys, found a list"),
        "{stderr}"
    );

    std::fs::remove_file(path.join("web.yml")).unwrap();
    let output = command(&["check-config", "--config", "keymon.toml"], path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("config error in keymon.toml: key \"server.web_config_file\": cannot read the web config file"),
        "{stderr}"
    );

    // The same through the environment override names the variable.
    let output = command(&["check-config", "--config", "keymon.toml"], path)
        .env("KEYMON_SERVER__WEB_CONFIG_FILE", "elsewhere.yml")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "environment variable KEYMON_SERVER__WEB_CONFIG_FILE: key \"server.web_config_file\""
        ) && stderr.contains("elsewhere.yml"),
        "{stderr}"
    );
}

#[test]
fn run_and_demo_refuse_a_bad_web_config_flag_with_exit_2() {
    let directory = directory_with_config();
    let path = directory.path();
    write(path, "web.yml", TLS);
    write(
        path,
        "bad.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n",
    );
    for arguments in [
        &[
            "run",
            "--config",
            "keymon.toml",
            "--web.config.file",
            "bad.yml",
        ][..],
        &[
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--keys",
            "3",
            "--web.config.file",
            "bad.yml",
        ][..],
        &[
            "check-config",
            "--config",
            "keymon.toml",
            "--web.config.file",
            "bad.yml",
        ][..],
    ] {
        let output = command(arguments, path).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{arguments:?}: {stderr}");
        assert!(
            stderr.contains("config error in bad.yml: key \"tls_server_config.key_file\": ")
                && stderr.contains("does not match the certificate"),
            "{arguments:?}: {stderr}"
        );
    }
}

#[test]
fn check_config_shows_the_web_config_without_hashes_or_keys() {
    let directory = directory_with_config();
    let path = directory.path();
    let ca = TestCa::new("inline CA");
    let inline = ca.server("inline");
    let hash = bcrypt_hash("pw");
    let indented_key: String = inline
        .key
        .lines()
        .map(|line| format!("    {line}\n"))
        .collect();
    write(
        path,
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key: |\n{indented_key}  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
             min_version: TLS13\n  curve_preferences: [X25519, CurveP256]\n\
             http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n\
             basic_auth_users:\n  prometheus: \"{hash}\"\n"
        ),
    );
    // The inline key belongs to another certificate: refused, without showing it.
    let output = command(&["check-config", "--config", "keymon.toml"], path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("key \"tls_server_config.key\": the key does not match"),
        "{stderr}"
    );
    assert!(!stderr.contains("PRIVATE KEY"));

    // With the matching certificate inline as well, it is accepted and shown redacted.
    let text = std::fs::read_to_string(path.join("web.yml")).unwrap();
    let indented_cert: String = inline
        .certificate
        .lines()
        .map(|line| format!("    {line}\n"))
        .collect();
    write(
        path,
        "web.yml",
        &text.replace(
            "  cert_file: server.crt\n",
            &format!("  cert: |\n{indented_cert}"),
        ),
    );
    let output = command(&["check-config", "--config", "keymon.toml"], path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    for expected in [
        "web_config_file = \"web.yml\"",
        "#     cert: (inline PEM)",
        "#     key: (inline, not shown)",
        "#     client_auth_type: RequireAndVerifyClientCert",
        "#     client_ca_file: ca.crt",
        "#     min_version: TLS13",
        "#     curve_preferences: [X25519, CurveP256]",
        "#     http2: false",
        "#       X-Frame-Options: deny",
        "#     prometheus: (bcrypt hash, cost 4, not shown)",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }
    assert!(!stdout.contains(&hash[7..]), "the hash leaked:\n{stdout}");
    assert!(!stdout.contains("PRIVATE KEY") && !stdout.contains("BEGIN"));
}
