//! The deployment files under `deploy/` checked against the code: they parse, they name the image, port,
//! roles and environment variables the code has, and their time limits outlast `shutdown_grace`. Where a file
//! names something the running service must answer (probe paths, the metrics a dashboard queries), the real
//! binary is started and asked, rather than its source searched. Nothing here builds an image or talks to a
//! cluster; a file that drifts from the code fails here instead of in production.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize as _;
use serde_yaml_ng::Value as Yaml;

/// The contract's roles (`followd serve --role all|receiver|worker`).
const ROLES: [&str; 3] = ["all", "receiver", "worker"];

/// The contract's environment variables (DESIGN.md, "Configuration"; the command line's own in main.rs).
const CONTRACT_ENV: [&str; 9] = [
    "FOLLOWD_LISTEN",
    "FOLLOWD_REDIS_URL",
    "FOLLOWD_DATA_DIR",
    "FOLLOWD_RULES_DIR",
    "FOLLOWD_UPSTREAM_URL",
    "FOLLOWD_UPSTREAM_TOKEN",
    "FOLLOWD_WORKERS",
    "FOLLOWD_LOG_FORMAT",
    "FOLLOWD_CONFIG",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() { pending.push(path) } else { files.push(path) }
        }
    }
    files.sort();
    files
}

fn deploy_files() -> Vec<PathBuf> {
    let files = files_under(&root().join("deploy"));
    assert!(!files.is_empty(), "deploy/ is empty");
    files
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e))
}

fn shown(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

/// Every document of a (possibly multi-document) YAML file; empty documents are skipped.
fn yaml_documents(path: &Path) -> Result<Vec<Yaml>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = Yaml::deserialize(document).map_err(|e| e.to_string())?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

fn yaml(relative: &str) -> Vec<Yaml> {
    yaml_documents(&root().join(relative)).unwrap_or_else(|e| panic!("{relative} does not parse: {e}"))
}

fn default_toml() -> toml::Table {
    read("src/config/default.toml").parse().expect("src/config/default.toml parses")
}

/// The port of the default `listen` address.
fn listen_port() -> u16 {
    let listen = default_toml()["listen"].as_str().expect("default.toml has `listen`").to_owned();
    listen.parse::<std::net::SocketAddr>().unwrap_or_else(|e| panic!("listen `{listen}`: {e}")).port()
}

/// A duration as systemd, compose or followd write it: `10s`, `1min 30s`, or a bare number of seconds.
fn duration(text: &str) -> Duration {
    let text = text.trim();
    match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text).unwrap_or_else(|e| panic!("`{text}` is not a duration: {e}")),
    }
}

fn shutdown_grace() -> Duration {
    duration(default_toml()["shutdown_grace"].as_str().expect("default.toml has `shutdown_grace`"))
}

fn crate_version() -> String {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    manifest["package"]["version"].as_str().unwrap().to_owned()
}

/// The services compose builds from deploy/Dockerfile: followd's.
fn compose_followd_services() -> Vec<(String, Yaml)> {
    let compose = yaml("deploy/compose.yaml").remove(0);
    let services = compose["services"].as_mapping().expect("compose.yaml has services");
    let followd: Vec<(String, Yaml)> = services
        .iter()
        .filter(|(_, service)| service["build"]["dockerfile"].as_str() == Some("deploy/Dockerfile"))
        .map(|(name, service)| (name.as_str().unwrap().to_owned(), service.clone()))
        .collect();
    assert!(followd.len() >= 2, "compose.yaml should build followd for a receiver and a worker service");
    followd
}

/// Every document of every Kubernetes manifest, with its file.
fn kubernetes_documents() -> Vec<(PathBuf, Yaml)> {
    files_under(&root().join("deploy/kubernetes"))
        .into_iter()
        .filter(|path| has_extension(path, &["yaml", "yml"]))
        .flat_map(|path| {
            let documents = yaml_documents(&path).unwrap_or_else(|e| panic!("{} does not parse: {e}", shown(&path)));
            documents.into_iter().map(move |document| (path.clone(), document))
        })
        .collect()
}

fn of_kind(kind: &str) -> Vec<Yaml> {
    kubernetes_documents().into_iter().map(|(_, d)| d).filter(|d| d["kind"].as_str() == Some(kind)).collect()
}

fn name_of(document: &Yaml) -> &str {
    document["metadata"]["name"].as_str().unwrap_or("?")
}

/// Every Deployment runs followd; Redis is a StatefulSet.
fn deployments() -> Vec<Yaml> {
    let deployments = of_kind("Deployment");
    assert!(deployments.len() >= 2, "the Kubernetes manifests should hold the receiver and worker Deployments");
    deployments
}

fn containers(deployment: &Yaml) -> &[Yaml] {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap_or_else(|| panic!("Deployment {} has no containers", name_of(deployment)))
}

/// A container's environment: name → literal value (None when it comes from a secret or is unset).
fn container_env(container: &Yaml) -> BTreeMap<String, Option<String>> {
    container["env"]
        .as_sequence()
        .map(|env| {
            env.iter().map(|var| (var["name"].as_str().unwrap().to_owned(), var["value"].as_str().map(str::to_owned)))
        })
        .into_iter()
        .flatten()
        .collect()
}

