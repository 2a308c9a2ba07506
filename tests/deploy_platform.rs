//! The deployment kit under `deploy/` as the tools an operator uses see it: the systemd unit
//! through `systemd-analyze verify` and `systemd-analyze security --offline=yes` (exposure at
//! most 2.0), the shipped config files through the real binary's `check-config`, the kustomize
//! base through `kubectl kustomize` and `kubernetes-validate --strict`, and the facts an
//! operator relies on (one replica that is recreated, never two writers; non-root, read-only,
//! no capabilities; probes; the token and config where the config says; the ServiceMonitor
//! finding the Service). The Dockerfile is checked for its structure only: no Docker engine runs
//! here. A missing tool skips its tests with one line naming it and how to install it, and fails
//! them under CI=true (`support::tools`; `.ci/run` installs every tool).
//! The TLS kit (the shipped web configs, the unit's commented credentials, the overlay
//! `deploy/kubernetes-tls`) goes through `promtool check web-config`, `check-config`,
//! `systemd-analyze verify`, `kubectl kustomize` and `kubernetes-validate --strict` as well.
//!
//! Longer than our usual ~600 lines on purpose: one test per fact of the deployment kit.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::tools;

const BINARY: &str = env!("CARGO_BIN_EXE_cometapi-keymon");
const REPOSITORY: &str = env!("CARGO_MANIFEST_DIR");

const UNIT_FILE_NAME: &str = "cometapi-keymon.service";
const SHIPPED_EXEC_START: &str = "ExecStart=/usr/local/bin/cometapi-keymon run";
const SYSTEMD_TOKEN_PATH: &str = "/run/credentials/cometapi-keymon.service/token";
const KUBERNETES_TOKEN_PATH: &str = "/etc/cometapi-keymon/token";
const HIGHEST_ACCEPTED_EXPOSURE: f64 = 2.0;
const MONITORING_GROUP: &str = "monitoring.coreos.com/";
const SYSTEMD_WEB_CONFIG_PATH: &str = "/run/credentials/cometapi-keymon.service/web.yml";
const SHIPPED_WEB_CONFIGS: [&str; 2] = ["deploy/systemd/web.yml", "deploy/kubernetes-tls/web.yml"];
const TLS_SECRET: &str = "cometapi-keymon-tls";

fn repository_path(relative: &str) -> PathBuf {
    Path::new(REPOSITORY).join(relative)
}

fn read_repository_file(relative: &str) -> String {
    std::fs::read_to_string(repository_path(relative))
        .unwrap_or_else(|error| panic!("cannot read {relative}: {error}"))
}

/// The tool's path on PATH. Every test that reaches here started with `tools_available` for
/// it, which skips the test (or, under CI=true, fails it) when the tool is missing.
fn require_tool(name: &str, how_to_install: &str) -> PathBuf {
    tools::find_on_path(name).unwrap_or_else(|| {
        panic!("{name} not found on PATH: {how_to_install} (the CI script .ci/run does)")
    })
}

/// What the kustomize tests need: kubectl, and python3 with PyYAML, which kubernetes-validate
/// installs.
const KUSTOMIZE_TOOLS: [&str; 3] = ["kubectl", "python3", "kubernetes-validate"];

fn run(command: &mut Command) -> (Output, String) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

fn systemd_analyze() -> PathBuf {
    require_tool(
        "systemd-analyze",
        "install it with `apt-get install systemd`",
    )
}

/// The shipped unit in a temporary directory, its ExecStart pointing at the binary under test
/// (`systemd-analyze verify` checks that the binary exists).
fn unit_copy_running_the_built_binary() -> (tempfile::TempDir, PathBuf) {
    let unit = read_repository_file("deploy/systemd/cometapi-keymon.service");
    assert_eq!(
        unit.matches(SHIPPED_EXEC_START).count(),
        1,
        "the unit should start the installed binary with `{SHIPPED_EXEC_START}`"
    );
    let rewritten = unit.replace(SHIPPED_EXEC_START, &format!("ExecStart={BINARY} run"));
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join(UNIT_FILE_NAME);
    std::fs::write(&path, rewritten).unwrap();
    (directory, path)
}

