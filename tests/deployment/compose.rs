//! `examples/docker-compose.yml`: services, the sidecar, and every command.

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
    let mut value: Value = serde_norway::from_str(&read("examples/docker-compose.yml"))
        .expect("docker-compose.yml is YAML");
    value.apply_merge().expect("YAML merge keys");
    value
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
    expect("control", &["control init", "control serve"]);
    expect(
        "admin",
        &["member list", "addon configure influxdb", "ticket create"],
    );
    expect("leasehold", &["proxy", "health"]);

    // The sidecar shares the app's network namespace and keeps its identity on a volume;
    // the control's healthcheck is off (it serves no HTTP).
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
    assert_eq!(
        compose["services"]["control"]["healthcheck"]["disable"].as_bool(),
        Some(true)
    );
    assert_eq!(
        compose["services"]["leasehold"]["depends_on"]["admin"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
}