/// A compose service's environment, in either of compose's forms (mapping or `NAME=value` list).
fn compose_env(service: &Yaml) -> BTreeMap<String, Option<String>> {
    let environment = &service["environment"];
    if let Some(mapping) = environment.as_mapping() {
        mapping.iter().map(|(k, v)| (k.as_str().unwrap().to_owned(), v.as_str().map(str::to_owned))).collect()
    } else if let Some(list) = environment.as_sequence() {
        list.iter()
            .map(|item| {
                let item = item.as_str().unwrap();
                match item.split_once('=') {
                    Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                    None => (item.to_owned(), None),
                }
            })
            .collect()
    } else {
        BTreeMap::new()
    }
}

/// A YAML scalar as text: ports and grace periods may be written as numbers or strings.
fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The port and path of an `http://host:port/path` URL inside a command line.
fn http_target(words: &[String]) -> Option<(u16, String)> {
    let url = words.iter().find_map(|w| w.strip_prefix("http://"))?;
    let (authority, path) = url.split_once('/').unwrap_or((url, ""));
    let port = authority.rsplit_once(':').map_or(80, |(_, port)| port.parse().expect("a numeric port"));
    Some((port, format!("/{path}")))
}

/// The Dockerfile as (INSTRUCTION, arguments), continuation lines joined and comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("deploy/Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (instruction, arguments) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
                instructions.push((instruction.to_uppercase(), arguments.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

fn dockerfile_args(instruction: &str) -> Vec<String> {
    dockerfile().into_iter().filter(|(i, _)| i == instruction).map(|(_, args)| args).collect()
}

/// The image's environment (`ENV NAME=value ...`).
fn dockerfile_env() -> BTreeMap<String, String> {
    dockerfile_args("ENV")
        .iter()
        .flat_map(|args| args.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|pair| pair.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// The exec-form (JSON array) arguments of a Dockerfile instruction.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("`{args}` is not an exec-form array: {e}"))
}

/// Every string value in a JSON document.
fn json_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// Words starting with `prefix` followed by characters `keep` accepts (the prefix included).
fn words_with_prefix(text: &str, prefix: &str, keep: impl Fn(char) -> bool) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + prefix.len()..];
        let length = after.find(|c| !keep(c)).unwrap_or(after.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            found.insert(format!("{prefix}{}", &after[..length]));
        }
        rest = &after[length..];
    }
    found
}

/// Replaces `env:NAME` secret references by inline placeholders, so the configuration loads without them.
fn without_env_secrets(config: &str) -> String {
    config.replace("\"env:", "\"placeholder-for-")
}

/// The `env:NAME` secrets a configuration names.
fn env_secrets(config: &str) -> BTreeSet<String> {
    words_with_prefix(config, "\"env:", |c| c.is_ascii_alphanumeric() || c == '_')
        .into_iter()
        .map(|reference| reference.trim_start_matches("\"env:").to_owned())
        .collect()
}

#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    let mut checked = 0;
    for path in deploy_files() {
        if has_extension(&path, &["yaml", "yml"]) {
            let documents = yaml_documents(&path).unwrap_or_else(|e| panic!("{} does not parse: {e}", shown(&path)));
            assert!(!documents.is_empty(), "{} holds no document", shown(&path));
            checked += 1;
        } else if has_extension(&path, &["json"]) {
            let text = std::fs::read_to_string(&path).unwrap();
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", shown(&path)));
            checked += 1;
        } else if has_extension(&path, &["toml"]) {
            let text = std::fs::read_to_string(&path).unwrap();
            text.parse::<toml::Table>().unwrap_or_else(|e| panic!("{} does not parse: {e}", shown(&path)));
            checked += 1;
        }
    }
    assert!(checked >= 3, "expected compose, Kubernetes and Grafana files, checked {checked}");
}

#[test]
fn compose_and_every_kubernetes_deployment_run_the_image_of_this_crate_version() {
    let mut images = BTreeMap::new();
    for (name, service) in compose_followd_services() {
        let image = service["image"].as_str().unwrap_or_else(|| panic!("compose service {name} names no image"));
        images.insert(format!("compose service {name}"), image.to_owned());
    }
    for deployment in deployments() {
        for container in containers(&deployment) {
            let image = container["image"].as_str().expect("a container names its image");
            images.insert(
                format!("Deployment {} container {}", name_of(&deployment), container["name"].as_str().unwrap_or("?")),
                image.to_owned(),
            );
        }
    }
    let distinct: BTreeSet<&String> = images.values().collect();
    assert_eq!(distinct.len(), 1, "followd runs under more than one image name: {images:#?}");
    let image = distinct.into_iter().next().unwrap();
    let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("latest");
    assert_eq!(tag, crate_version(), "the image {image} should be tagged with the crate version");
    assert!(read("deploy/README.md").contains(image.as_str()), "deploy/README.md should name the image {image}");
}

