//! The deployment files against the real command line: every `leasehold` invocation in
//! the Dockerfile (ENTRYPOINT + CMD, HEALTHCHECK), `examples/docker-compose.yml`, the
//! Kubernetes manifest, the systemd units and the README's shell blocks is extracted (from
//! `sh -c` scripts too) and parsed by `leasehold::cli::Cli`, with the environment the
//! file gives it: a renamed flag or environment variable fails here. The files' shapes
//! are checked as well (services, sidecar, non-root user, `--locked`, hardening), and the
//! README's configuration reference is checked against the clap definitions.
//!
//! No Docker, no network: files and the parser only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use leasehold::cli::{Cli, Command};
use serde::Deserialize;
use serde_norway::Value;

type Env = BTreeMap<String, String>;

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

/// A small POSIX shell word splitter: enough to find simple commands in `sh -c` scripts,
/// systemd command lines and README blocks. It knows quotes, escapes, line
/// continuations, comments, `$(...)` (whose commands it also reports), redirections,
/// the command separators `; & | && || ( )` and newlines, leading `NAME=value`
/// assignments and `export NAME=value`. It does not expand anything.
mod shell {
    use super::Env;

    /// One simple command: its words, and the variables assigned before it in the
    /// script (by `export` or a bare assignment) or on its own line.
    #[derive(Debug, Clone)]
    pub struct Simple {
        pub argv: Vec<String>,
        pub env: Env,
    }

    enum Token {
        Word(String),
        Separator,
    }

    /// Keywords that may precede a command without being it.
    const PREFIXES: &[&str] = &[
        "exec", "then", "do", "done", "else", "elif", "fi", "if", "while", "until", "!", "{", "}",
        "time",
    ];

    /// The simple commands of `script`, those inside `$(...)` last.
    pub fn commands(script: &str) -> Vec<Simple> {
        run(script).0
    }

    /// The variables `script` leaves set (assignments and exports), e.g. of an
    /// environment file or a Dockerfile `ENV K=V K2=V2`.
    pub fn variables(script: &str) -> Env {
        run(script).1
    }

    fn run(script: &str) -> (Vec<Simple>, Env) {
        let mut nested = Vec::new();
        let tokens = tokenize(script, &mut nested);
        let mut out = Vec::new();
        let mut shell_env = Env::new();
        let mut current: Vec<String> = Vec::new();
        let flush = |words: &mut Vec<String>, shell_env: &mut Env, out: &mut Vec<Simple>| {
            let mut env = shell_env.clone();
            let mut rest = std::mem::take(words).into_iter().peekable();
            let mut exported = false;
            while let Some(word) = rest.peek() {
                if PREFIXES.contains(&word.as_str()) {
                    rest.next();
                } else if word == "export" {
                    exported = true;
                    rest.next();
                } else if let Some((name, value)) = assignment(word) {
                    env.insert(name.clone(), value.clone());
                    rest.next();
                } else {
                    break;
                }
            }
            let argv: Vec<String> = rest.collect();
            if argv.is_empty() || exported {
                // `NAME=value` alone or `export NAME=value`: the script's own variables.
                *shell_env = env;
            } else {
                out.push(Simple { argv, env });
            }
        };
        for token in tokens {
            match token {
                Token::Word(w) => current.push(w),
                Token::Separator => flush(&mut current, &mut shell_env, &mut out),
            }
        }
        flush(&mut current, &mut shell_env, &mut out);
        for inner in nested {
            out.extend(commands(&inner));
        }
        (out, shell_env)
    }

    fn assignment(word: &str) -> Option<(String, String)> {
        let (name, value) = word.split_once('=')?;
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        valid.then(|| (name.to_owned(), value.to_owned()))
    }

