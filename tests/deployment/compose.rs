//! `examples/docker-compose.yml`: services, the sidecar, and every command; and the
//! same for the example merged with its InfluxDB 1.x override
//! (`examples/docker-compose.influxdb1.yml`), which the Docker test runs, and with the
//! highly available control (`examples/docker-compose.ha.yml`), which Docker Compose
//! itself must accept too (`docker-compose config`).

use super::*;

/// Compose's interpolation: `$$` is a literal `$`; `${NAME:?msg}`, `${NAME:-default}` and
/// `${NAME}` come from the user's environment (here: a placeholder or the default).
pub(crate) fn compose_interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').expect("unterminated ${");
            let expr = &after[..end];
            match expr.split_once(":-") {
                Some((_, default)) => out.push_str(default),
                None => {
                    let name = expr.split(":?").next().unwrap();
                    out.push_str(&format!("placeholder-{}", name.to_ascii_lowercase()));
                }
            }
            rest = &after[end + 1..];
        } else {
            panic!("compose: a bare `$` interpolates from the host; write `$$`: {text}");
        }
    }
    out.push_str(rest);
    out
}

pub(crate) fn yaml_strings(value: &Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => panic!("expected a string, got {other:?}"),
            })
            .collect(),
        other => panic!("expected a string or a list, got {other:?}"),
    }
}

/// `environment:` in the map form or the `K=V` list form, interpolated.
pub(crate) fn compose_env(service: &Value) -> Env {
    let mut env = Env::new();
    match &service["environment"] {
        Value::Mapping(map) => {
            for (k, v) in map {
                let value = match v {
                    Value::String(s) => compose_interpolate(s),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => String::new(),
                };
                env.insert(k.as_str().unwrap().to_owned(), value);
            }
        }
        Value::Sequence(items) => {
            for item in items {
                let (k, v) = item.as_str().unwrap().split_once('=').unwrap();
                env.insert(k.to_owned(), compose_interpolate(v));
            }
        }
        _ => {}
    }
    env
}

/// A command that compose gives as a string is split like a shell would.
pub(crate) fn compose_argv(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(
            shell::commands(&compose_interpolate(s))
                .into_iter()
                .flat_map(|c| c.argv)
                .collect(),
        ),
        other => Some(
            yaml_strings(other)
                .iter()
                .map(|s| compose_interpolate(s))
                .collect(),
        ),
    }
}

pub(crate) fn compose() -> Value {
    compose_file("examples/docker-compose.yml")
}

fn compose_file(path: &str) -> Value {
    let mut value: Value =
        serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is YAML: {e}"));
    value.apply_merge().expect("YAML merge keys");
    value
}

/// The example with `examples/docker-compose.influxdb1.yml` merged in.
pub(crate) fn compose_influxdb1() -> Value {
    compose_merged(&["examples/docker-compose.influxdb1.yml"])
}