#[test]
fn containers_listen_on_the_default_listen_port() {
    let port = listen_port();
    for (name, service) in compose_followd_services() {
        let ports = service["ports"].as_sequence().into_iter().flatten();
        let exposed = service["expose"].as_sequence().into_iter().flatten();
        let mut container_ports = Vec::new();
        for mapping in ports.filter_map(scalar) {
            let container = mapping.rsplit(':').next().unwrap().trim_end_matches("/tcp").to_owned();
            container_ports.push(container);
        }
        container_ports.extend(exposed.filter_map(scalar));
        assert!(!container_ports.is_empty(), "compose service {name} publishes or exposes no port");
        for container in container_ports {
            assert_eq!(container, port.to_string(), "compose service {name}: container port");
        }
    }
    for deployment in deployments() {
        for container in containers(&deployment) {
            let ports = container["ports"].as_sequence().expect("a followd container declares its port");
            for declared in ports {
                assert_eq!(
                    declared["containerPort"].as_u64(),
                    Some(u64::from(port)),
                    "Deployment {}",
                    name_of(&deployment)
                );
            }
        }
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        if let Some(scrape_port) = annotations["prometheus.io/port"].as_str() {
            assert_eq!(scrape_port, port.to_string(), "Deployment {}: prometheus.io/port", name_of(&deployment));
        }
    }
    for service in of_kind("Service").iter().filter(|s| name_of(s).starts_with("followd")) {
        for declared in service["spec"]["ports"].as_sequence().expect("a Service declares ports") {
            let target = &declared["targetPort"];
            let resolves = target.as_u64() == Some(u64::from(port))
                || target.as_str().is_some_and(|name| {
                    deployments().iter().flat_map(|d| containers(d).to_vec()).any(|c| {
                        c["ports"].as_sequence().into_iter().flatten().any(|p| {
                            p["name"].as_str() == Some(name) && p["containerPort"].as_u64() == Some(u64::from(port))
                        })
                    })
                });
            assert!(resolves, "Service {}: targetPort {target:?} is not container port {port}", name_of(service));
        }
    }
    assert_eq!(dockerfile_args("EXPOSE"), [port.to_string()], "the Dockerfile's EXPOSE");
}

/// A path something in the deploy files requests from followd (a probe, a Prometheus scrape), and what it must
/// answer.
struct Probe {
    /// Where it is declared, for messages.
    declared: String,
    path: String,
    /// The `serve --role` of the process that answers it.
    role: String,
    /// A liveness check (Kubernetes `livenessProbe`, the image's HEALTHCHECK): it must keep answering 200 while
    /// the queue is down, or an outage of Redis would restart every followd container.
    liveness: bool,
    /// A Kubernetes `readinessProbe`: it must stop answering 200 while the queue is down, so that no webhook is
    /// routed to a process that cannot queue it.
    readiness: bool,
}

/// The `--role` in a command line; `serve` without one runs every role.
fn role_in(words: &[String]) -> String {
    let after_flag = words.iter().position(|w| w == "--role").and_then(|at| words.get(at + 1)).cloned();
    after_flag
        .or_else(|| words.iter().find_map(|w| w.strip_prefix("--role=").map(str::to_owned)))
        .unwrap_or_else(|| "all".to_owned())
}