/// `key=value` settings of one section of a unit file, in order (repeated keys kept).
fn unit_settings(unit: &str, section: &str) -> Vec<(String, String)> {
    let mut current = String::new();
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            current = line.to_owned();
            continue;
        }
        if current == format!("[{section}]") {
            let (key, value) = line.split_once('=').expect("key=value");
            settings.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    settings
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    if !tools::tools_available(&["systemd-analyze"]) {
        return;
    }
    let tool = systemd_analyze();
    let (_directory, unit) = unit_copy_running_the_built_binary();
    let (output, text) = run(Command::new(tool).args(["verify", "--man=no"]).arg(&unit));
    // verify exits 0 on unknown keys and only warns: any output at all is a finding.
    assert!(
        output.status.success() && text.trim().is_empty(),
        "systemd-analyze verify {}: {}\n{text}",
        unit.display(),
        output.status
    );
}

#[test]
fn systemd_unit_hardening_exposure_is_at_most_2_0() {
    if !tools::tools_available(&["systemd-analyze"]) {
        return;
    }
    let tool = systemd_analyze();
    let (_directory, unit) = unit_copy_running_the_built_binary();
    let (output, text) = run(Command::new(tool)
        .args(["security", "--offline=yes"])
        .arg(&unit));
    assert!(output.status.success(), "systemd-analyze security: {text}");
    let marker = format!("Overall exposure level for {UNIT_FILE_NAME}:");
    let score: f64 = text
        .lines()
        .find_map(|line| line.split_once(&marker))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in the output:\n{text}"));
    eprintln!("systemd-analyze security exposure: {score}");
    assert!(
        score <= HIGHEST_ACCEPTED_EXPOSURE,
        "exposure {score} is above {HIGHEST_ACCEPTED_EXPOSURE}:\n{text}"
    );
}

#[test]
fn systemd_unit_wires_the_credential_state_restart_and_environment_file() {
    let unit = read_repository_file("deploy/systemd/cometapi-keymon.service");
    let settings = unit_settings(&unit, "Service");
    let values = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
            .collect()
    };
    let expected = [
        ("LoadCredential", "token:/etc/cometapi-keymon/token"),
        ("StateDirectory", "cometapi-keymon"),
        ("Restart", "on-failure"),
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("CapabilityBoundingSet", ""),
        ("UMask", "0077"),
        ("EnvironmentFile", "-/etc/default/cometapi-keymon"),
        (
            "Environment",
            "KEYMON_CONFIG=/etc/cometapi-keymon/config.toml",
        ),
    ];
    for (key, value) in expected {
        assert_eq!(values(key), [value], "{key}= in the unit");
    }
    // Exit status 2 is a bad configuration: restarting cannot fix it.
    assert!(
        values("RestartPreventExitStatus")
            .iter()
            .any(|value| value.split_whitespace().any(|status| status == "2")),
        "RestartPreventExitStatus= should hold 2"
    );
    // The config reads the token where systemd puts the credential named in LoadCredential=.
    let config = read_repository_file("deploy/systemd/config.toml");
    assert_eq!(
        SYSTEMD_TOKEN_PATH,
        format!("/run/credentials/{UNIT_FILE_NAME}/token")
    );
    assert!(
        config.contains(&format!("token_file = \"{SYSTEMD_TOKEN_PATH}\"")),
        "deploy/systemd/config.toml should read the token from {SYSTEMD_TOKEN_PATH}"
    );
}

