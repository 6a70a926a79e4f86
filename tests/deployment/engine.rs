//! Driving a real Docker engine from a test: `docker` and Compose commands that fail
//! loudly with their output, waiting on conditions with generous deadlines, and a
//! Compose project and an image tag that are removed when the test ends, passed or
//! failed (the services' logs are printed first when it failed).
//!
//! No engine or no Compose: the test fails and says what is missing; it never skips.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const POLL: Duration = Duration::from_millis(250);

/// Runs `cmd`; panics with its output unless it exits 0; returns its stdout.
pub(crate) fn run(cmd: &mut Command) -> String {
    let output = output(cmd);
    assert!(
        output.status.success(),
        "`{cmd:?}` failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `cmd` to completion, whatever its exit status.
pub(crate) fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{cmd:?}` (is it installed?): {e}"))
}

/// `docker ARGS`, which must succeed; its stdout.
pub(crate) fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args))
}

/// `docker ARGS` with `input` on its stdin (secrets for `curl -K -`, never argv).
pub(crate) fn docker_with_input(args: &[&str], input: &str) -> String {
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running docker");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .expect("writing to docker's stdin");
    let output = child.wait_with_output().expect("waiting for docker");
    assert!(
        output.status.success(),
        "`docker {args:?}` failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Panics unless the docker CLI is installed and the engine answers.
pub(crate) fn require_engine() {
    let output = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .unwrap_or_else(|e| {
            panic!("this test needs a Docker engine, but the docker CLI cannot run: {e}")
        });
    assert!(
        output.status.success(),
        "this test needs a Docker engine, and it does not answer:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `docker inspect` of one container or image, as JSON.
pub(crate) fn inspect(what: &str) -> Value {
    let text = docker(&["inspect", what]);
    let mut all: Vec<Value> = serde_json::from_str(&text).expect("docker inspect prints JSON");
    all.remove(0)
}

/// A container's output (stdout and stderr, for leasehold logs to stderr).
pub(crate) fn logs(container: &str) -> String {
    let output = output(Command::new("docker").args(["logs", container]));
    assert!(output.status.success(), "docker logs {container}");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

/// The JSON log lines of a container (`LEASEHOLD_LOG_FORMAT=json`).
pub(crate) fn json_logs(container: &str) -> Vec<Value> {
    logs(container)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

/// The log records of `container` whose message is `message`.
pub(crate) fn messages(container: &str, message: &str) -> Vec<Value> {
    json_logs(container)
        .into_iter()
        .filter(|l| l["message"] == message)
        .collect()
}

/// Polls `probe` until it gives a value; panics after `timeout`. The deadline only
/// bounds a hang: it is generous and never an assertion about speed.
pub(crate) fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A Compose project: unique name, its files and the variables it interpolates. On drop
/// it is taken down with its volumes (`down -v --remove-orphans`).
pub(crate) struct Compose {
    program: Vec<String>,
    project: String,
    files: Vec<PathBuf>,
    env: Vec<(String, String)>,
}

impl Compose {
    /// Finds the Compose tool: Debian's `docker-compose`, else the `docker compose`
    /// plugin; panics if there is neither.
    pub(crate) fn new(project: &str, files: Vec<PathBuf>, env: Vec<(String, String)>) -> Self {
        let works = |program: &[&str]| {
            Command::new(program[0])
                .args(&program[1..])
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let program: &[&str] = if works(&["docker-compose"]) {
            &["docker-compose"]
        } else if works(&["docker", "compose"]) {
            &["docker", "compose"]
        } else {
            panic!(
                "this test needs Docker Compose: neither `docker-compose` nor `docker compose` runs"
            );
        };
        Self {
            program: program.iter().map(|s| (*s).to_owned()).collect(),
            project: project.to_owned(),
            files,
            env,
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program[0]);
        cmd.args(&self.program[1..])
            .args(["--project-name", &self.project]);
        for file in &self.files {
            cmd.arg("--file").arg(file);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs a Compose subcommand, which must succeed; its stdout.
    pub(crate) fn run(&self, args: &[&str]) -> String {
        run(self.command().args(args))
    }

    /// The container id of a service (running or not).
    pub(crate) fn container(&self, service: &str) -> String {
        let ids = self.run(&["ps", "-a", "-q", service]);
        let id = ids.lines().next().unwrap_or_default().trim().to_owned();
        assert!(!id.is_empty(), "no container for compose service {service}");
        id
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = output(self.command().args(["logs", "--no-color", "--tail=60"]));
            eprintln!(
                "--- compose logs of {} ---\n{}{}",
                self.project,
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        let down = output(self.command().args([
            "down",
            "--volumes",
            "--remove-orphans",
            "--timeout",
            "5",
        ]));
        if !down.status.success() {
            eprintln!(
                "compose down of {} failed: {}",
                self.project,
                String::from_utf8_lossy(&down.stderr)
            );
        }
    }
}

/// An image tag that is removed on drop.
pub(crate) struct ImageTag(pub(crate) String);

impl Drop for ImageTag {
    fn drop(&mut self) {
        let _ = output(Command::new("docker").args(["image", "rm", "--force", &self.0]));
    }
}