/// A command as words, in either of YAML's forms (a list, or one string split on white space).
fn words(value: &Yaml) -> Vec<String> {
    match value {
        Yaml::Sequence(items) => items.iter().filter_map(scalar).collect(),
        Yaml::String(line) => line.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Every HTTP probe in the Kubernetes manifests (and their Prometheus scrape path), the compose healthchecks
/// and the Dockerfile. Each must reach the default listen port; that is checked here, from the files.
fn probes() -> Vec<Probe> {
    let port = listen_port();
    let mut probes = Vec::new();
    for deployment in deployments() {
        for container in containers(&deployment) {
            let named_ports: BTreeMap<&str, u64> = container["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p["name"].as_str()?, p["containerPort"].as_u64()?)))
                .collect();
            let mut command = words(&container["command"]);
            command.extend(words(&container["args"]));
            // Prometheus scrapes the pod at its annotated path: that must answer as well.
            if let Some(path) = deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"].as_str()
            {
                let declared = format!("Deployment {} prometheus.io/path", name_of(&deployment));
                let role = role_in(&command);
                probes.push(Probe { declared, path: path.to_owned(), role, liveness: false, readiness: false });
            }
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                let get = &container[probe]["httpGet"];
                let declared = format!("Deployment {} {probe}", name_of(&deployment));
                if container[probe].is_null() {
                    assert!(probe == "startupProbe", "{declared}: missing");
                    continue;
                }
                let path = get["path"].as_str().unwrap_or_else(|| panic!("{declared}: no httpGet path"));
                let probe_port = get["port"].as_u64().or_else(|| named_ports.get(get["port"].as_str()?).copied());
                assert_eq!(probe_port, Some(u64::from(port)), "{declared}: port");
                probes.push(Probe {
                    declared,
                    path: path.to_owned(),
                    role: role_in(&command),
                    liveness: probe == "livenessProbe",
                    readiness: probe == "readinessProbe",
                });
            }
        }
    }
    let mut image_roles = BTreeSet::from(["all".to_owned()]); // the image's own CMD: `serve`
    for (name, service) in compose_followd_services() {
        let test: Vec<String> =
            service["healthcheck"]["test"].as_sequence().expect("a healthcheck").iter().filter_map(scalar).collect();
        let (probe_port, path) =
            http_target(&test).unwrap_or_else(|| panic!("compose service {name}: no URL in {test:?}"));
        assert_eq!(probe_port, port, "compose service {name}: healthcheck port");
        let role = role_in(&words(&service["command"]));
        image_roles.insert(role.clone());
        let declared = format!("compose service {name} healthcheck");
        probes.push(Probe { declared, path, role, liveness: false, readiness: false });
    }
    if let Some(healthcheck) = dockerfile_args("HEALTHCHECK").first() {
        let command = healthcheck.split_once("CMD").expect("HEALTHCHECK ... CMD").1;
        let (probe_port, path) = http_target(&exec_form(command.trim())).expect("the HEALTHCHECK calls a URL");
        assert_eq!(probe_port, port, "the Dockerfile's HEALTHCHECK port");
        // The image runs in every role compose gives it; its HEALTHCHECK runs in each.
        for role in image_roles {
            let declared = format!("the Dockerfile's HEALTHCHECK (role {role})");
            probes.push(Probe { declared, path: path.clone(), role, liveness: true, readiness: false });
        }
    }
    probes
}

/// How long a started process may take to answer as the test expects (rules loaded, queue connected or lost).
const SETTLE: Duration = Duration::from_secs(20);

/// The status a probe gets from the process running its role; `None` when the request fails.
async fn probe_status(running: &BTreeMap<String, support::process::Followd>, probe: &Probe) -> Option<u16> {
    let addr = &running[&probe.role].addr;
    reqwest::get(format!("{addr}{}", probe.path)).await.ok().map(|response| response.status().as_u16())
}

/// The probes that did not answer as `want` says within [`SETTLE`], each with the status it got last.
async fn not_settled(
    running: &BTreeMap<String, support::process::Followd>,
    probes: &[&Probe],
    want: impl Fn(Option<u16>) -> bool,
) -> Vec<String> {
    let mut failed = Vec::new();
    for probe in probes {
        let settled = support::eventually(SETTLE, || async { want(probe_status(running, probe).await) }).await;
        if !settled {
            let last = probe_status(running, probe).await;
            failed.push(format!("{} GET {} (role {}): {last:?}", probe.declared, probe.path, probe.role));
        }
    }
    failed
}

#[tokio::test]
async fn every_probe_in_the_deploy_files_answers_200_and_only_a_worker_s_readiness_fails_while_the_queue_is_down() {
    use support::process::{Followd, write_config};

    let probes = probes();
    assert!(probes.iter().any(|p| p.liveness) && probes.iter().any(|p| p.readiness), "liveness and readiness");
    let mut redis = support::redis::RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let roles: BTreeSet<String> = probes.iter().map(|p| p.role.clone()).collect();
    let mut running = BTreeMap::new();
    for role in roles {
        // No webhook is sent, so no call reaches this upstream address.
        let config = write_config(&dir.path().join(&role), "http://127.0.0.1:9", Some(&redis.url()));
        running.insert(role.clone(), Followd::start(&config, support::free_port(), &["--role", &role]).await);
    }

    let all: Vec<&Probe> = probes.iter().collect();
    let failed = not_settled(&running, &all, |status| status == Some(200)).await;
    assert!(failed.is_empty(), "probes that do not answer 200 from a healthy followd:\n{}", failed.join("\n"));

    redis.stop();
    // A process that takes webhooks stays ready through the outage: its spool takes them. One that only
    // delivers has nothing to do without Redis and leaves the balancer.
    let (receiving, delivering): (Vec<&Probe>, Vec<&Probe>) =
        probes.iter().filter(|p| p.readiness).partition(|p| p.role != "worker");
    let failed = not_settled(&running, &delivering, |status| status.is_some_and(|s| s != 200)).await;
    assert!(failed.is_empty(), "worker readiness still answering 200 with Redis stopped:\n{}", failed.join("\n"));
    for probe in receiving {
        let addr = &running[&probe.role].addr;
        let response = reqwest::get(format!("{addr}{}", probe.path)).await.unwrap();
        assert_eq!(response.status(), 200, "{} (role {}) takes webhooks into its spool", probe.declared, probe.role);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["queue"], "spooling", "{} (role {})", probe.declared, probe.role);
    }
    // Every readiness probe now sees the outage; the liveness checks must not.
    let mut restarted = Vec::new();
    for probe in probes.iter().filter(|p| p.liveness) {
        let status = probe_status(&running, probe).await;
        if status != Some(200) {
            restarted.push(format!("{} GET {} (role {}): {status:?}", probe.declared, probe.path, probe.role));
        }
    }
    assert!(
        restarted.is_empty(),
        "liveness checks failing with Redis stopped (restart loops):\n{}",
        restarted.join("\n")
    );
}

#[test]
fn every_role_in_deploy_files_is_one_serve_accepts() {
    use clap::ValueEnum as _;
    let accepted: BTreeSet<String> = followd::Role::value_variants()
        .iter()
        .filter_map(|role| Some(role.to_possible_value()?.get_name().to_owned()))
        .collect();
    let mut used = BTreeSet::new();
    for path in deploy_files() {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (at, _) in text.match_indices("--role") {
            let after =
                text[at + "--role".len()..].trim_start_matches(|c: char| c.is_whitespace() || "\"',=-".contains(c));
            let value: String = after.chars().take_while(char::is_ascii_alphanumeric).collect();
            if value.is_empty() {
                continue;
            }
            assert!(ROLES.contains(&value.as_str()), "{}: --role {value} is not one of {ROLES:?}", shown(&path));
            assert!(
                accepted.contains(&value),
                "{}: `serve` does not accept --role {value} ({accepted:?})",
                shown(&path)
            );
            used.insert(value);
        }
    }
    for role in ["receiver", "worker"] {
        assert!(used.contains(role), "no deploy file runs `serve --role {role}`");
    }
}

#[test]
fn every_followd_environment_variable_in_deploy_files_is_one_the_code_knows() {
    let is_name_char = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_';
    let mut known: BTreeSet<String> = CONTRACT_ENV.iter().map(|s| (*s).to_owned()).collect();
    for documented in [read("README.md"), read("src/config/default.toml")] {
        known.extend(words_with_prefix(&documented, "FOLLOWD_", is_name_char));
    }
    let defaults = default_toml();
    // FOLLOWD_ + a key path of default.toml in upper case, joined by `__`.
    let is_key_path = |name: &str| {
        let path = name.trim_start_matches("FOLLOWD_");
        let mut table = &defaults;
        let mut segments = path.split("__").peekable();
        while let Some(segment) = segments.next() {
            let segment = segment.to_lowercase();
            match (table.get(&segment), segments.peek()) {
                (Some(toml::Value::Table(inner)), Some(_)) => table = inner,
                (Some(value), None) => return !value.is_table(),
                _ => return false,
            }
        }
        false
    };
    let mut used = 0;
    for path in deploy_files() {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for name in words_with_prefix(&text, "FOLLOWD_", is_name_char) {
            let name = name.trim_end_matches('_');
            if name.len() <= "FOLLOWD".len() {
                continue; // `FOLLOWD_*` and the like: the prefix itself, in prose
            }
            used += 1;
            assert!(
                known.contains(name) || is_key_path(name),
                "{}: {name} is neither a documented variable nor FOLLOWD_<KEY PATH> of src/config/default.toml; \
                 followd would refuse it as an unknown configuration key",
                shown(&path)
            );
        }
    }
    assert!(used > 0, "no FOLLOWD_ variable found in deploy/");
}

/// A metric's name without the series suffix a histogram's buckets, sum and count add.
fn metric_base(name: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| name.strip_suffix(suffix)).unwrap_or(name)
}