/// Runs `check-config` on a copy of a shipped config whose token path (which exists only in
/// the service or the pod) is rewritten to a temporary token file. KEYMON_* overrides cannot
/// do this: they do not reach into the `[[accounts]]` array.
fn check_shipped_config(
    relative: &str,
    shipped_token_path: &str,
    environment: &[(String, String)],
) -> String {
    let config = read_repository_file(relative);
    let shipped_line = format!("token_file = \"{shipped_token_path}\"");
    assert_eq!(
        config.matches(&shipped_line).count(),
        1,
        "{relative} should hold `{shipped_line}` once"
    );
    assert!(
        config.contains("[policy]\n")
            && config.contains("dry_run = true\n")
            && config.contains("state_dir = \"/var/lib/cometapi-keymon\"\n"),
        "{relative}: the shipped policy must be a dry run keeping its state in the persistent state directory"
    );
    let directory = tempfile::tempdir().unwrap();
    let token_path = directory.path().join("token");
    std::fs::write(&token_path, "tok-deploy-platform-test\n").unwrap();
    std::fs::set_permissions(
        &token_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let copy = directory.path().join("config.toml");
    let rewritten = config.replace(
        &shipped_line,
        &format!("token_file = \"{}\"", token_path.display()),
    );
    std::fs::write(&copy, rewritten).unwrap();
    let mut command = Command::new(BINARY);
    command
        .args(["check-config", "--config"])
        .arg(&copy)
        .env_remove("RUST_LOG")
        .env_remove("KEYMON_CONFIG")
        .env_remove("COMETAPI_ACCESS_TOKEN");
    for (key, value) in environment {
        command.env(key, value);
    }
    let (output, _) = run(&mut command);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success() && stderr.is_empty(),
        "check-config on {relative}: {}\n{stderr}",
        output.status
    );
    assert!(!stdout.contains("tok-deploy-platform-test"));
    stdout
}

#[test]
fn shipped_config_files_pass_check_config() {
    for (relative, token_path) in [
        ("deploy/systemd/config.toml", SYSTEMD_TOKEN_PATH),
        ("deploy/kubernetes/config.toml", KUBERNETES_TOKEN_PATH),
    ] {
        let effective = check_shipped_config(relative, token_path, &[]);
        assert!(
            effective.contains("listen = \"0.0.0.0:9877\""),
            "{relative}:\n{effective}"
        );
    }
}