    fn tokenize(script: &str, nested: &mut Vec<String>) -> Vec<Token> {
        let chars: Vec<char> = script.chars().collect();
        let mut tokens = Vec::new();
        let mut word = String::new();
        // Whether the word has begun (so that `""` is an empty word, not none).
        let mut in_word = false;
        // Whether the next word is a redirection target, to be dropped.
        let mut drop_next = false;
        let mut i = 0;
        let end_word =
            |word: &mut String, in_word: &mut bool, drop: &mut bool, t: &mut Vec<Token>| {
                if *in_word {
                    if *drop {
                        *drop = false;
                    } else {
                        t.push(Token::Word(std::mem::take(word)));
                    }
                }
                word.clear();
                *in_word = false;
            };
        while i < chars.len() {
            let c = chars[i];
            match c {
                ' ' | '\t' => end_word(&mut word, &mut in_word, &mut drop_next, &mut tokens),
                '\n' | ';' | '&' | '|' | '(' | ')' => {
                    end_word(&mut word, &mut in_word, &mut drop_next, &mut tokens);
                    tokens.push(Token::Separator);
                }
                '#' if !in_word => {
                    while i < chars.len() && chars[i] != '\n' {
                        i += 1;
                    }
                    continue;
                }
                '\\' => {
                    if chars.get(i + 1) == Some(&'\n') {
                        i += 2;
                        continue;
                    }
                    if let Some(&next) = chars.get(i + 1) {
                        word.push(next);
                        in_word = true;
                    }
                    i += 2;
                    continue;
                }
                '\'' => {
                    in_word = true;
                    i += 1;
                    while i < chars.len() && chars[i] != '\'' {
                        word.push(chars[i]);
                        i += 1;
                    }
                }
                '"' => {
                    in_word = true;
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        if chars[i] == '\\'
                            && matches!(chars.get(i + 1), Some('"' | '\\' | '$' | '`' | '\n'))
                        {
                            if chars[i + 1] != '\n' {
                                word.push(chars[i + 1]);
                            }
                            i += 2;
                            continue;
                        }
                        if chars[i] == '$' && chars.get(i + 1) == Some(&'(') {
                            i = substitution(&chars, i, &mut word, nested);
                            continue;
                        }
                        word.push(chars[i]);
                        i += 1;
                    }
                }
                '$' if chars.get(i + 1) == Some(&'(') => {
                    in_word = true;
                    i = substitution(&chars, i, &mut word, nested);
                    continue;
                }
                '>' | '<' => {
                    // `2>`: the digits were the file descriptor, not a word.
                    if in_word && word.chars().all(|d| d.is_ascii_digit()) {
                        word.clear();
                        in_word = false;
                    }
                    end_word(&mut word, &mut in_word, &mut drop_next, &mut tokens);
                    while matches!(chars.get(i + 1), Some('>' | '<' | '&')) {
                        i += 1;
                    }
                    // `2>&1`: the target is glued on; otherwise it is the next word.
                    drop_next = true;
                }
                _ => {
                    word.push(c);
                    in_word = true;
                }
            }
            i += 1;
        }
        end_word(&mut word, &mut in_word, &mut drop_next, &mut tokens);
        tokens
    }

    /// Copies `$(...)` starting at `start` into `word` literally and records its inside
    /// as a nested script; returns the index after the closing parenthesis.
    fn substitution(
        chars: &[char],
        start: usize,
        word: &mut String,
        nested: &mut Vec<String>,
    ) -> usize {
        let mut depth = 0;
        let mut i = start + 1;
        let mut inner = String::new();
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let c = chars[i];
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (None, '\'' | '"') => quote = Some(c),
                (None, '(') => depth += 1,
                (None, ')') => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            if depth > 0 && !(depth == 1 && c == '(' && i == start + 1) {
                inner.push(c);
            }
            i += 1;
        }
        word.push('$');
        word.push('(');
        word.push_str(&inner);
        word.push(')');
        nested.push(inner);
        i + 1
    }

    #[test]
    fn splits_like_a_shell() {
        let script = "set -e\nX=1 exec leasehold a --b \"c d\" 'e f' >/dev/null 2>&1 && echo ok; \
                      export K=v\nleasehold g \\\n  --h=\"$(cat \"/x y\")\" | tee z # comment\n\
                      until leasehold member list > /dev/null 2>&1; do sleep 1; done";
        let commands = commands(script);
        let argvs: Vec<Vec<&str>> = commands
            .iter()
            .map(|c| c.argv.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            argvs,
            vec![
                vec!["set", "-e"],
                vec!["leasehold", "a", "--b", "c d", "e f"],
                vec!["echo", "ok"],
                vec!["leasehold", "g", "--h=$(cat \"/x y\")"],
                vec!["tee", "z"],
                vec!["leasehold", "member", "list"],
                vec!["sleep", "1"],
                vec!["cat", "/x y"],
            ]
        );
        assert_eq!(commands[1].env.get("X").map(String::as_str), Some("1"));
        assert_eq!(commands[3].env.get("K").map(String::as_str), Some("v"));
        assert!(!commands[0].env.contains_key("K"));
        let vars = variables("A=1 B='two words'\nexport C=\"3\"\n# D=4\n");
        assert_eq!(vars.len(), 3, "{vars:?}");
        assert_eq!(vars["B"], "two words");
    }
}

// --- Dockerfile ------------------------------------------------------------------------

/// One Dockerfile instruction: keyword (upper case) and the rest of the logical line.
struct Instruction {
    keyword: String,
    rest: String,
}