/// The samples of a Prometheus text exposition: metric name → (labels as written, value).
fn samples(exposition: &str) -> BTreeMap<String, Vec<(String, f64)>> {
    let mut samples: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for line in exposition.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("`{line}`: {e}"));
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        samples.entry(name.to_owned()).or_default().push((labels.to_owned(), value));
    }
    samples
}

/// Every `followd_*` metric a dashboard queries, by dashboard, with the series suffixes stripped.
fn dashboard_metrics() -> BTreeMap<PathBuf, BTreeSet<String>> {
    let dashboards: Vec<PathBuf> = deploy_files().into_iter().filter(|p| has_extension(p, &["json"])).collect();
    assert!(!dashboards.is_empty(), "no Grafana dashboard under deploy/");
    dashboards
        .into_iter()
        .map(|path| {
            let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let mut strings = Vec::new();
            json_strings(&dashboard, &mut strings);
            let metrics: BTreeSet<String> = strings
                .iter()
                .flat_map(|s| {
                    words_with_prefix(s, "followd_", |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                })
                .map(|metric| metric_base(&metric).to_owned())
                .collect();
            assert!(metrics.len() >= 10, "{}: only {} metrics on the dashboard", shown(&path), metrics.len());
            (path, metrics)
        })
        .collect()
}

/// Copies a directory tree (the shipped rules, which the image copies whole).
fn copy_tree(from: &Path, to: &Path) {
    for file in files_under(from) {
        let target = to.join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
    }
}

/// A generic webhook: one tag added to a contact.
fn tag_added(id: &str, location: &str, contact: &str, tag: &str) -> Vec<u8> {
    serde_json::json!({"id": id, "type": "tag_added", "location_id": location, "contact_id": contact, "tag": tag})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn grafana_queries_only_metrics_a_running_followd_exposes_after_real_traffic() {
    use support::app::{SECRET, SIGNATURE_HEADER, sign};
    use support::ghl::{ed25519_signature, fresh, vectors_path};
    use support::upstream::FakeUpstream;

    let dashboards = dashboard_metrics();
    let upstream = FakeUpstream::start().await;
    upstream.set_retry_after(1);
    upstream.fail_contact("c-dead", 422, 1); // refused for good: a dead letter
    upstream.fail_contact("c-retry", 503, 1); // a passing failure: a retry
    upstream.fail_contact("c-pause", 429, 1); // throttled: the location pauses

    // The test configuration (a signed generic source), with the shipped rules in place of the test ones and a
    // GoHighLevel source that trusts the test key.
    let dir = tempfile::tempdir().unwrap();
    let config_path = support::process::write_config(dir.path(), &upstream.url, None);
    let rules_dir = dir.path().join("rules");
    std::fs::remove_dir_all(&rules_dir).unwrap();
    copy_tree(&root().join("rules"), &rules_dir);
    let ghl_key = vectors_path("keys/test_ed25519_public.pem");
    let ghl_source = format!(
        "\n[[source]]\nname = \"ghl\"\nformat = \"ghl\"\nverify = {{ scheme = \"ghl\", public_keys = [\"file:{ghl_key}\"] }}\n"
    );
    let mut config = std::fs::read_to_string(&config_path).unwrap();
    config.push_str(&ghl_source);
    std::fs::write(&config_path, config).unwrap();
    let followd = support::process::Followd::start(&config_path, support::free_port(), &[]).await;
    let addr = followd.addr.clone();
    let client = reqwest::Client::new();
    let post = |source: &str, body: Vec<u8>, header: (&'static str, String)| {
        client
            .post(format!("{addr}/webhooks/{source}"))
            .header("content-type", "application/json")
            .header(header.0, header.1)
            .body(body)
            .send()
    };
    let signed = |body: &[u8]| (SIGNATURE_HEADER, sign(SECRET, body));

    let vip = tag_added("evt-1", "loc-1", "c-1", "vip"); // vip-gets-account-team, in rules/tags.toml
    assert_eq!(post("test", vip.clone(), signed(&vip)).await.unwrap().status(), 202);
    assert_eq!(post("test", vip.clone(), signed(&vip)).await.unwrap().status(), 200, "a duplicate");
    let forged = (SIGNATURE_HEADER, sign("not-the-secret", &vip));
    assert_eq!(post("test", vip.clone(), forged).await.unwrap().status(), 401);
    for (id, location, contact) in
        [("evt-2", "loc-1", "c-dead"), ("evt-3", "loc-1", "c-retry"), ("evt-4", "loc-2", "c-pause")]
    {
        let body = tag_added(id, location, contact, "vip");
        assert_eq!(post("test", body.clone(), signed(&body)).await.unwrap().status(), 202, "{contact}");
    }
    let unused = fresh("ContactDndUpdate", "wh-1", None, None); // a type followd acknowledges and ignores
    let ghl_signature = ("x-ghl-signature", ed25519_signature(&unused));
    assert_eq!(post("ghl", unused, ghl_signature).await.unwrap().status(), 200);
    // A broken rule edit and a reload: rejected, the shipped rules stay live.
    std::fs::write(rules_dir.join("broken.toml"), "[[rule]]\nname = \"broken\"\n").unwrap();
    let pid = followd.child.id().expect("followd runs");
    let hup = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
    assert!(hup.success(), "kill -HUP {pid}");

    // What that traffic must have counted: (metric, a label it carries or "").
    let counted = [
        ("followd_webhooks_received_total", r#"result="202""#),
        ("followd_webhooks_received_total", r#"result="200""#),
        ("followd_webhooks_received_total", r#"result="bad_signature""#),
        ("followd_webhooks_ignored_total", r#"source="ghl""#),
        ("followd_events_total", r#"kind="tag_added""#),
        ("followd_rule_matches_total", r#"rule="vip-gets-account-team""#),
        ("followd_operations_enqueued_total", ""),
        ("followd_deliveries_total", r#"result="delivered""#),
        ("followd_operations_delivered_total", ""),
        ("followd_upstream_requests_total", r#"method="POST""#),
        ("followd_upstream_request_duration_seconds_count", ""),
        ("followd_delivery_retries_total", ""),
        ("followd_location_pauses_total", ""),
        ("followd_dead_letters_total", ""),
        ("followd_queue_dead_letters", ""),
        ("followd_rules_reloads_total", r#"result="error""#),
        ("followd_rules_reload_failures_total", ""),
        ("followd_rules_loaded", ""),
    ];
    let scrape = || async {
        let response = reqwest::get(format!("{}/metrics", followd.addr)).await.expect("GET /metrics");
        assert_eq!(response.status(), 200, "GET /metrics");
        samples(&response.text().await.expect("the /metrics body"))
    };
    let uncounted = |samples: &BTreeMap<String, Vec<(String, f64)>>| -> Vec<String> {
        counted
            .iter()
            .filter(|(name, label)| {
                !samples.get(*name).into_iter().flatten().any(|(labels, value)| labels.contains(label) && *value > 0.0)
            })
            .map(|(name, label)| format!("{name}{{{label}}}"))
            .collect()
    };
    support::eventually(Duration::from_secs(30), || async { uncounted(&scrape().await).is_empty() }).await;
    let exposed = scrape().await;
    let missing = uncounted(&exposed);
    assert!(missing.is_empty(), "the traffic was not counted in /metrics (as > 0): {missing:?}");

    let exposed: BTreeSet<&str> = exposed.keys().map(|name| metric_base(name)).collect();
    for (path, metrics) in dashboards {
        let missing: Vec<&String> = metrics.iter().filter(|metric| !exposed.contains(metric.as_str())).collect();
        assert!(missing.is_empty(), "{} queries metrics a running followd does not expose: {missing:?}", shown(&path));
    }
}

#[test]
fn the_systemd_unit_serves_and_outlasts_the_shutdown_grace() {
    let unit = read("deploy/systemd/followd.service");
    let settings: BTreeMap<&str, &str> = unit
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#') && !line.starts_with('['))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim(), value.trim()))
        .collect();
    let exec_start: Vec<&str> = settings.get("ExecStart").expect("ExecStart").split_whitespace().collect();
    assert!(exec_start[0].starts_with('/') && exec_start[0].ends_with("/followd"), "ExecStart runs {}", exec_start[0]);
    assert_eq!(exec_start.get(1), Some(&"serve"), "ExecStart should run `followd serve`");
    let stop = duration(settings.get("TimeoutStopSec").expect("TimeoutStopSec"));
    assert!(stop > shutdown_grace(), "TimeoutStopSec {stop:?} must exceed shutdown_grace {:?}", shutdown_grace());
    assert_eq!(settings.get("KillSignal"), Some(&"SIGTERM"));
    assert!(settings.get("ExecReload").is_some_and(|reload| reload.contains("-HUP")), "ExecReload sends SIGHUP");
    assert!(settings.get("User").is_some_and(|user| *user != "root"), "the unit runs as a service user");
}

#[test]
fn container_stop_grace_periods_outlast_the_shutdown_grace() {
    let grace = shutdown_grace();
    for (name, service) in compose_followd_services() {
        let period = scalar(&service["stop_grace_period"]).unwrap_or_else(|| {
            panic!("compose service {name}: stop_grace_period (Docker's default 10 s is too short)")
        });
        assert!(duration(&period) > grace, "compose service {name}: stop_grace_period {period} <= shutdown_grace");
    }
    for deployment in deployments() {
        let period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        assert!(
            Duration::from_secs(period) > grace,
            "Deployment {}: terminationGracePeriodSeconds",
            name_of(&deployment)
        );
    }
}

#[test]
fn the_shipped_configuration_loads_and_kubernetes_holds_the_same_text() {
    let config = read("deploy/followd.toml");
    if let Err(e) = followd::config::Config::from_toml(&without_env_secrets(&config), &root().join("deploy")) {
        panic!("deploy/followd.toml is refused by followd:\n{e}");
    }
    let config_maps = of_kind("ConfigMap");
    let in_kubernetes = config_maps
        .iter()
        .find_map(|map| map["data"]["followd.toml"].as_str())
        .expect("a ConfigMap holds followd.toml");
    assert_eq!(in_kubernetes, config, "the Kubernetes followd.toml differs from deploy/followd.toml");
}

#[test]
fn every_secret_the_configuration_names_reaches_every_followd_container() {
    let needed = env_secrets(&read("deploy/followd.toml"));
    for (name, service) in compose_followd_services() {
        let env = compose_env(&service);
        for secret in &needed {
            assert!(env.contains_key(secret), "compose service {name} lacks {secret}, which followd.toml reads");
        }
    }
    let secrets = of_kind("Secret");
    for deployment in deployments() {
        for container in containers(&deployment) {
            let env = container_env(container);
            for secret in &needed {
                assert!(
                    env.contains_key(secret),
                    "Deployment {} lacks {secret}, which followd.toml reads",
                    name_of(&deployment)
                );
            }
            for var in container["env"].as_sequence().into_iter().flatten() {
                let reference = &var["valueFrom"]["secretKeyRef"];
                let (Some(secret), Some(key)) = (reference["name"].as_str(), reference["key"].as_str()) else {
                    continue;
                };
                let provided = secrets
                    .iter()
                    .any(|s| name_of(s) == secret && (!s["stringData"][key].is_null() || !s["data"][key].is_null()));
                assert!(provided, "Deployment {}: secret {secret} has no key {key}", name_of(&deployment));
            }
        }
    }
}

#[test]
fn rules_and_configuration_are_mounted_where_followd_reads_them() {
    let image_env = dockerfile_env();
    let rules_dir = image_env.get("FOLLOWD_RULES_DIR").expect("the image sets FOLLOWD_RULES_DIR");
    assert!(
        dockerfile_args("COPY").iter().any(|args| args.split_whitespace().eq(["rules", rules_dir.as_str()])),
        "the image copies the shipped rules/ to FOLLOWD_RULES_DIR ({rules_dir})"
    );
    for (name, service) in compose_followd_services() {
        let volumes: Vec<String> = service["volumes"].as_sequence().into_iter().flatten().filter_map(scalar).collect();
        assert!(
            volumes.iter().any(|v| v.split(':').nth(1) == Some(rules_dir.as_str()) && v.ends_with(":ro")),
            "compose service {name} mounts no rules read-only at {rules_dir}: {volumes:?}"
        );
        if let Some(Some(config)) = compose_env(&service).get("FOLLOWD_CONFIG") {
            assert!(
                volumes.iter().any(|v| v.split(':').nth(1) == Some(config.as_str())),
                "compose service {name}: {config} is not mounted"
            );
        }
    }
    let config_maps = of_kind("ConfigMap");
    for deployment in deployments() {
        let pod = &deployment["spec"]["template"]["spec"];
        let volumes = pod["volumes"].as_sequence().expect("the pod has volumes");
        let config_map_of = |volume: &str| {
            let map = volumes.iter().find(|v| v["name"].as_str() == Some(volume))?["configMap"]["name"].as_str()?;
            config_maps.iter().find(|m| name_of(m) == map)
        };
        for container in containers(&deployment) {
            let mounts = container["volumeMounts"].as_sequence().expect("the container mounts volumes");
            let mounted_at = |dir: &str| {
                mounts
                    .iter()
                    .find(|m| m["mountPath"].as_str() == Some(dir))
                    .and_then(|m| config_map_of(m["name"].as_str()?))
            };
            let where_ = format!("Deployment {}", name_of(&deployment));
            let rules = mounted_at(rules_dir).unwrap_or_else(|| panic!("{where_}: no ConfigMap at {rules_dir}"));
            let files: Vec<(PathBuf, String)> = rules["data"]
                .as_mapping()
                .expect("the rules ConfigMap has data")
                .iter()
                .map(|(file, text)| (PathBuf::from(file.as_str().unwrap()), text.as_str().unwrap().to_owned()))
                .collect();
            assert!(files.iter().all(|(file, _)| has_extension(file, &["toml"])), "{where_}: rule keys end in .toml");
            if let Err(e) = followd::rules::RuleSet::compile(&files) {
                panic!("the rules in ConfigMap {} do not compile:\n{e}", name_of(rules));
            }
            let config = container_env(container).get("FOLLOWD_CONFIG").cloned().flatten();
            let config = config.unwrap_or_else(|| panic!("{where_}: FOLLOWD_CONFIG is not set"));
            let (dir, file) = config.rsplit_once('/').expect("an absolute FOLLOWD_CONFIG");
            let map = mounted_at(dir).unwrap_or_else(|| panic!("{where_}: no ConfigMap mounted at {dir}"));
            assert!(map["data"][file].is_string(), "{where_}: ConfigMap {} has no {file}", name_of(map));
        }
    }
}

#[test]
fn kubernetes_pods_run_unprivileged_without_service_link_variables() {
    for deployment in deployments() {
        let pod = &deployment["spec"]["template"]["spec"];
        let where_ = format!("Deployment {}", name_of(&deployment));
        // Service links inject <SERVICE>_PORT and the like; for a Service named followd-* they start with
        // FOLLOWD_, which followd reads as unknown configuration keys and refuses to start.
        assert_eq!(pod["enableServiceLinks"].as_bool(), Some(false), "{where_}: enableServiceLinks must be false");
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true), "{where_}: runAsNonRoot");
        for container in containers(&deployment) {
            let security = &container["securityContext"];
            assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true), "{where_}: read-only root");
            assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false), "{where_}: no escalation");
            assert!(!container["resources"]["requests"].is_null(), "{where_}: resource requests");
        }
    }
    let budgets: BTreeSet<String> = of_kind("PodDisruptionBudget")
        .iter()
        .filter_map(|b| b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"].as_str().map(str::to_owned))
        .collect();
    for deployment in deployments() {
        let component = deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"].as_str();
        assert!(
            component.is_some_and(|c| budgets.contains(c)),
            "Deployment {} has no PodDisruptionBudget",
            name_of(&deployment)
        );
    }
}

#[test]
fn the_kustomization_lists_every_manifest_in_the_folder() {
    let kustomization = yaml("deploy/kubernetes/kustomization.yaml").remove(0);
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_sequence()
        .expect("kustomization.yaml lists resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let present: BTreeSet<String> = files_under(&root().join("deploy/kubernetes"))
        .iter()
        .filter(|p| has_extension(p, &["yaml", "yml"]))
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .filter(|name| name != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization.yaml resources and the manifests in deploy/kubernetes differ");
}

#[test]
fn the_image_builds_from_what_the_context_sends_and_runs_followd_serve_as_non_root() {
    let ignore = read("deploy/Dockerfile.dockerignore");
    let allowed: BTreeSet<&str> = ignore.lines().filter_map(|l| l.trim().strip_prefix('!')).collect();
    assert!(ignore.lines().any(|l| l.trim() == "*"), "the dockerignore should exclude everything not listed");
    let mut copied = BTreeSet::new();
    for args in dockerfile_args("COPY") {
        if args.split_whitespace().any(|word| word.starts_with("--from")) {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        for source in &words[..words.len() - 1] {
            assert!(root().join(source).exists(), "the Dockerfile copies {source}, which the repository lacks");
            assert!(allowed.contains(source), "the Dockerfile copies {source}, which the dockerignore leaves out");
            copied.insert((*source).to_owned());
        }
    }
    // Every target Cargo.toml declares must be in the build context, or cargo refuses the manifest.
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let default_dirs =
        [("bin", "src"), ("lib", "src"), ("bench", "benches"), ("test", "tests"), ("example", "examples")];
    for (section, default_dir) in default_dirs {
        let targets: Vec<&toml::Value> = match manifest.get(section) {
            Some(toml::Value::Array(targets)) => targets.iter().collect(),
            Some(target) => vec![target],
            None => Vec::new(),
        };
        for target in targets {
            let path = target.get("path").and_then(|p| p.as_str()).unwrap_or(default_dir);
            let top = path.split('/').next().unwrap();
            assert!(
                copied.contains(top),
                "Cargo.toml's [{section}] lives in {top}/, which the image build does not copy"
            );
        }
    }
    let binary =
        manifest.get("bin").and_then(|b| b.as_array()).and_then(|bins| bins[0]["name"].as_str()).unwrap_or("followd");
    let entrypoint = exec_form(&dockerfile_args("ENTRYPOINT")[0]);
    assert_eq!(entrypoint, [binary], "ENTRYPOINT runs the crate's binary");
    assert_eq!(exec_form(&dockerfile_args("CMD")[0]), ["serve"], "CMD is `serve`");
    let user = dockerfile_args("USER").pop().expect("the image names a USER");
    let user = user.split(':').next().unwrap();
    assert!(user != "root" && user != "0", "the image runs as root");
    let data_dir = dockerfile_env().remove("FOLLOWD_DATA_DIR").expect("the image sets FOLLOWD_DATA_DIR");
    assert!(
        dockerfile_args("VOLUME").iter().any(|v| v.contains(&data_dir)),
        "FOLLOWD_DATA_DIR {data_dir} is not a VOLUME"
    );
}
