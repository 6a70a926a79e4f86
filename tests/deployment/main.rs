//! The deployment files against the real command line: every `leasehold` invocation in
//! the Dockerfile (ENTRYPOINT + CMD, HEALTHCHECK), `examples/docker-compose.yml`, the
//! Kubernetes manifest, the systemd units and the README's shell blocks is extracted (from
//! `sh -c` scripts too) and parsed by `leasehold::cli::Cli`, with the environment the
//! file gives it: a renamed flag or environment variable fails here. The files' shapes
//! are checked as well (services, sidecar, non-root user, `--locked`, hardening), and the
//! README's configuration reference is checked against the clap definitions.
//!
//! Those checks need no Docker and no network: files and the parser only. The
//! `docker` module builds the image and runs the compose example on a real Docker
//! engine (no registry needed), with the helpers of `engine`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use leasehold::cli::{Cli, Command};
use serde::Deserialize;
use serde_norway::Value;

type Env = BTreeMap<String, String>;

mod compose;
mod docker;
mod docker_ha;
mod dockerfile;
mod engine;
mod kubernetes;
mod readme;
mod shell;
mod systemd;

use compose::yaml_strings;
use dockerfile::image;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The clap command tree, with global options propagated to every subcommand.
fn cli_tree() -> clap::Command {
    let mut root = Cli::command();
    root.build();
    root
}

/// Every environment variable the CLI reads (clap `env = ...`).
fn cli_env_vars() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&cli_tree(), &mut out);
    out
}

// --- parsing a leasehold command line as the process would see it ---------------------

/// Parses `argv` (argv[0] is the leasehold binary) with `env` as the process environment:
/// an option clap would take from the environment is added as `--flag=value` unless
/// given, since a test cannot change its own environment safely. Panics with `origin`
/// and clap's message if the command line is not valid.
fn parse(origin: &str, argv: &[String], env: &Env) -> Cli {
    assert!(
        is_leasehold(&argv[0]),
        "{origin}: not a leasehold command: {argv:?}"
    );
    let root = cli_tree();
    let mut cmd = &root;
    let mut words = argv[1..].iter();
    while let Some(word) = words.next() {
        if let Some(flag) = word.strip_prefix("--") {
            let (name, inline) = flag
                .split_once('=')
                .map_or((flag, false), |(n, _)| (n, true));
            let takes_value = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(name))
                .is_some_and(|a| a.get_action().takes_values());
            if takes_value && !inline {
                words.next();
            }
        } else if let Some(sub) = cmd.find_subcommand(word) {
            cmd = sub;
        }
    }
    let mut full = argv.to_vec();
    full[0] = "leasehold".into();
    for arg in cmd.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let flag = format!("--{long}");
        let given = argv
            .iter()
            .any(|w| *w == flag || w.starts_with(&format!("{flag}=")));
        if let Some(value) = env.get(&*var.to_string_lossy())
            && !given
        {
            full.push(format!("{flag}={value}"));
        }
    }
    let cli = Cli::try_parse_from(&full).unwrap_or_else(|e| {
        panic!(
            "{origin}: `{}` does not parse:\n{}",
            argv.join(" "),
            e.render()
        )
    });
    check_no_secret_flags(origin, argv);
    check_permissions_json(origin, &full);
    cli
}

fn is_leasehold(word: &str) -> bool {
    word == "leasehold" || word.ends_with("/leasehold")
}

/// Secrets reach leasehold through the environment, never through argv.
fn check_no_secret_flags(origin: &str, argv: &[String]) {
    for secret in ["--token", "--password"] {
        assert!(
            !argv
                .iter()
                .any(|w| w == secret || w.starts_with(&format!("{secret}="))),
            "{origin}: {secret} on the command line puts a secret in argv: {argv:?}"
        );
    }
}

/// A `--permissions` value must be a JSON array once the shell has unquoted it.
fn check_permissions_json(origin: &str, argv: &[String]) {
    let mut words = argv.iter();
    while let Some(word) = words.next() {
        let value = match word.strip_prefix("--permissions") {
            Some("") => words.next().cloned().unwrap_or_default(),
            Some(rest) if rest.starts_with('=') => rest[1..].to_owned(),
            _ => continue,
        };
        if value.starts_with('$') {
            continue; // from a variable
        }
        let parsed: Result<Vec<serde_json::Value>, _> = serde_json::from_str(&value);
        assert!(
            parsed.is_ok(),
            "{origin}: --permissions is not a JSON array: {value}"
        );
    }
}

/// "control init", "addon configure influxdb", "proxy", ...: the subcommand path.
fn subcommand(argv: &[String]) -> String {
    let root = cli_tree();
    let mut cmd = &root;
    let mut path = Vec::new();
    for word in &argv[1..] {
        if let Some(sub) = cmd.find_subcommand(word) {
            path.push(sub.get_name().to_owned());
            cmd = sub;
        }
    }
    path.join(" ")
}

/// Leasehold invocations in an exec-form command: itself, or those of a `sh -c` script.
fn invocations(argv: &[String]) -> Vec<Vec<String>> {
    let Some(first) = argv.first() else {
        return Vec::new();
    };
    let shell = ["sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/env sh"].contains(&first.as_str());
    if shell && argv.get(1).map(String::as_str) == Some("-c") {
        let script = argv.get(2).expect("sh -c without a script");
        return shell::commands(script)
            .into_iter()
            .map(|c| c.argv)
            .filter(|a| is_leasehold(&a[0]))
            .collect();
    }
    if is_leasehold(first) {
        vec![argv.to_vec()]
    } else {
        Vec::new()
    }
}
