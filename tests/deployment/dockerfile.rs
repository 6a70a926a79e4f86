//! The Dockerfile: stages, `--locked`, non-root user, and its commands.

use super::*;

/// One Dockerfile instruction: keyword (upper case) and the rest of the logical line.
pub(crate) struct Instruction {
    pub(crate) keyword: String,
    pub(crate) rest: String,
}

pub(crate) struct Stage {
    pub(crate) from: String,
    pub(crate) name: Option<String>,
    pub(crate) instructions: Vec<Instruction>,
}

pub(crate) fn dockerfile_stages() -> Vec<Stage> {
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
pub(crate) fn exec_form(what: &str, rest: &str) -> Vec<String> {
    serde_json::from_str(rest)
        .unwrap_or_else(|e| panic!("Dockerfile {what} must be exec form (JSON array): {rest}: {e}"))
}

/// The runtime image's entrypoint, default command and environment.
pub(crate) struct Image {
    pub(crate) entrypoint: Vec<String>,
    pub(crate) cmd: Vec<String>,
    pub(crate) env: Env,
}

impl Image {
    /// Whether a container's `image:` is this one, and the environment it starts with
    /// (this image's `ENV`, or nothing known for another image).
    pub(crate) fn base_env(&self, container_image: &Value) -> (bool, Env) {
        let is_this_image = container_image
            .as_str()
            .is_some_and(|i| i.starts_with("leasehold"));
        let env = if is_this_image {
            self.env.clone()
        } else {
            Env::new()
        };
        (is_this_image, env)
    }

    /// What a container runs, as Docker and Kubernetes decide it: an overriding
    /// entrypoint (`entrypoint` / `command`) with the given arguments (`command` / `args`);
    /// otherwise, for this image, its entrypoint with the arguments or its CMD; for
    /// another image (whose entrypoint is not known here), just the arguments.
    pub(crate) fn argv(
        &self,
        entrypoint: Option<Vec<String>>,
        args: Option<Vec<String>>,
        is_this_image: bool,
    ) -> Vec<String> {
        match (entrypoint, is_this_image) {
            (Some(e), _) => e.into_iter().chain(args.unwrap_or_default()).collect(),
            (None, true) => self
                .entrypoint
                .iter()
                .cloned()
                .chain(args.unwrap_or_else(|| self.cmd.clone()))
                .collect(),
            (None, false) => args.unwrap_or_default(),
        }
    }
}

pub(crate) fn image() -> Image {
    let stages = dockerfile_stages();
    let last = stages.last().expect("a FROM");
    Image {
        entrypoint: exec_form("ENTRYPOINT", last.last("ENTRYPOINT").expect("ENTRYPOINT")),
        cmd: exec_form("CMD", last.last("CMD").expect("CMD")),
        env: last.env(),
    }
}

#[test]
pub(crate) fn dockerfile_is_multi_stage_locked_non_root_and_its_commands_parse() {
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
