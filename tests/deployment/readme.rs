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
    // `x` stands for one well-formed privilege (a single argv word with spaces).
    let argv = |s: &str| {
        s.split_whitespace()
            .map(|w| if w == "x" { "WRITE ON telemetry" } else { w }.to_owned())
            .collect::<Vec<_>>()
    };
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

/// Subcommand path and flag names of a leasehold command line (values dropped).
fn shape(argv: &[String]) -> (String, BTreeSet<String>) {
    let root = cli_tree();
    let mut cmd = &root;
    let mut path = Vec::new();
    let mut flags = BTreeSet::new();
    for word in argv {
        if let Some(flag) = word.strip_prefix("--") {
            flags.insert(flag.split('=').next().unwrap_or(flag).to_owned());
        } else if let Some(sub) = cmd.find_subcommand(word) {
            path.push(word.clone());
            cmd = sub;
        }
    }
    (path.join(" "), flags)
}

#[test]
pub(crate) fn the_readme_walk_through_is_what_examples_walkthrough_sh_runs() {
    // The README's walk-through block (`control init` "on the control host") ...
    let block = readme_shell_blocks()
        .into_iter()
        .find(|b| b.contains("leasehold control init") && b.contains("# on the control host"))
        .expect("a walk-through block");
    let readme: Vec<_> = shell::commands(&block)
        .into_iter()
        .filter(|c| is_leasehold(&c.argv[0]))
        .map(|c| shape(&c.argv[1..]))
        .collect();
    assert!(readme.len() >= 8, "{readme:?}");
    // ... step by step, with the same flags, is what the script runs (which
    // tests/demo.rs runs for real against the v2 test server).
    let script: Vec<_> = shell::commands(&read("examples/walkthrough.sh"))
        .into_iter()
        .filter_map(|c| match c.argv[0].as_str() {
            "on_control" | "on_client" | "\"$LEASEHOLD\"" | "$LEASEHOLD" => {
                Some(shape(&c.argv[1..]))
            }
            _ => None,
        })
        .collect();
    for (path, flags) in &readme {
        assert!(
            script.iter().any(|(p, f)| p == path && flags.is_subset(f)),
            "the README runs `leasehold {path}` with {flags:?}, examples/walkthrough.sh does not:\n{script:?}"
        );
    }
    // On one host: the proxy's listen address must not be InfluxDB's 8086, and the
    // advertised address must be one a client on this host can reach.
    assert!(block.contains("--advertise 127.0.0.1:"), "{block}");
    let proxy = block
        .lines()
        .find(|l| l.contains("leasehold proxy"))
        .unwrap();
    assert!(
        proxy.contains("--listen") && !proxy.contains(":8086 "),
        "{proxy}"
    );
}
