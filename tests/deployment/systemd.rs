//! The systemd units: hardening and every command.

use super::*;

/// A unit file's `[Service]` entries, in order (keys repeat), with `%i` as `app`.
pub(crate) fn unit_entries(file: &str) -> Vec<(String, String)> {
    let text = read(&format!("examples/systemd/{file}"));
    let mut entries = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if pending.is_empty() && (line.starts_with('#') || line.starts_with(';') || line.is_empty())
        {
            continue;
        }
        if let Some(body) = line.strip_suffix('\\') {
            pending.push_str(body);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        if full.starts_with('[') {
            section = full;
        } else if section == "[Service]" {
            let (k, v) = full.split_once('=').expect("key=value");
            let v = v
                .trim()
                .replace("%H", "host.example")
                .replace("%i", "app")
                .replace("%I", "app")
                .replace("%%", "%");
            assert!(
                !v.contains('%'),
                "{file}: an unexpected specifier in {k}={v}"
            );
            entries.push((k.trim().to_owned(), v));
        }
    }
    entries
}

/// The environment a unit's commands get: Environment= lines and EnvironmentFile=s, the
/// latter read from the example beside the unit (required ones must exist).
pub(crate) fn unit_env(file: &str, entries: &[(String, String)]) -> Env {
    let mut env = Env::new();
    for (k, v) in entries {
        match k.as_str() {
            "Environment" => env.extend(shell::variables(v)),
            "EnvironmentFile" => {
                let (optional, path) = v
                    .strip_prefix('-')
                    .map_or((false, v.as_str()), |p| (true, p));
                let base = Path::new(path)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let example = repo("examples/systemd").join(&base);
                if !example.exists() {
                    assert!(
                        optional,
                        "{file}: EnvironmentFile {path} has no example {base}"
                    );
                    continue;
                }
                let text = std::fs::read_to_string(example).unwrap();
                if let Some(c) = shell::commands(&text).first() {
                    panic!("{base} is not a plain KEY=VALUE file: {:?}", c.argv);
                }
                env.extend(shell::variables(&text));
            }
            _ => {}
        }
    }
    env
}

#[test]
pub(crate) fn systemd_units_are_hardened_and_every_command_parses() {
    let units = [
        (
            "leasehold-control.service",
            vec!["control init", "control serve"],
        ),
        ("leasehold-proxy@.service", vec!["proxy"]),
        (
            "leasehold-addon.service",
            vec!["addon configure influxdb-v1"],
        ),
    ];
    for (file, expected) in units {
        let entries = unit_entries(file);
        let env = unit_env(file, &entries);
        let get = |key: &str| {
            entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let user = get("User").unwrap_or_else(|| panic!("{file}: User="));
        assert!(!["root", "0"].contains(&user), "{file}: runs as root");
        for (key, value) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("CapabilityBoundingSet", ""),
        ] {
            assert_eq!(get(key), Some(value), "{file}: {key}");
        }
        if file != "leasehold-addon.service" {
            let nofile: u64 = get("LimitNOFILE")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{file}: LimitNOFILE= for a long-running server"));
            assert!(nofile >= 4096, "{file}: LimitNOFILE={nofile} is too low");
        }
        assert!(
            entries.iter().any(|(k, _)| k == "EnvironmentFile"),
            "{file}: settings and secrets come from an EnvironmentFile"
        );
        for var in env
            .keys()
            .filter(|k| k.starts_with("LEASEHOLD_") || k.starts_with("INFLUXDB_"))
        {
            assert!(
                cli_env_vars().contains(var),
                "{file}: {var} is read by nothing"
            );
        }

        let mut seen = Vec::new();
        for (key, value) in entries.iter().filter(|(k, _)| k.starts_with("Exec")) {
            let line = value.trim_start_matches(['-', '@', ':', '+', '!']);
            for c in shell::commands(line) {
                for argv in invocations(&c.argv) {
                    parse(&format!("{file} {key}"), &argv, &env);
                    seen.push(subcommand(&argv));
                }
            }
        }
        assert_eq!(seen, expected, "{file}: leasehold commands");
    }
}
