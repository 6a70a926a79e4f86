//! The README: its commands parse, and it documents every flag and variable.

use super::*;

/// The README's shell blocks, each as one script.
pub(crate) fn readme_shell_blocks() -> Vec<String> {
    let text = read("README.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(lang)) if ["sh", "bash", "shell", "console"].contains(&lang.trim()) => {
                current = Some(String::new());
            }
            (Some(_), Some(_)) => blocks.push(current.take().unwrap()),
            (Some(block), None) => {
                block.push_str(line.strip_prefix("$ ").unwrap_or(line));
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[test]
pub(crate) fn readme_commands_parse_and_the_two_setup_commands_exist() {
    let blocks = readme_shell_blocks();
    let mut count = 0;
    for (i, block) in blocks.iter().enumerate() {
        for c in shell::commands(block) {
            for argv in invocations(&c.argv) {
                parse(&format!("README.md shell block {}", i + 1), &argv, &c.env);
                count += 1;
            }
        }
    }
    assert!(
        count >= 10,
        "only {count} leasehold commands found in the README"
    );

    let readme = read("README.md");
    for script in [
        "./scripts/demo.sh",
        "./scripts/test.sh",
        "scripts/docker-base-images.sh",
        "scripts/docker-image.sh",
    ] {
        assert!(readme.contains(script), "README.md names {script}");
        let path = repo(script.trim_start_matches("./"));
        let mode = std::os::unix::fs::PermissionsExt::mode(&path.metadata().unwrap().permissions());
        assert!(mode & 0o111 != 0, "{script} is executable");
    }
    for link in [
        "ARCHITECTURE.md",
        "fuzz/README.md",
        "BENCHMARKS.md",
        "examples/docker-compose.yml",
        "examples/docker-compose.influxdb1.yml",
        "examples/kubernetes/leasehold.yaml",
        "examples/systemd/",
    ] {
        assert!(readme.contains(link), "README.md links {link}");
    }
}

#[test]
pub(crate) fn readme_documents_every_subcommand_flag_and_environment_variable() {
    let readme = read("README.md");
    fn walk(cmd: &clap::Command, path: &str, readme: &str, missing: &mut Vec<String>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let name = format!("{path}{}", sub.get_name()).trim().to_owned();
            if !readme.contains(&format!("leasehold {name}"))
                && !readme.contains(&format!("`{name}"))
            {
                missing.push(format!("subcommand `{name}`"));
            }
            walk(sub, &format!("{name} "), readme, missing);
        }
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long()
                && !["help", "version"].contains(&long)
                && !readme.contains(&format!("--{long}"))
            {
                missing.push(format!("--{long} ({})", cmd.get_name()));
            }
            if let Some(env) = arg.get_env()
                && !readme.contains(&*env.to_string_lossy())
            {
                missing.push(format!("env {}", env.to_string_lossy()));
            }
        }
    }
    let mut missing = Vec::new();
    walk(&cli_tree(), "", &readme, &mut missing);
    let missing: BTreeSet<String> = missing.into_iter().collect();
    assert!(
        missing.is_empty(),
        "README.md does not document: {missing:#?}"
    );
}

#[test]
pub(crate) fn parse_rejects_a_drifted_flag() {
    // The checks above must be able to fail: a misspelt flag and a missing required
    // value are both refused.
    let argv = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let bad = std::panic::catch_unwind(|| {
        parse(
            "test",
            &argv("leasehold proxy --identity app --listn 127.0.0.1:8086"),
            &Env::new(),
        )
    });
    assert!(bad.is_err(), "a misspelt flag must not parse");
    let missing = std::panic::catch_unwind(|| {
        parse(
            "test",
            &argv("leasehold addon configure influxdb-v1 --privileges x"),
            &Env::new(),
        )
    });
    assert!(
        missing.is_err(),
        "missing --endpoint-url/--username/--password"
    );
    let env: Env = [
        ("INFLUXDB_ENDPOINT_URL", "http://x"),
        ("INFLUXDB_ADMIN_USER", "admin"),
        ("INFLUXDB_ADMIN_PASSWORD", "secret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    parse(
        "test",
        &argv("leasehold addon configure influxdb-v1 --privileges x"),
        &env,
    );
    let secret = std::panic::catch_unwind(|| {
        parse(
            "test",
            &argv("leasehold addon configure influxdb-v1 --privileges x --password p"),
            &env,
        )
    });
    assert!(secret.is_err(), "a password in argv is refused");
}