struct Stage {
    from: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

fn dockerfile_stages() -> Vec<Stage> {
    let text = read("Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        logical.push(std::mem::take(&mut current));
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let rest = rest.trim().to_owned();
        if keyword == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = words
                .iter()
                .position(|w| w.eq_ignore_ascii_case("as"))
                .map(|i| words[i + 1].to_owned());
            stages.push(Stage {
                from: words[0].to_owned(),
                name,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(Instruction { keyword, rest });
        }
    }
    stages
}

impl Stage {
    fn all(&self, keyword: &str) -> impl Iterator<Item = &str> {
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.rest.as_str())
    }

    fn last(&self, keyword: &str) -> Option<&str> {
        self.all(keyword).last()
    }

    /// ENV, in both the `K=V K2=V2` and the legacy `K V` forms.
    fn env(&self) -> Env {
        let mut env = Env::new();
        for rest in self.all("ENV") {
            let vars = shell::variables(rest);
            if vars.is_empty() {
                let (k, v) = rest.split_once(char::is_whitespace).expect("ENV K V");
                env.insert(k.to_owned(), v.trim().to_owned());
            } else {
                env.extend(vars);
            }
        }
        env
    }
}

/// An exec-form (JSON array) instruction argument.
fn exec_form(what: &str, rest: &str) -> Vec<String> {
    serde_json::from_str(rest)
        .unwrap_or_else(|e| panic!("Dockerfile {what} must be exec form (JSON array): {rest}: {e}"))
}

/// The runtime image's entrypoint, default command and environment.
struct Image {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Env,
}

fn image() -> Image {
    let stages = dockerfile_stages();
    let last = stages.last().expect("a FROM");
    Image {
        entrypoint: exec_form("ENTRYPOINT", last.last("ENTRYPOINT").expect("ENTRYPOINT")),
        cmd: exec_form("CMD", last.last("CMD").expect("CMD")),
        env: last.env(),
    }
}

#[test]
fn dockerfile_is_multi_stage_locked_non_root_and_its_commands_parse() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "a build stage and a runtime stage");
    let (build, runtime) = (&stages[stages.len() - 2], &stages[stages.len() - 1]);
    let build_name = build.name.as_deref().expect("the build stage is named");
    assert!(
        build
            .all("RUN")
            .any(|r| r.contains("cargo build --release --locked")),
        "the build runs `cargo build --release --locked`"
    );
    assert!(
        runtime
            .all("COPY")
            .any(|c| c.contains(&format!("--from={build_name}")) && c.contains("leasehold")),
        "the runtime stage copies the binary from {build_name}"
    );
    assert!(
        runtime.from.starts_with("debian:") && runtime.from.contains("slim"),
        "small runtime stage, not {}",
        runtime.from
    );
    assert!(
        runtime.all("RUN").any(|r| r.contains("ca-certificates")),
        "system roots for TLS upstreams"
    );

    let user = runtime.last("USER").expect("the runtime stage sets USER");
    let name = user.split(':').next().unwrap();
    assert!(
        !["", "root", "0"].contains(&name),
        "the final USER must not be root: {user}"
    );
    // Kubernetes' runAsNonRoot can only verify a numeric user.
    assert!(name.parse::<u32>().is_ok(), "USER is numeric: {user}");

    let env = runtime.env();
    let home = env.get("LEASEHOLD_HOME").expect("ENV LEASEHOLD_HOME");
    let volumes: Vec<String> = runtime
        .all("VOLUME")
        .flat_map(|v| {
            serde_json::from_str::<Vec<String>>(v)
                .unwrap_or_else(|_| v.split_whitespace().map(str::to_owned).collect())
        })
        .collect();
    assert!(volumes.contains(home), "LEASEHOLD_HOME {home} is a VOLUME");
    for var in env.keys().filter(|k| k.starts_with("LEASEHOLD_")) {
        assert!(cli_env_vars().contains(var), "ENV {var} is read by nothing");
    }

    // HEALTHCHECK: exec form (no shell in the check), running `leasehold health`.
    let health = runtime.last("HEALTHCHECK").expect("HEALTHCHECK");
    let at = health.find("CMD").expect("HEALTHCHECK ... CMD [...]");
    let probe = exec_form("HEALTHCHECK CMD", health[at + 3..].trim());
    assert_eq!(subcommand(&probe), "health");
    let cli = parse("Dockerfile HEALTHCHECK", &probe, &env);
    assert!(matches!(cli.command, Command::Health(_)));

    let image = image();
    let argv: Vec<String> = image.entrypoint.iter().chain(&image.cmd).cloned().collect();
    assert_eq!(image.entrypoint, ["leasehold"], "ENTRYPOINT is the binary");
    parse("Dockerfile ENTRYPOINT + CMD", &argv, &env);
    assert_eq!(
        subcommand(&argv),
        "proxy",
        "the default role is the sidecar"
    );

    let ignore = read(".dockerignore");
    for needed in [".git", "target"] {
        assert!(
            ignore
                .lines()
                .any(|l| l.trim().trim_start_matches("**/") == needed),
            ".dockerignore leaves out {needed}"
        );
    }
}