#[test]
fn the_example_environment_file_names_real_overrides() {
    let text = read_repository_file("deploy/systemd/cometapi-keymon.env");
    // Its commented-out assignments, switched on all at once.
    let assignments: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| {
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .filter(|(key, _)| key != "KEYMON_CONFIG")
        .collect();
    assert!(
        assignments.iter().any(|(key, _)| key.contains("__")),
        "expected KEYMON_SECTION__KEY examples, found {assignments:?}"
    );
    assert!(
        assignments
            .iter()
            .all(|(key, _)| !key.contains("TOKEN") && !key.starts_with("COMETAPI_")),
        "the token belongs in the credential, not the environment file"
    );
    let baseline = check_shipped_config("deploy/systemd/config.toml", SYSTEMD_TOKEN_PATH, &[]);
    let overridden = check_shipped_config(
        "deploy/systemd/config.toml",
        SYSTEMD_TOKEN_PATH,
        &assignments,
    );
    // Each KEYMON_SECTION__KEY changes that key's line of the effective config.
    let line_of = |effective: &str, key: &str| -> String {
        effective
            .lines()
            .find(|line| line.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in the effective config:\n{effective}"))
            .to_owned()
    };
    for (variable, value) in assignments.iter().filter(|(key, _)| key.contains("__")) {
        let key = variable.rsplit("__").next().unwrap().to_ascii_lowercase();
        assert_ne!(
            line_of(&baseline, &key),
            line_of(&overridden, &key),
            "{variable}={value} did not change the effective config"
        );
    }
}

/// Runs `kubectl kustomize DIR` and returns the YAML.
fn kustomize(relative: &str) -> String {
    let kubectl = require_tool(
        "kubectl",
        "install kubectl (https://kubernetes.io/docs/tasks/tools/)",
    );
    let (output, text) = run(Command::new(kubectl)
        .arg("kustomize")
        .arg(repository_path(relative)));
    assert!(
        output.status.success(),
        "kubectl kustomize {relative}: {text}"
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Multi-document YAML to JSON values, through PyYAML (which kubernetes-validate installs).
fn yaml_documents(yaml: &str) -> Vec<Value> {
    let python = require_tool(
        "python3",
        "install python3 and PyYAML (`apt-get install python3-yaml`)",
    );
    let mut child = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml\n\
             json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "YAML to JSON failed (python3 needs PyYAML: `apt-get install python3-yaml`): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    match serde_json::from_slice(&output.stdout).unwrap() {
        Value::Array(documents) => documents,
        other => panic!("expected a list of documents, got {other}"),
    }
}

fn kind_and_name(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn only<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let matching: Vec<&Value> = objects
        .iter()
        .filter(|object| object["kind"] == kind)
        .collect();
    assert_eq!(matching.len(), 1, "expected exactly one {kind}");
    matching[0]
}

/// `kubernetes-validate --strict` on a YAML file: every standard object must pass; the only
/// warnings allowed are the missing schemas of the Prometheus Operator's custom resources.
fn assert_kubernetes_validate_strict_accepts(what: &str, yaml: &str) {
    let tool = require_tool(
        "kubernetes-validate",
        "install it with `pip install kubernetes-validate`",
    );
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    let (output, text) = run(Command::new(tool).arg("--strict").arg(file.path()));
    assert!(
        output.status.success() && !text.contains("ERROR"),
        "kubernetes-validate --strict rejected {what}:\n{text}"
    );
    for line in text.lines().filter(|line| line.starts_with("WARN")) {
        assert!(
            line.contains("Couldn't find schema") && line.contains("monitoring.coreos.com"),
            "unexpected warning for {what}: {line}"
        );
    }
    let passed = text
        .lines()
        .filter(|line| line.contains(" passed for resource "))
        .count();
    let standard = yaml_documents(yaml)
        .iter()
        .filter(|object| {
            !object["apiVersion"]
                .as_str()
                .unwrap_or("")
                .starts_with(MONITORING_GROUP)
        })
        .count();
    assert_eq!(
        passed, standard,
        "every standard object of {what} should pass:\n{text}"
    );
}

#[test]
fn kustomize_base_builds_and_kubernetes_validate_strict_accepts_every_standard_object() {
    if !tools::tools_available(&KUSTOMIZE_TOOLS) {
        return;
    }
    let base = kustomize("deploy/kubernetes");
    assert_kubernetes_validate_strict_accepts("the kustomize base", &base);
    let secret = read_repository_file("deploy/kubernetes/secret.example.yaml");
    assert_kubernetes_validate_strict_accepts("secret.example.yaml", &secret);
}

#[test]
fn without_operator_overlay_drops_only_the_operator_custom_resources() {
    if !tools::tools_available(&KUSTOMIZE_TOOLS) {
        return;
    }
    let base = yaml_documents(&kustomize("deploy/kubernetes"));
    let overlay = yaml_documents(&kustomize("deploy/kubernetes-without-operator"));
    let standard: BTreeSet<String> = base
        .iter()
        .filter(|object| {
            !object["apiVersion"]
                .as_str()
                .unwrap()
                .starts_with(MONITORING_GROUP)
        })
        .map(kind_and_name)
        .collect();
    assert!(standard.len() < base.len(), "the base has a ServiceMonitor");
    let overlay_objects: BTreeSet<String> = overlay.iter().map(kind_and_name).collect();
    assert_eq!(overlay_objects, standard);
}

#[test]
fn kubernetes_objects_keep_what_operators_rely_on() {
    if !tools::tools_available(&KUSTOMIZE_TOOLS) {
        return;
    }
    let objects = yaml_documents(&kustomize("deploy/kubernetes"));
    let deployment = only(&objects, "Deployment");
    let spec = &deployment["spec"];
    // One writer: a single replica, and the old pod gone before the new one starts.
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["strategy"]["type"], "Recreate");

    let pod = &spec["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    let service_account = only(&objects, "ServiceAccount");
    assert_eq!(
        pod["serviceAccountName"],
        service_account["metadata"]["name"]
    );
    assert_eq!(service_account["automountServiceAccountToken"], false);
    assert!(
        !objects.iter().any(
            |object| ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"]
                .contains(&object["kind"].as_str().unwrap())
        ),
        "the daemon needs no Kubernetes API access"
    );

    let pod_security = &pod["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true);
    assert!(pod_security["runAsUser"].as_u64().unwrap() > 0);
    assert_eq!(pod_security["seccompProfile"]["type"], "RuntimeDefault");
    assert!(
        pod_security["fsGroup"].as_u64().is_some(),
        "fsGroup lets the non-root user read the token and write the state volume"
    );

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(security["capabilities"]["add"].is_null());

    let port = &container["ports"][0];
    assert_eq!(port["containerPort"], 9877);
    let port_name = port["name"].as_str().unwrap();
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], port_name, "{probe}");
    }
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][bound][resource].is_string(),
                "resources.{bound}.{resource} should be set"
            );
        }
    }

    let annotations = &spec["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9877");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // The config file and the token land where KEYMON_CONFIG and the config say.
    let mount_path = |volume: &str| -> String {
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|mount| mount["name"] == volume)
            .unwrap_or_else(|| panic!("no mount of volume {volume}"))["mountPath"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let volume = |name: &str| -> &Value {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|volume| volume["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let config_directory = mount_path("config");
    let keymon_config = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|variable| variable["name"] == "KEYMON_CONFIG")
        .expect("KEYMON_CONFIG in the container's env")["value"]
        .as_str()
        .unwrap();
    assert_eq!(keymon_config, format!("{config_directory}/config.toml"));
    assert_eq!(
        KUBERNETES_TOKEN_PATH,
        format!("{config_directory}/token"),
        "the config's token_file"
    );

    let sources = volume("config")["projected"]["sources"].as_array().unwrap();
    let config_map_source = sources
        .iter()
        .find(|source| source["configMap"].is_object())
        .expect("the config from a ConfigMap")["configMap"]
        .clone();
    let secret_source = sources
        .iter()
        .find(|source| source["secret"].is_object())
        .expect("the token from a Secret")["secret"]
        .clone();
    assert_eq!(
        config_map_source["items"],
        serde_json::json!([{"key": "config.toml", "path": "config.toml", "mode": 0o444}])
    );
    assert_eq!(
        secret_source["items"],
        serde_json::json!([{"key": "token", "path": "token", "mode": 0o400}])
    );
    let example_secret = &yaml_documents(&read_repository_file(
        "deploy/kubernetes/secret.example.yaml",
    ))[0];
    assert_eq!(secret_source["name"], example_secret["metadata"]["name"]);
    assert!(example_secret["stringData"]["token"].is_string());
    assert!(
        !objects.iter().any(|object| object["kind"] == "Secret"),
        "applying the base must not overwrite the real token Secret"
    );

    // The ConfigMap is the shipped config file, byte for byte, under the generated name.
    let config_map = only(&objects, "ConfigMap");
    assert_eq!(config_map_source["name"], config_map["metadata"]["name"]);
    assert_eq!(
        config_map["data"]["config.toml"].as_str().unwrap(),
        read_repository_file("deploy/kubernetes/config.toml")
    );

    // Policy state on a claim that outlives the pod.
    assert_eq!(mount_path("state"), "/var/lib/cometapi-keymon");
    let claim = only(&objects, "PersistentVolumeClaim");
    assert_eq!(
        volume("state")["persistentVolumeClaim"]["claimName"],
        claim["metadata"]["name"]
    );
    assert_eq!(
        claim["spec"]["accessModes"],
        serde_json::json!(["ReadWriteOnce"])
    );

    let network_policy = only(&objects, "NetworkPolicy");
    assert_eq!(
        network_policy["spec"]["podSelector"]["matchLabels"],
        spec["selector"]["matchLabels"]
    );
    assert_eq!(
        network_policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
}

/// `selector` (a label map) is contained in `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("a label map");
    !selector.is_empty()
        && selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
}

#[test]
fn service_monitor_scrapes_the_service_which_keeps_not_ready_pods() {
    if !tools::tools_available(&KUSTOMIZE_TOOLS) {
        return;
    }
    let objects = yaml_documents(&kustomize("deploy/kubernetes"));
    let deployment = only(&objects, "Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let container_ports = &deployment["spec"]["template"]["spec"]["containers"][0]["ports"];
    let service = only(&objects, "Service");
    let monitor = only(&objects, "ServiceMonitor");

    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    assert!(selects(&service["spec"]["selector"], pod_labels));
    // A pod answering 503 on /readyz stays an endpoint, so `cometapi_up 0` is scraped.
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(service_port["port"], 9877);
    assert!(container_ports
        .as_array()
        .unwrap()
        .iter()
        .any(|port| port["name"] == service_port["targetPort"]));

    assert!(selects(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    let endpoints = monitor["spec"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["port"], service_port["name"]);
    assert_eq!(endpoints[0]["path"], "/metrics");
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_shell_free_at_runtime() {
    let dockerfile = read_repository_file("deploy/Dockerfile");
    // Instructions, with continuation lines joined.
    let joined = dockerfile.replace("\\\n", " ");
    let instructions: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let stage_starts: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, line)| line.starts_with("FROM "))
        .map(|(index, _)| index)
        .collect();
    assert!(
        stage_starts.len() >= 2,
        "multi-stage: a builder and a runtime"
    );
    assert!(instructions[stage_starts[0]].contains(" AS builder"));
    assert!(
        instructions
            .iter()
            .any(|line| line.starts_with("RUN ") && line.contains("cargo build --release --locked")),
        "the builder builds the release binary from Cargo.lock"
    );
    let runtime = &instructions[*stage_starts.last().unwrap()..];
    assert!(
        runtime[0].contains("distroless") || runtime[0] == "FROM scratch",
        "a runtime without a shell: {}",
        runtime[0]
    );
    assert!(
        !runtime.iter().any(|line| line.starts_with("RUN ")),
        "the runtime stage has no shell to RUN with"
    );
    let users: Vec<&str> = runtime
        .iter()
        .filter_map(|line| line.strip_prefix("USER "))
        .collect();
    assert_eq!(users.len(), 1, "one USER in the runtime stage");
    let uid: u32 = users[0]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER, which runAsNonRoot can verify");
    assert_ne!(uid, 0);
    assert!(runtime.contains(&"EXPOSE 9877"));
    let entrypoints: Vec<&str> = runtime
        .iter()
        .filter_map(|line| line.strip_prefix("ENTRYPOINT "))
        .collect();
    assert_eq!(
        entrypoints,
        [r#"["/usr/local/bin/cometapi-keymon", "run"]"#],
        "exec form, so no shell is needed and SIGTERM reaches the daemon"
    );
    assert!(
        runtime
            .iter()
            .any(|line| line.starts_with("COPY --from=builder")
                && line.ends_with(" /usr/local/bin/cometapi-keymon")),
        "the binary comes from the builder stage"
    );

    let dockerignore = read_repository_file(".dockerignore");
    assert!(
        dockerignore.lines().any(|line| line.trim() == "target/"),
        ".dockerignore should keep target/ out of the build context"
    );
}

/// The runtime image (distroless cc-debian12) has glibc and libgcc, nothing else: a new native
/// dependency (OpenSSL, say) would build but not start in it.
#[test]
fn the_binary_links_only_what_the_runtime_image_has() {
    if !tools::tools_available(&["ldd"]) {
        return;
    }
    let ldd = require_tool("ldd", "install it with `apt-get install libc-bin`");
    let (output, text) = run(Command::new(ldd).arg(BINARY));
    assert!(output.status.success(), "ldd: {text}");
    let provided = [
        "linux-vdso.so.1",
        "linux-vdso64.so.1",
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "ld-linux-x86-64.so.2",
        "ld-linux-aarch64.so.1",
        "libdl.so.2",
        "libpthread.so.0",
        "librt.so.1",
    ];
    for line in text.lines() {
        let library = line.split_whitespace().next().unwrap_or("");
        let file_name = Path::new(library).file_name().unwrap().to_str().unwrap();
        assert!(
            provided.contains(&file_name),
            "{file_name} is not in the distroless cc image: {line}"
        );
    }
}

/// The lines of the unit's commented TLS block, uncommented.
fn commented_tls_credentials(unit: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|line| line.strip_prefix("#LoadCredential="))
        .map(|value| format!("LoadCredential={value}"))
        .collect()
}

/// A copy of a shipped web config in a temporary directory, next to a certificate pair made
/// for the test under the names the file uses.
fn web_config_with_certificates(relative: &str) -> (tempfile::TempDir, PathBuf) {
    let text = read_repository_file(relative);
    let parsed: Value = serde_yaml_ng::from_str(&text).unwrap();
    let tls = &parsed["tls_server_config"];
    let directory = tempfile::tempdir().unwrap();
    let ca = support::tls::TestCa::new("deploy test CA");
    let pair = ca.server("keymon");
    let cert_file = tls["cert_file"].as_str().expect("cert_file");
    let key_file = tls["key_file"].as_str().expect("key_file");
    assert!(
        !cert_file.starts_with('/') && !key_file.starts_with('/'),
        "{relative}: relative paths, so the file works wherever it is mounted next to the pair"
    );
    support::tls::write(directory.path(), cert_file, &pair.certificate);
    support::tls::write_key(directory.path(), key_file, &pair.key);
    let path = support::tls::write(directory.path(), "web.yml", &text);
    (directory, path)
}

#[test]
fn shipped_web_configs_pass_promtool_check_web_config_and_check_config() {
    if !tools::tools_available(&["promtool"]) {
        return;
    }
    for relative in SHIPPED_WEB_CONFIGS {
        let (directory, web) = web_config_with_certificates(relative);
        let (valid, report) = support::deploy::promtool(
            directory.path(),
            &["check", "web-config", web.to_str().unwrap()],
        );
        assert!(valid && report.contains("SUCCESS"), "{relative}: {report}");
        // The daemon reads it the same way (through the override the unit could use too).
        let effective = check_shipped_config(
            "deploy/systemd/config.toml",
            SYSTEMD_TOKEN_PATH,
            &[(
                "KEYMON_SERVER__WEB_CONFIG_FILE".to_owned(),
                web.display().to_string(),
            )],
        );
        assert!(
            effective.contains(&format!("web_config_file = \"{}\"", web.display()))
                && effective.contains("#     prometheus: (bcrypt hash, cost 10, not shown)")
                && effective.contains("#       Strict-Transport-Security: max-age=31536000"),
            "{relative}:\n{effective}"
        );
        assert!(!effective.contains("$2y$"), "{relative}: a hash leaked");
    }
    assert_eq!(
        read_repository_file(SHIPPED_WEB_CONFIGS[0])
            .split_once("tls_server_config:")
            .map(|(_, rest)| rest.to_owned()),
        read_repository_file(SHIPPED_WEB_CONFIGS[1])
            .split_once("tls_server_config:")
            .map(|(_, rest)| rest.to_owned()),
        "the systemd and Kubernetes web configs differ only in their header comment"
    );
}

#[test]
fn the_units_commented_tls_credentials_match_the_config_and_pass_verify() {
    if !tools::tools_available(&["systemd-analyze"]) {
        return;
    }
    let unit = read_repository_file("deploy/systemd/cometapi-keymon.service");
    let credentials = commented_tls_credentials(&unit);
    let names: Vec<&str> = credentials
        .iter()
        .map(|line| {
            line.trim_start_matches("LoadCredential=")
                .split(':')
                .next()
                .unwrap()
        })
        .collect();
    let web: Value =
        serde_yaml_ng::from_str(&read_repository_file(SHIPPED_WEB_CONFIGS[0])).unwrap();
    assert_eq!(
        names,
        [
            "web.yml",
            web["tls_server_config"]["cert_file"].as_str().unwrap(),
            web["tls_server_config"]["key_file"].as_str().unwrap(),
        ],
        "the credentials are the web config and the files it names"
    );
    let config = read_repository_file("deploy/systemd/config.toml");
    assert_eq!(
        SYSTEMD_WEB_CONFIG_PATH,
        format!("/run/credentials/{UNIT_FILE_NAME}/web.yml")
    );
    assert!(
        config.contains(&format!(
            "# web_config_file = \"{SYSTEMD_WEB_CONFIG_PATH}\""
        )),
        "deploy/systemd/config.toml should show web_config_file pointing at the credential"
    );
    // Uncommented, the unit still verifies cleanly.
    let tool = systemd_analyze();
    let (directory, path) = unit_copy_running_the_built_binary();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("#LoadCredential=", "LoadCredential=");
    std::fs::write(&path, text).unwrap();
    let (output, report) = run(Command::new(tool).args(["verify", "--man=no"]).arg(&path));
    assert!(
        output.status.success() && report.trim().is_empty(),
        "with the TLS credentials: {report}"
    );
    drop(directory);
}

#[test]
fn kubernetes_tls_overlay_builds_and_kubernetes_validate_strict_accepts_it() {
    if !tools::tools_available(&KUSTOMIZE_TOOLS) {
        return;
    }
    let overlay = kustomize("deploy/kubernetes-tls");
    assert_kubernetes_validate_strict_accepts("the kubernetes-tls overlay", &overlay);
    let credentials = read_repository_file("deploy/kubernetes-tls/scrape-credentials.example.yaml");
    assert_kubernetes_validate_strict_accepts("scrape-credentials.example.yaml", &credentials);
}

#[test]
fn kubernetes_tls_overlay_mounts_the_web_config_probes_over_https_and_scrapes_with_credentials() {
    if !tools::tools_available(&KUSTOMIZE_TOOLS) {
        return;
    }
    let base = yaml_documents(&kustomize("deploy/kubernetes"));
    let objects = yaml_documents(&kustomize("deploy/kubernetes-tls"));
    // The base's objects, plus the web config's Secret only.
    let base_names: BTreeSet<String> = base.iter().map(kind_and_name).collect();
    let added: Vec<&Value> = objects
        .iter()
        .filter(|object| !base_names.contains(&kind_and_name(object)))
        .collect();
    assert_eq!(
        added.len(),
        1,
        "{:?}",
        added.iter().map(|o| kind_and_name(o)).collect::<Vec<_>>()
    );
    let web_secret = added[0];
    assert_eq!(web_secret["kind"], "Secret");
    let web_secret_name = web_secret["metadata"]["name"].as_str().unwrap();
    assert!(web_secret_name.starts_with("cometapi-keymon-web-config-"));
    let web_yml = {
        use base64::Engine as _;
        let encoded = web_secret["data"]["web.yml"]
            .as_str()
            .expect("web.yml in the Secret");
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.split_whitespace().collect::<String>())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        web_yml,
        read_repository_file("deploy/kubernetes-tls/web.yml")
    );
    let web: Value = serde_yaml_ng::from_str(&web_yml).unwrap();

    let deployment = only(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|mount| mount["name"] == "web")
        .expect("the web volume is mounted");
    let mount_path = mount["mountPath"].as_str().unwrap();
    assert_eq!(mount["readOnly"], true);
    assert!(
        !mount_path.starts_with("/etc/cometapi-keymon/"),
        "not inside the base's read-only config volume"
    );
    assert_eq!(
        container["args"],
        serde_json::json!([format!("--web.config.file={mount_path}/web.yml")])
    );
    let sources = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == "web")
        .expect("the web volume")["projected"]["sources"]
        .as_array()
        .unwrap()
        .clone();
    let secret_items = |name: &str| -> Value {
        sources
            .iter()
            .find(|source| source["secret"]["name"] == name)
            .unwrap_or_else(|| panic!("no projected Secret {name}"))["secret"]["items"]
            .clone()
    };
    assert_eq!(
        secret_items(web_secret_name),
        serde_json::json!([{"key": "web.yml", "path": "web.yml", "mode": 0o400}])
    );
    let tls = &web["tls_server_config"];
    assert_eq!(
        secret_items(TLS_SECRET),
        serde_json::json!([
            {"key": "tls.crt", "path": tls["cert_file"], "mode": 0o444},
            {"key": "tls.key", "path": tls["key_file"], "mode": 0o400},
        ]),
        "the pair lands where web.yml's relative paths look"
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
    }
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scheme"],
        "https"
    );

    let monitor = only(&objects, "ServiceMonitor");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["tlsConfig"]["ca"]["secret"]["name"], TLS_SECRET);
    assert!(endpoint["tlsConfig"]["serverName"].is_string());
    let credentials = &yaml_documents(&read_repository_file(
        "deploy/kubernetes-tls/scrape-credentials.example.yaml",
    ))[0];
    for field in ["username", "password"] {
        let reference = &endpoint["basicAuth"][field];
        assert_eq!(
            reference["name"], credentials["metadata"]["name"],
            "{field}"
        );
        let key = reference["key"].as_str().unwrap();
        assert!(credentials["stringData"][key].is_string(), "{field}: {key}");
    }
    assert!(
        web["basic_auth_users"][credentials["stringData"]["username"].as_str().unwrap()]
            .is_string(),
        "the ServiceMonitor's user is a user of web.yml"
    );
}
