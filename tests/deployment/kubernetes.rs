//! The Kubernetes manifests: the native sidecar, the highly available control, and
//! every command.

use super::*;

pub(crate) fn k8s_documents() -> Vec<Value> {
    k8s_file("examples/kubernetes/leasehold.yaml")
}

fn k8s_file(path: &str) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("the manifest is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

pub(crate) fn k8s_object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in the manifest"))
}

/// (origin, argv, env) for a container's command and its exec probes.
pub(crate) fn k8s_invocations(pod: &str, container: &Value) -> Vec<(String, Vec<String>, Env)> {
    let image = image();
    let name = container["name"].as_str().unwrap();
    let origin = format!("kubernetes {pod}/{name}");
    let (is_leasehold, mut env) = image.base_env(&container["image"]);
    for var in container["env"].as_sequence().into_iter().flatten() {
        let value = var["value"]
            .as_str()
            .map_or_else(|| "placeholder-from-field".to_owned(), str::to_owned);
        env.insert(var["name"].as_str().unwrap().to_owned(), value);
    }
    let command = (!container["command"].is_null()).then(|| yaml_strings(&container["command"]));
    let args = (!container["args"].is_null()).then(|| yaml_strings(&container["args"]));
    let argv = image.argv(command, args, is_leasehold);
    let mut out: Vec<_> = invocations(&argv)
        .into_iter()
        .map(|a| (origin.clone(), a, env.clone()))
        .collect();
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let exec = &container[probe]["exec"]["command"];
        if !exec.is_null() {
            for a in invocations(&yaml_strings(exec)) {
                out.push((format!("{origin} {probe}"), a, env.clone()));
            }
        }
    }
    out
}

#[test]
pub(crate) fn kubernetes_manifest_runs_a_native_sidecar_and_every_command_parses() {
    let docs = k8s_documents();
    let control = k8s_object(&docs, "StatefulSet", "leasehold-control");
    let app = k8s_object(&docs, "Deployment", "app");
    k8s_object(&docs, "Service", "leasehold-control");

    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (pod, workload) in [("leasehold-control", control), ("app", app)] {
        let spec = &workload["spec"]["template"]["spec"];
        assert_eq!(
            spec["securityContext"]["runAsNonRoot"].as_bool(),
            Some(true),
            "{pod}"
        );
        let containers = spec["containers"]
            .as_sequence()
            .into_iter()
            .chain(spec["initContainers"].as_sequence())
            .flatten();
        for container in containers {
            for (origin, argv, env) in k8s_invocations(pod, container) {
                parse(&origin, &argv, &env);
                let key = format!("{pod}/{}", container["name"].as_str().unwrap());
                seen.entry(key).or_default().push(subcommand(&argv));
            }
        }
    }
    assert_eq!(
        seen.get("leasehold-control/control")
            .cloned()
            .unwrap_or_default(),
        ["control init", "control serve"]
    );
    assert_eq!(
        seen.get("app/leasehold").cloned().unwrap_or_default(),
        ["proxy", "health", "health", "health"]
    );

    // The native sidecar: an init container that keeps running, ready on /readyz,
    // enrolling from the ticket Secret.
    let pod = &app["spec"]["template"]["spec"];
    let sidecar = pod["initContainers"]
        .as_sequence()
        .and_then(|s| s.iter().find(|c| c["name"].as_str() == Some("leasehold")))
        .expect("the leasehold init container");
    assert_eq!(sidecar["restartPolicy"].as_str(), Some("Always"));
    let readiness = yaml_strings(&sidecar["readinessProbe"]["exec"]["command"]);
    assert!(
        readiness.iter().any(|w| w.ends_with("/readyz")),
        "{readiness:?}"
    );
    let command = yaml_strings(&sidecar["command"]);
    let ticket_at = command
        .iter()
        .position(|w| w == "--ticket")
        .expect("--ticket");
    let ticket = Path::new(&command[ticket_at + 1]);
    let mount = sidecar["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| Some(Path::new(m["mountPath"].as_str().unwrap())) == ticket.parent())
        .expect("the ticket's directory is a volume mount");
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(
        volume["secret"]["secretName"].as_str(),
        Some("leasehold-app-ticket")
    );
    assert!(
        pod["containers"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|c| c["name"].as_str() == Some("app")),
        "the application container"
    );
}

#[test]
pub(crate) fn kubernetes_ha_control_runs_three_replicas_from_secrets_with_probes() {
    let docs = k8s_file("examples/kubernetes/control-ha.yaml");
    let control = k8s_object(&docs, "StatefulSet", "leasehold-control");
    let service = k8s_object(&docs, "Service", "leasehold-control");
    k8s_object(&docs, "PodDisruptionBudget", "leasehold-control");
    assert_eq!(control["spec"]["replicas"].as_u64(), Some(3));
    // Headless: each replica's stable name is what tickets carry.
    assert_eq!(service["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(
        control["spec"]["serviceName"].as_str(),
        service["metadata"]["name"].as_str()
    );
    let spec = &control["spec"]["template"]["spec"];
    assert_eq!(
        spec["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );

    let mut seen = Vec::new();
    for container in spec["containers"]
        .as_sequence()
        .into_iter()
        .chain(spec["initContainers"].as_sequence())
        .flatten()
    {
        for (origin, argv, env) in k8s_invocations("leasehold-control", container) {
            parse(&origin, &argv, &env);
            seen.push(subcommand(&argv));
        }
    }
    assert_eq!(seen, ["control serve"]);

    let container = &spec["containers"][0];
    let env = |name: &str| {
        container["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in the control's env"))
            .clone()
    };
    // The store URL holds a password: from a Secret, never a literal.
    let store = env("LEASEHOLD_STORE_URL");
    assert!(store["value"].is_null(), "{store:?}");
    assert_eq!(
        store["valueFrom"]["secretKeyRef"]["name"].as_str(),
        Some("leasehold-control-store")
    );
    // The probes reach the admin listener, which listens on the pod's address.
    let admin: std::net::SocketAddr = env("LEASEHOLD_CONTROL_ADMIN_LISTEN")["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(admin.ip().is_unspecified(), "{admin}");
    let port = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some("admin"))
        .expect("the admin port");
    assert_eq!(
        port["containerPort"].as_u64(),
        Some(u64::from(admin.port()))
    );
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(get["port"].as_str(), Some("admin"), "{probe}");
    }

    // The identity key (and control.json, the admin identity) from a Secret, installed
    // by the init container where `control serve` reads it, owner-only.
    let volume = spec["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str() == Some("identity"))
        .expect("the identity volume");
    assert_eq!(
        volume["secret"]["secretName"].as_str(),
        Some("leasehold-control-identity")
    );
    let init = &spec["initContainers"][0];
    let script = yaml_strings(&init["args"]).join("\n");
    assert!(script.contains("umask 077"), "{script}");
    for file in ["identity.key", "control.json"] {
        assert!(
            script.contains(&format!("/identity/{file}"))
                && script.contains("$LEASEHOLD_HOME/control/"),
            "the init container installs {file}: {script}"
        );
    }
}
