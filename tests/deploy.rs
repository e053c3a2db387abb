//! The deployment files under `deploy/` checked against the code, offline: they parse, they name the image,
//! port, routes, roles, environment variables and metrics the code has, and their time limits outlast
//! `shutdown_grace`. Nothing here builds an image or talks to a cluster; a file that drifts from the code
//! fails here instead of in production.

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

/// Every `.rs` file under src/, concatenated.
fn source_text() -> String {
    files_under(&root().join("src"))
        .into_iter()
        .filter(|path| has_extension(path, &["rs"]))
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
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

#[test]
fn probes_use_the_health_and_readiness_routes_the_app_serves() {
    let app = read("src/http/routes.rs");
    for route in ["\"/healthz\"", "\"/readyz\""] {
        assert!(app.contains(route), "src/http/routes.rs no longer serves {route}");
    }
    let port = listen_port();
    for deployment in deployments() {
        for container in containers(&deployment) {
            let named_ports: BTreeMap<&str, u64> = container["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p["name"].as_str()?, p["containerPort"].as_u64()?)))
                .collect();
            for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
                let get = &container[probe]["httpGet"];
                let where_ = format!("Deployment {} {probe}", name_of(&deployment));
                assert_eq!(get["path"].as_str(), Some(path), "{where_}: path");
                let probe_port = get["port"].as_u64().or_else(|| named_ports.get(get["port"].as_str()?).copied());
                assert_eq!(probe_port, Some(u64::from(port)), "{where_}: port");
            }
        }
    }
    for (name, service) in compose_followd_services() {
        let test: Vec<String> =
            service["healthcheck"]["test"].as_sequence().expect("a healthcheck").iter().filter_map(scalar).collect();
        let (probe_port, path) =
            http_target(&test).unwrap_or_else(|| panic!("compose service {name}: no URL in {test:?}"));
        assert_eq!(probe_port, port, "compose service {name}: healthcheck port");
        assert!(["/healthz", "/readyz"].contains(&path.as_str()), "compose service {name}: healthcheck path {path}");
    }
    let healthcheck = dockerfile_args("HEALTHCHECK");
    if let Some(healthcheck) = healthcheck.first() {
        let command = healthcheck.split_once("CMD").expect("HEALTHCHECK ... CMD").1;
        let (probe_port, path) = http_target(&exec_form(command.trim())).expect("the HEALTHCHECK calls a URL");
        assert_eq!((probe_port, path.as_str()), (port, "/healthz"), "the Dockerfile's HEALTHCHECK");
    }
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

#[test]
fn grafana_queries_only_use_metrics_the_code_emits() {
    let sources = source_text();
    let dashboards: Vec<PathBuf> = deploy_files().into_iter().filter(|p| has_extension(p, &["json"])).collect();
    assert!(!dashboards.is_empty(), "no Grafana dashboard under deploy/");
    for path in dashboards {
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut strings = Vec::new();
        json_strings(&dashboard, &mut strings);
        let metrics: BTreeSet<String> = strings
            .iter()
            .flat_map(|s| {
                words_with_prefix(s, "followd_", |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
            .collect();
        assert!(metrics.len() >= 10, "{}: only {} metrics on the dashboard", shown(&path), metrics.len());
        let missing: Vec<&String> = metrics
            .iter()
            .filter(|metric| {
                let emitted = |name: &str| sources.contains(&format!("\"{name}\""));
                let base = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| metric.strip_suffix(suffix));
                !emitted(metric) && !base.is_some_and(emitted)
            })
            .collect();
        assert!(missing.is_empty(), "{} queries metrics no code in src/ emits: {missing:?}", shown(&path));
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
