//! The Dockerfile: stages (a shared runtime base, the `prebuilt` and the default
//! `runtime` targets), substitutable base images, `--locked`, non-root user, and its
//! commands. A stage's settings include those of the stage it is built `FROM`.

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

/// The stages, and the defaults of the `ARG`s declared before the first `FROM`.
pub(crate) fn dockerfile_stages() -> (Vec<Stage>, Env) {
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
    let mut global_args = Env::new();
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
        } else if keyword == "ARG" {
            let (name, default) = rest.split_once('=').unwrap_or((&rest, ""));
            // An ARG default may use the ARGs before it.
            let default = substitute(default, &global_args);
            global_args.insert(name.to_owned(), default);
        }
    }
    (stages, global_args)
}

/// `${NAME}` replaced by the value in `args` (Docker's substitution, as much as a
/// `FROM` or an `ARG` default here uses).
fn substitute(text: &str, args: &Env) -> String {
    let mut out = text.to_owned();
    for (name, value) in args {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    assert!(!out.contains("${"), "Dockerfile: unknown ARG in {text}");
    out
}

/// `stage` with the instructions of the stages it is built `FROM` before its own, and
/// the `FROM` of the first of them (an image, not a stage).
fn resolved(stages: &[Stage], stage: &Stage) -> Stage {
    let mut chain = vec![stage];
    while let Some(parent) = stages
        .iter()
        .find(|s| s.name.as_deref() == Some(chain.last().unwrap().from.as_str()))
    {
        chain.push(parent);
    }
    Stage {
        from: chain.last().unwrap().from.clone(),
        name: stage.name.clone(),
        instructions: chain
            .iter()
            .rev()
            .flat_map(|s| &s.instructions)
            .map(|i| Instruction {
                keyword: i.keyword.clone(),
                rest: i.rest.clone(),
            })
            .collect(),
    }
}

fn stage<'a>(stages: &'a [Stage], name: &str) -> (usize, &'a Stage) {
    stages
        .iter()
        .enumerate()
        .find(|(_, s)| s.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("the Dockerfile has a stage named {name}"))
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
        // `leasehold:TAG` or `${LEASEHOLD_IMAGE:-leasehold:TAG}`; not the
        // `leasehold-influxdb1` or `leasehold-base` images made beside it.
        let is_this_image = container_image.as_str().is_some_and(|image| {
            let image = image
                .strip_prefix("${")
                .and_then(|rest| rest.split_once(":-"))
                .map_or(image, |(_, default)| default.trim_end_matches('}'));
            image.split(':').next() == Some("leasehold")
        });
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
    let (stages, _) = dockerfile_stages();
    let last = resolved(&stages, stages.last().expect("a FROM"));
    Image {
        entrypoint: exec_form("ENTRYPOINT", last.last("ENTRYPOINT").expect("ENTRYPOINT")),
        cmd: exec_form("CMD", last.last("CMD").expect("CMD")),
        env: last.env(),
    }
}

#[test]
pub(crate) fn dockerfile_is_multi_stage_locked_non_root_and_its_commands_parse() {
    let (stages, args) = dockerfile_stages();
    // The targets: `runtime` (the default, last) compiles in the Rust image; `prebuilt`
    // wraps a host-built binary. Both are `runtime-base` plus the binary at one path,
    // so they cannot drift apart.
    let (base_at, base) = stage(&stages, "runtime-base");
    let (prebuilt_at, prebuilt) = stage(&stages, "prebuilt");
    let (build_at, build) = stage(&stages, "build");
    let last = stages.last().unwrap();
    assert_eq!(last.name.as_deref(), Some("runtime"), "the default target");
    assert!(
        build
            .all("RUN")
            .any(|r| r.contains("cargo build --release --locked")),
        "the build runs `cargo build --release --locked`"
    );
    let binary = "/usr/local/bin/leasehold";
    for (target, copy) in [
        (last, "COPY --from=build /usr/local/bin/leasehold"),
        (prebuilt, "COPY leasehold"),
    ] {
        assert_eq!(target.from, "runtime-base", "{:?}", target.name);
        let only: Vec<String> = target
            .instructions
            .iter()
            .map(|i| format!("{} {}", i.keyword, i.rest))
            .collect();
        assert_eq!(only, [format!("{copy} {binary}")], "{:?}", target.name);
    }
    // The classic builder (no BuildKit) runs every stage up to its target: `prebuilt`
    // must come before the stage that needs the Rust image and `RUN --mount`.
    assert!(base_at < prebuilt_at && prebuilt_at < build_at);
    assert!(
        stages[..=prebuilt_at]
            .iter()
            .flat_map(|s| s.all("RUN"))
            .all(|r| !r.starts_with("--mount")),
        "the prebuilt target builds without BuildKit"
    );
    // A `# syntax=` image would have to come from a registry.
    assert!(
        !read("Dockerfile")
            .lines()
            .any(|l| l.replace(' ', "").starts_with("#syntax=")),
        "no # syntax= directive"
    );

    // The base images are build arguments, with registry defaults.
    assert_eq!(base.from, "${RUNTIME_BASE}");
    assert_eq!(build.from, "${RUST_IMAGE}");
    let runtime_base = &args["RUNTIME_BASE"];
    assert!(
        runtime_base.starts_with("debian:") && runtime_base.contains("slim"),
        "small runtime base by default, not {runtime_base}"
    );
    assert!(args["RUST_IMAGE"].starts_with("rust:"), "{args:?}");
    let runtime = &resolved(&stages, last);
    assert_eq!(substitute(&runtime.from, &args), *runtime_base);
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