// --- docker compose ----------------------------------------------------------------------

/// Compose's interpolation: `$$` is a literal `$`; `${NAME:?msg}`, `${NAME:-default}` and
/// `${NAME}` come from the user's environment (here: a placeholder or the default).
fn compose_interpolate(text: &str) -> String {
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

fn yaml_strings(value: &Value) -> Vec<String> {
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
fn compose_env(service: &Value) -> Env {
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
fn compose_argv(value: &Value) -> Option<Vec<String>> {
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

fn compose() -> Value {
    let mut value: Value = serde_norway::from_str(&read("examples/docker-compose.yml"))
        .expect("docker-compose.yml is YAML");
    value.apply_merge().expect("YAML merge keys");
    value
}

/// (origin, argv, env) for every leasehold invocation of a compose service: its command
/// (with the image's ENTRYPOINT/CMD for the leasehold image) and its health check.
fn compose_invocations(name: &str, service: &Value) -> Vec<(String, Vec<String>, Env)> {
    let image = image();
    let is_leasehold = service["image"]
        .as_str()
        .is_some_and(|i| i.starts_with("leasehold"));
    let mut env = if is_leasehold {
        image.env.clone()
    } else {
        Env::new()
    };
    env.extend(compose_env(service));
    let mut out = Vec::new();

    let entrypoint = compose_argv(&service["entrypoint"]);
    let command = compose_argv(&service["command"]);
    let argv: Vec<String> = match (entrypoint, is_leasehold) {
        (Some(e), _) => e.into_iter().chain(command.unwrap_or_default()).collect(),
        (None, true) => image
            .entrypoint
            .iter()
            .cloned()
            .chain(command.unwrap_or(image.cmd.clone()))
            .collect(),
        (None, false) => command.unwrap_or_default(),
    };
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
fn compose_file_has_the_services_and_every_command_parses() {
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
                assert_eq!(proxy.listen.to_string(), "127.0.0.1:8086", "{origin}");
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

// --- Kubernetes ----------------------------------------------------------------------

fn k8s_documents() -> Vec<Value> {
    let text = read("examples/kubernetes/leasehold.yaml");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("the manifest is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn k8s_object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in the manifest"))
}

/// (origin, argv, env) for a container's command and its exec probes.
fn k8s_invocations(pod: &str, container: &Value) -> Vec<(String, Vec<String>, Env)> {
    let image = image();
    let name = container["name"].as_str().unwrap();
    let origin = format!("kubernetes {pod}/{name}");
    let is_leasehold = container["image"]
        .as_str()
        .is_some_and(|i| i.starts_with("leasehold"));
    let mut env = if is_leasehold {
        image.env.clone()
    } else {
        Env::new()
    };
    for var in container["env"].as_sequence().into_iter().flatten() {
        let value = var["value"]
            .as_str()
            .map_or_else(|| "placeholder-from-field".to_owned(), str::to_owned);
        env.insert(var["name"].as_str().unwrap().to_owned(), value);
    }
    let command = (!container["command"].is_null()).then(|| yaml_strings(&container["command"]));
    let args = (!container["args"].is_null()).then(|| yaml_strings(&container["args"]));
    let argv: Vec<String> = match (command, is_leasehold) {
        (Some(c), _) => c.into_iter().chain(args.unwrap_or_default()).collect(),
        (None, true) => image
            .entrypoint
            .iter()
            .cloned()
            .chain(args.unwrap_or(image.cmd.clone()))
            .collect(),
        (None, false) => args.unwrap_or_default(),
    };
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
fn kubernetes_manifest_runs_a_native_sidecar_and_every_command_parses() {
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

// --- systemd -----------------------------------------------------------------------------

/// A unit file's `[Service]` entries, in order (keys repeat), with `%i` as `app`.
fn unit_entries(file: &str) -> Vec<(String, String)> {
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
fn unit_env(file: &str, entries: &[(String, String)]) -> Env {
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
fn systemd_units_are_hardened_and_every_command_parses() {
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

// --- README --------------------------------------------------------------------------------

/// The README's shell blocks, each as one script.
fn readme_shell_blocks() -> Vec<String> {
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
fn readme_commands_parse_and_the_two_setup_commands_exist() {
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
    for script in ["./scripts/demo.sh", "./scripts/test.sh"] {
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
        "examples/kubernetes/leasehold.yaml",
        "examples/systemd/",
    ] {
        assert!(readme.contains(link), "README.md links {link}");
    }
}

#[test]
fn readme_documents_every_subcommand_flag_and_environment_variable() {
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
fn parse_rejects_a_drifted_flag() {
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