/// The example with `overrides` merged in, in order, as Compose merges an override: per
/// service, mappings (`environment`, `healthcheck`, `depends_on`) key by key, `volumes`
/// appended, anything else replaced; `image:` interpolated. Services and volumes of
/// an override's own are added (the InfluxDB 1.x one adds none: it names only the
/// example's services).
pub(crate) fn compose_merged(overrides: &[&str]) -> Value {
    let mut merged = compose();
    for path in overrides {
        let over = compose_file(path);
        for (name, service) in over["services"].as_mapping().expect("services") {
            let services = merged["services"].as_mapping_mut().unwrap();
            if services.get(name).is_none() {
                assert!(
                    !path.ends_with("influxdb1.yml"),
                    "the override names a service the example lacks: {name:?}"
                );
                services.insert(name.clone(), Value::Mapping(Default::default()));
            }
            let target = services.get_mut(name).unwrap().as_mapping_mut().unwrap();
            for (key, value) in service.as_mapping().unwrap() {
                match (target.get_mut(key), value) {
                    (Some(Value::Mapping(base)), Value::Mapping(add)) => {
                        for (k, v) in add {
                            base.insert(k.clone(), v.clone());
                        }
                    }
                    (Some(Value::Sequence(base)), Value::Sequence(add)) if key == "volumes" => {
                        base.extend(add.iter().cloned());
                    }
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
            if let Some(Value::String(image)) = target.get_mut("image") {
                *image = compose_interpolate(image);
            }
        }
        if let Some(volumes) = over["volumes"].as_mapping() {
            let all = merged["volumes"].as_mapping_mut().unwrap();
            for (name, volume) in volumes {
                all.insert(name.clone(), volume.clone());
            }
        }
    }
    merged
}

/// (origin, argv, env) for every leasehold invocation of a compose service: its command
/// (with the image's ENTRYPOINT/CMD for the leasehold image) and its health check.
pub(crate) fn compose_invocations(name: &str, service: &Value) -> Vec<(String, Vec<String>, Env)> {
    let image = image();
    let (is_leasehold, mut env) = image.base_env(&service["image"]);
    env.extend(compose_env(service));
    let mut out = Vec::new();

    let entrypoint = compose_argv(&service["entrypoint"]);
    let command = compose_argv(&service["command"]);
    let argv = image.argv(entrypoint, command, is_leasehold);
    for argv in invocations(&argv) {
        out.push((format!("compose service {name}"), argv, env.clone()));
    }

    let test = &service["healthcheck"]["test"];
    let probe = match test {
        Value::Sequence(_) => {
            let words = yaml_strings(test);
            match words[0].as_str() {
                "CMD" => words[1..].to_vec(),
                "CMD-SHELL" => vec!["sh".into(), "-c".into(), words[1].clone()],
                _ => Vec::new(),
            }
        }
        Value::String(s) => vec!["sh".into(), "-c".into(), s.clone()],
        _ => Vec::new(),
    };
    for argv in invocations(&probe) {
        out.push((
            format!("compose service {name} healthcheck"),
            argv,
            env.clone(),
        ));
    }
    out
}

#[test]
pub(crate) fn compose_file_has_the_services_and_every_command_parses() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(Value::as_str).collect();
    for expected in ["influxdb", "control", "admin", "app", "leasehold"] {
        assert!(
            names.contains(expected),
            "compose service {expected} is missing: {names:?}"
        );
    }
    let influxdb = &compose["services"]["influxdb"];
    assert!(
        influxdb["image"]
            .as_str()
            .unwrap()
            .starts_with("influxdb:2")
    );
    let init = compose_env(influxdb);
    assert_eq!(
        init.get("DOCKER_INFLUXDB_INIT_MODE").map(String::as_str),
        Some("setup")
    );
    for var in ["USERNAME", "PASSWORD", "ORG", "BUCKET", "ADMIN_TOKEN"] {
        assert!(
            init.contains_key(&format!("DOCKER_INFLUXDB_INIT_{var}")),
            "{var}"
        );
    }

    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        for (origin, argv, env) in compose_invocations(name, service) {
            let cli = parse(&origin, &argv, &env);
            if let Command::Proxy(proxy) = &cli.command {
                let listen: Vec<String> = proxy.listen.iter().map(ToString::to_string).collect();
                assert_eq!(listen, ["127.0.0.1:8086"], "{origin}");
                assert_eq!(proxy.identity, "app", "{origin}");
                assert_eq!(
                    proxy.ticket.as_deref(),
                    Some("/tickets/app.ticket"),
                    "{origin}"
                );
            }
            seen.entry(name.to_owned())
                .or_default()
                .push(subcommand(&argv));
        }
        if service["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("leasehold"))
        {
            for var in compose_env(service).keys() {
                if var.starts_with("LEASEHOLD_") || var.starts_with("INFLUXDB_") {
                    assert!(
                        cli_env_vars().contains(var),
                        "{name}: {var} is read by nothing"
                    );
                }
            }
        }
    }
    let expect = |service: &str, commands: &[&str]| {
        let got = seen.get(service).cloned().unwrap_or_default();
        assert_eq!(
            got, commands,
            "leasehold commands of compose service {service}"
        );
    };
    expect("control", &["control init", "control serve", "health"]);
    expect(
        "admin",
        &["member list", "addon configure influxdb", "ticket create"],
    );
    expect("leasehold", &["proxy", "health"]);

    // The sidecar shares the app's network namespace and keeps its identity on a volume;
    // the control's healthcheck is off (the image's probes a proxy's port).
    let sidecar = &compose["services"]["leasehold"];
    assert_eq!(sidecar["network_mode"].as_str(), Some("service:app"));
    let volumes = yaml_strings(&sidecar["volumes"]);
    assert!(
        volumes.iter().any(|v| v.ends_with(":/var/lib/leasehold")),
        "{volumes:?}"
    );
    assert!(
        volumes.iter().any(|v| v.contains(":/tickets")),
        "{volumes:?}"
    );
    let health = &sidecar["healthcheck"]["test"];
    assert!(
        yaml_strings(health).iter().any(|w| w.ends_with("/readyz")),
        "{health:?}"
    );
    // The control's health check probes its own admin listener, not the image's (a
    // proxy's port).
    let probe = yaml_strings(&compose["services"]["control"]["healthcheck"]["test"]);
    assert!(
        probe.iter().any(|w| w == "http://127.0.0.1:4101/healthz"),
        "{probe:?}"
    );
    assert_eq!(
        compose["services"]["leasehold"]["depends_on"]["admin"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
    // `control init` enrolls the admin identity at the control's loopback address.
    assert_eq!(
        compose["services"]["admin"]["network_mode"].as_str(),
        Some("service:control")
    );
    // Debian's docker-compose 1.29 refuses a top-level `name:`.
    assert!(compose["name"].is_null(), "no top-level name:");
    for service in ["control", "admin", "leasehold"] {
        assert_eq!(
            compose["services"][service]["read_only"].as_bool(),
            Some(true),
            "{service} runs on a read-only root filesystem"
        );
    }
    // Docker's SIGKILL comes after the proxy's own drain deadline.
    let stop = compose["services"]["leasehold"]["stop_grace_period"]
        .as_str()
        .expect("the sidecar's stop_grace_period");
    let stop = humantime::parse_duration(stop).unwrap();
    let (_, argv, env) = compose_invocations("leasehold", sidecar).remove(0);
    let Command::Proxy(proxy) = parse("compose sidecar", &argv, &env).command else {
        panic!("the sidecar runs the proxy");
    };
    assert!(
        stop.as_secs() > proxy.shutdown_grace,
        "stop_grace_period {stop:?} must exceed --shutdown-grace {}s",
        proxy.shutdown_grace
    );
}

#[test]
pub(crate) fn compose_influxdb1_override_has_every_command_parse() {
    let compose = compose_influxdb1();
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, service) in compose["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        for (origin, argv, env) in compose_invocations(name, service) {
            let origin = format!("{origin} (with the InfluxDB 1.x override)");
            if let Command::Proxy(proxy) = parse(&origin, &argv, &env).command {
                let listen: Vec<String> = proxy.listen.iter().map(ToString::to_string).collect();
                assert_eq!(listen, ["127.0.0.1:8086"], "{origin}");
            }
            seen.entry(name.to_owned())
                .or_default()
                .push(subcommand(&argv));
        }
    }
    assert_eq!(seen["control"], ["control init", "control serve", "health"]);
    assert_eq!(
        seen["admin"],
        [
            "member list",
            "addon configure influxdb-v1",
            "ticket create"
        ]
    );
    assert_eq!(seen["leasehold"], ["proxy", "health"]);
    let image = |service: &str| compose["services"][service]["image"].as_str().unwrap();
    for service in ["influxdb", "influxdb-ids", "app"] {
        assert_eq!(image(service), "leasehold-influxdb1:bookworm", "{service}");
    }
    for service in ["control", "admin", "leasehold"] {
        assert_eq!(image(service), "leasehold:latest", "{service}");
    }
    // Secrets come from the environment; the set-up job's shell hands the password
    // to curl on stdin.
    let setup = compose_argv(&compose["services"]["influxdb-ids"]["command"]).unwrap();
    let curls: Vec<Vec<String>> = shell::commands(&setup[0])
        .into_iter()
        .map(|c| c.argv)
        .filter(|argv| argv[0] == "curl")
        .collect();
    assert_eq!(curls.len(), 2, "{setup:?}");
    for argv in curls {
        assert!(
            !argv
                .iter()
                .any(|w| w == "-u" || w == "--user" || w.contains("PASSWORD")),
            "a password in curl's argv: {argv:?}"
        );
    }
    let health = yaml_strings(&compose["services"]["influxdb"]["healthcheck"]["test"]);
    assert!(health.iter().any(|w| w.ends_with("/ping")), "{health:?}");
}

/// The replicas of the highly available variant.
const HA_REPLICAS: [&str; 3] = ["control", "control-2", "control-3"];

#[test]
pub(crate) fn compose_ha_override_runs_three_replicas_on_postgres_and_every_command_parses() {
    let compose = compose_merged(&[
        "examples/docker-compose.influxdb1.yml",
        "examples/docker-compose.ha.yml",
    ]);
    let services = compose["services"].as_mapping().unwrap();
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut advertised: Vec<String> = Vec::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        for (origin, argv, env) in compose_invocations(name, service) {
            let origin = format!("{origin} (highly available)");
            parse(&origin, &argv, &env);
            if subcommand(&argv) == "control init" {
                let at = argv.iter().position(|w| w == "--advertise").unwrap();
                advertised = argv[at + 1].split(',').map(str::to_owned).collect();
            }
            seen.entry(name.to_owned())
                .or_default()
                .push(subcommand(&argv));
        }
    }
    assert_eq!(seen["control"], ["control init", "control serve", "health"]);
    for replica in &HA_REPLICAS[1..] {
        assert_eq!(seen[*replica], ["control serve", "health"], "{replica}");
    }
    assert_eq!(seen["leasehold"], ["proxy", "health"]);
    // Tickets carry every replica's address, each a service of this file.
    let hosts: Vec<&str> = advertised
        .iter()
        .map(|a| a.rsplit_once(':').unwrap().0)
        .collect();
    assert_eq!(hosts, HA_REPLICAS, "{advertised:?}");

    for replica in HA_REPLICAS {
        let service = &compose["services"][replica];
        // The store URL (with its password) from the environment, never in argv.
        let url = compose_env(service)
            .remove("LEASEHOLD_STORE_URL")
            .unwrap_or_else(|| panic!("{replica}: LEASEHOLD_STORE_URL"));
        assert!(
            url.starts_with("postgres://") && url.contains("@postgres:5432/"),
            "{replica}: {url}"
        );
        let raw = service["environment"]["LEASEHOLD_STORE_URL"]
            .as_str()
            .unwrap();
        assert!(
            raw.contains("${LEASEHOLD_PG_PASSWORD:?"),
            "{replica}: {raw}"
        );
        // Healthy when ready: the store answers and the add-on is configured.
        let probe = yaml_strings(&service["healthcheck"]["test"]);
        assert!(
            probe.iter().any(|w| w == "http://127.0.0.1:4101/readyz"),
            "{replica}: {probe:?}"
        );
        assert!(service["healthcheck"]["disable"].is_null(), "{replica}");
        assert_eq!(service["read_only"].as_bool(), Some(true), "{replica}");
    }
    // The other replicas take the first one's identity key from its data directory,
    // read-only.
    for replica in &HA_REPLICAS[1..] {
        let volumes = yaml_strings(&compose["services"][*replica]["volumes"]);
        assert!(
            volumes.iter().any(|v| v == "control-home:/first:ro"),
            "{replica}: {volumes:?}"
        );
        let script = compose_argv(&compose["services"][*replica]["command"]).unwrap();
        assert!(
            script[0].contains("/first/control/identity.key"),
            "{replica}: {script:?}"
        );
    }
    // PostgreSQL is built from Debian's package on the project's base image.
    let postgres = &compose["services"]["postgres"];
    let context = postgres["build"]["context"].as_str().unwrap();
    let dockerfile = read(&format!("examples/{context}/Dockerfile"));
    assert!(dockerfile.contains("FROM ${BASE}"), "{dockerfile}");
    assert!(dockerfile.contains("ARG BASE=leasehold-base:bookworm"));
    assert!(dockerfile.contains("install -y --no-install-recommends postgresql"));
    assert!(repo(&format!("examples/{context}/entrypoint.sh")).is_file());
}

/// Docker Compose itself accepts the example and each of its variants (Debian's
/// `docker-compose` 1.29, which the Docker test uses: scripts/test.sh requires it).
#[test]
pub(crate) fn docker_compose_config_accepts_every_variant() {
    let variants: [&[&str]; 4] = [
        &["docker-compose.yml"],
        &["docker-compose.yml", "docker-compose.influxdb1.yml"],
        &["docker-compose.yml", "docker-compose.ha.yml"],
        &[
            "docker-compose.yml",
            "docker-compose.influxdb1.yml",
            "docker-compose.ha.yml",
        ],
    ];
    for files in variants {
        let mut command = std::process::Command::new("docker-compose");
        command.args(["-p", "leasehold-config-check"]);
        for file in files {
            command.arg("-f").arg(repo(&format!("examples/{file}")));
        }
        let out = command
            .args(["config", "-q"])
            .env("INFLUXDB_ADMIN_PASSWORD", "placeholder")
            .env("INFLUXDB_ADMIN_TOKEN", "placeholder")
            .env("LEASEHOLD_PG_PASSWORD", "placeholder")
            .output()
            .expect("docker-compose (Debian package docker-compose) is required");
        assert!(
            out.status.success(),
            "docker-compose config with {files:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
