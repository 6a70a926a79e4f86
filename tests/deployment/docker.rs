//! The Docker sidecar on a real Docker engine, with no container registry.
//!
//! The images are made here the way an air-gapped user makes them: the base images from
//! Debian's packages (`scripts/docker-base-images.sh`, cached), then the leasehold image
//! by the Dockerfile's `prebuilt` target around the binary cargo built for this test
//! (`scripts/docker-image.sh`). Then `examples/docker-compose.yml` runs with its
//! InfluxDB 1.x override and `docker-compose.no-shell.yml` (the sidecar's shells made
//! unusable), under a project name of its own, and is taken down with its volumes at
//! the end, passed or failed. What it shows, in order:
//!
//! 1. the control initializes once, the admin job configures the add-on and writes a
//!    ticket, the sidecar enrolls from it on first start and becomes healthy;
//! 2. the sidecar runs as uid 10001 on a read-only root filesystem with no usable shell,
//!    and the key files in the volumes are 0600;
//! 3. the app writes to `localhost` with no token while leases rotate (12-second TTL)
//!    and expired lease users are dropped from InfluxDB; every write is answered 204
//!    and the points are in InfluxDB (which refuses the app's writes sent around the
//!    sidecar);
//! 4. a restarted control keeps its identity: it was not initialized again, and the
//!    sidecar goes on leasing from it;
//! 5. a restarted sidecar keeps its identity (the volume) and does not enroll again;
//! 6. `docker stop` drains: a request in flight when SIGTERM arrives completes with 204,
//!    and the sidecar exits 0 within the grace period.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::engine::{
    Compose, ImageTag, docker, docker_with_input, inspect, json_logs, logs, messages, output,
    require_engine, run, wait_for,
};
use super::repo;

/// The add-on's lease lifetime: short, so that leases rotate within seconds, yet long
/// enough that a renewal at ~60% has seconds to spare on a busy machine.
const LEASE_TTL: &str = "12s";
/// Leases the sidecar must have installed while the app writes.
const ROTATIONS: u64 = 3;
/// Bounds for hangs only (image builds, container starts on a busy machine).
pub(crate) const SLOW: Duration = Duration::from_secs(300);
const METRICS: &str = "http://127.0.0.1:8087/metrics";
const WRITE_URL: &str = "http://127.0.0.1:8086/write?db=telemetry";

#[test]
fn docker_sidecar_enrolls_rotates_leases_keeps_its_identity_and_drains() {
    require_engine();
    let started = Instant::now();
    let phase = |what: &str| eprintln!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
    let run_id = unique_suffix();

    let (image, influxdb1_image) = build_images(&run_id);
    phase("images ready");
    let mut stack = Stack::up(&run_id, &image.0, &influxdb1_image);
    phase("compose up");
    stack.first_start();
    phase("sidecar enrolled and healthy");
    stack.hardening();
    phase("hardening checked");
    stack.writes_while_leases_rotate();
    phase("leases rotated; every write answered 204");
    stack.control_restart();
    phase("control restarted");
    stack.sidecar_restart();
    phase("sidecar restarted");
    drain_on_stop(&stack.app, &stack.sidecar);
    assert_eq!(
        stack.influx().count("drain", "marker"),
        1,
        "the drained write landed"
    );
    phase("drained on docker stop");
}

/// The base images (cached) and the leasehold image around this test's binary, built
/// as a user without a registry builds them. Returns the leasehold image (removed when
/// dropped) and the InfluxDB 1.x image.
pub(crate) fn build_images(run_id: &str) -> (ImageTag, String) {
    let bases = run(&mut Command::new(repo("scripts/docker-base-images.sh")));
    let var = |name: &str| {
        bases
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("docker-base-images.sh printed no {name}: {bases}"))
            .to_owned()
    };
    let image = ImageTag(format!("leasehold:test-{run_id}"));
    run(Command::new(repo("scripts/docker-image.sh"))
        .env("LEASEHOLD_BIN", env!("CARGO_BIN_EXE_leasehold"))
        .env("LEASEHOLD_IMAGE", &image.0)
        .env("RUNTIME_BASE", var("RUNTIME_BASE")));
    let config = &inspect(&image.0)["Config"];
    assert_eq!(config["User"], "10001:10001");
    assert_eq!(config["Entrypoint"], serde_json::json!(["leasehold"]));
    assert_eq!(
        config["Healthcheck"]["Test"][0], "CMD",
        "exec form, no shell"
    );
    assert_eq!(config["Healthcheck"]["Test"][1], "leasehold");
    assert!(config["Volumes"]["/var/lib/leasehold"].is_object());
    (image, var("INFLUXDB1_IMAGE"))
}

/// The running compose example: its containers, and what the test learns on the way.
struct Stack {
    /// Taken down with its volumes when the stack is dropped.
    compose: Compose,
    password: String,
    influxdb: String,
    control: String,
    app: String,
    sidecar: String,
    /// The sidecar's identity, once it has enrolled.
    app_id: String,
}

impl Stack {
    fn up(run_id: &str, image: &str, influxdb1_image: &str) -> Self {
        let password = random_hex(16);
        let compose = Compose::new(
            &format!("leaseholdtest{run_id}"),
            vec![
                repo("examples/docker-compose.yml"),
                repo("examples/docker-compose.influxdb1.yml"),
                repo("tests/deployment/docker-compose.no-shell.yml"),
            ],
            [
                ("LEASEHOLD_IMAGE", image),
                ("INFLUXDB1_IMAGE", influxdb1_image),
                ("INFLUXDB_ADMIN_PASSWORD", &password),
                ("INFLUXDB_ADMIN_TOKEN", "unused-with-influxdb-1"),
                ("LEASE_TTL", LEASE_TTL),
                ("APP_WRITE_INTERVAL", "0.5"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        compose.run(&["up", "--detach", "--no-build"]);
        let [influxdb, control, app, sidecar] =
            ["influxdb", "control", "app", "leasehold"].map(|s| compose.container(s));
        Self {
            compose,
            password,
            influxdb,
            control,
            app,
            sidecar,
            app_id: String::new(),
        }
    }

    fn influx(&self) -> Influx<'_> {
        Influx {
            container: &self.influxdb,
            password: &self.password,
        }
    }

    /// One init, the add-on and the ticket, one enrollment, healthy.
    fn first_start(&mut self) {
        let admin = self.compose.container("admin");
        let setup = self.compose.container("influxdb-ids");
        for (name, id) in [("influxdb set-up", &setup), ("admin", &admin)] {
            let state = &inspect(id)["State"];
            assert_eq!(state["Status"], "exited", "{name}");
            assert_eq!(state["ExitCode"], 0, "{name}: {}", logs(id));
        }
        assert!(
            logs(&admin).contains("add-on configured; ticket written to /tickets/app.ticket"),
            "{}",
            logs(&admin)
        );
        wait_healthy(&self.sidecar);
        let created = messages(&self.sidecar, "created identity");
        assert_eq!(created.len(), 1, "one identity created");
        assert_eq!(
            messages(&self.sidecar, "enrolled").len(),
            1,
            "one enrollment"
        );
        self.app_id = created[0]["id"].as_str().unwrap().to_owned();
        assert_eq!(init_runs(&self.control), 1, "control init ran once");
    }

    /// uid 10001, read-only root, 0600 key files in a 0700 home; no shell in the sidecar.
    fn hardening(&self) {
        for (name, id) in [("sidecar", &self.sidecar), ("control", &self.control)] {
            let status = docker(&["exec", id, "cat", "/proc/1/status"]);
            for field in ["Uid:", "Gid:"] {
                let ids: Vec<&str> = status
                    .lines()
                    .find_map(|l| l.strip_prefix(field))
                    .unwrap()
                    .split_whitespace()
                    .collect();
                assert_eq!(ids, ["10001"; 4], "{name}: {field} of process 1");
            }
            assert_eq!(inspect(id)["HostConfig"]["ReadonlyRootfs"], true, "{name}");
            let touch = output(Command::new("docker").args(["exec", id, "touch", "/probe"]));
            assert!(
                !touch.status.success()
                    && String::from_utf8_lossy(&touch.stderr).contains("Read-only file system"),
                "{name}: the root filesystem is writable: {touch:?}"
            );
            let home = docker(&["exec", id, "stat", "-c", "%a %u", "/var/lib/leasehold"]);
            assert_eq!(home.trim(), "700 10001", "{name}: the home volume");
            let keys = docker(&[
                "exec",
                id,
                "find",
                "/var/lib/leasehold",
                "-name",
                "*.key",
                "-printf",
                "%m %U %p\\n",
            ]);
            let keys: Vec<&str> = keys.lines().collect();
            // The sidecar's identity; the control's own and its local admin's.
            let expected = if name == "sidecar" { 1 } else { 2 };
            assert_eq!(keys.len(), expected, "{name}: key files {keys:?}");
            for key in keys {
                assert!(key.starts_with("600 10001 "), "{name}: {key}");
            }
        }
        let shell =
            output(Command::new("docker").args(["exec", &self.sidecar, "sh", "-c", "true"]));
        assert!(!shell.status.success(), "the sidecar still has a shell");
    }

    /// Writes through localhost with no token, while leases rotate and the expired ones
    /// are removed from InfluxDB: all 204, all stored.
    fn writes_while_leases_rotate(&self) {
        wait_for("lease rotations", SLOW, || {
            (renewals(&self.app)? >= ROTATIONS).then_some(())
        });
        let leases = self.admin_list(&["lease", "list"]);
        let mut ours: Vec<&str> = leases
            .iter()
            .filter(|l| l["issued_for"] == self.app_id.as_str())
            .map(|l| l["id"].as_str().unwrap())
            .collect();
        assert!(ours.len() as u64 >= ROTATIONS, "{leases:?}");
        // Lease ids are time-ordered: the first is the one the app started writing with.
        ours.sort_unstable();
        let first_user_suffix = format!("_{}", ours[0]);
        wait_for(
            "the first lease's InfluxDB user to be dropped",
            SLOW,
            || {
                let users = self.influx().users();
                let gone = !users.iter().any(|u| u.ends_with(&first_user_suffix));
                let current = users.iter().any(|u| u.starts_with("leasehold_"));
                (gone && current).then_some(())
            },
        );
        let writes = app_writes(&self.app);
        assert!(
            writes.len() >= 10 && writes.iter().all(|s| s == "204"),
            "every write through the sidecar is answered 204: {writes:?}"
        );
        let points = self.influx().count("heartbeat", "up");
        assert!(
            points >= writes.len() as u64,
            "{points} points in InfluxDB for {} writes answered 204",
            writes.len()
        );
        // The same write around the sidecar has no credential, and InfluxDB refuses it.
        let direct = docker(&[
            "exec",
            &self.app,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "--data-binary",
            "heartbeat,host=app up=1i",
            "http://influxdb:8086/write?db=telemetry",
        ]);
        assert_eq!(direct, "401", "InfluxDB must require credentials");
    }

    /// A restarted control is the same control, not initialized again, still leasing.
    fn control_restart(&self) {
        docker(&["restart", &self.control]);
        let serving = wait_for("the restarted control", SLOW, || {
            let serving = messages(&self.control, "control serving");
            (serving.len() == 2).then_some(serving)
        });
        assert_eq!(
            serving[0]["control"], serving[1]["control"],
            "one control identity"
        );
        assert_eq!(
            init_runs(&self.control),
            1,
            "control init ran once, not on restart"
        );
        let before = renewals(&self.app).expect("the sidecar's metrics");
        wait_for("a lease from the restarted control", SLOW, || {
            (renewals(&self.app)? > before).then_some(())
        });
    }

    /// A restarted sidecar keeps its identity (the volume) and does not enroll again.
    fn sidecar_restart(&self) {
        assert_eq!(self.identity()["id"], self.app_id.as_str());
        let answered = app_writes(&self.app).len();
        docker(&["restart", &self.sidecar]);
        // Docker resets the health status to "starting" on restart.
        wait_healthy(&self.sidecar);
        assert_eq!(
            messages(&self.sidecar, "proxy starting").len(),
            2,
            "restarted once"
        );
        assert_eq!(
            messages(&self.sidecar, "created identity").len(),
            1,
            "no new identity"
        );
        assert_eq!(
            messages(&self.sidecar, "enrolled").len(),
            1,
            "no second enrollment"
        );
        assert_eq!(self.identity()["id"], self.app_id.as_str());
        assert_eq!(messages(&self.control, "member enrolled").len(), 1);
        let members = self.admin_list(&["member", "list"]);
        let apps: Vec<&Value> = members.iter().filter(|m| m["name"] == "app").collect();
        assert_eq!(apps.len(), 1, "{members:?}");
        assert_eq!(apps[0]["id"], self.app_id.as_str());
        wait_for("writes through the restarted sidecar", SLOW, || {
            let writes = app_writes(&self.app);
            (writes.len() > answered && writes.last()? == "204").then_some(())
        });
    }

    /// The sidecar's `identity show app`.
    fn identity(&self) -> Value {
        let out = docker(&[
            "exec",
            &self.sidecar,
            "leasehold",
            "identity",
            "show",
            "app",
            "--output",
            "json",
        ]);
        serde_json::from_str(&out).unwrap()
    }

    /// An admin `list` command, run in the control's container (its admin identity).
    fn admin_list(&self, command: &[&str]) -> Vec<Value> {
        let mut args = vec!["exec", &self.control, "leasehold"];
        args.extend(command);
        args.extend(["--output", "json"]);
        serde_json::from_str(&docker(&args)).unwrap()
    }
}

/// Starts a write whose body the test holds back, stops the sidecar while it is in
/// flight, then lets the body go: the answer is 204 and the sidecar exits 0 on its own.
fn drain_on_stop(app: &str, sidecar: &str) {
    let draining_before = messages(sidecar, "shutting down: draining connections").len();
    // `Expect: 100-continue` with a long wait: curl sends nothing of the body until the
    // sidecar has accepted the connection, read the request head and started to read
    // the body, so the "100 Continue" line says the request is in flight.
    let mut curl = Command::new("docker")
        .args([
            "exec",
            "-i",
            app,
            "curl",
            "-sS",
            "-v",
            "-H",
            "Expect: 100-continue",
            "--expect100-timeout",
            "600",
            "-X",
            "POST",
            "-T",
            "-",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            WRITE_URL,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running docker exec curl");
    let (lines, stderr_lines) = mpsc::channel();
    let stderr = curl.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    wait_for(
        "the sidecar to take the request (100 Continue)",
        SLOW,
        || {
            seen.extend(stderr_lines.try_iter());
            seen.iter()
                .any(|l| l.contains("100 Continue"))
                .then_some(())
        },
    );

    let stopping = {
        let sidecar = sidecar.to_owned();
        // No `--time`: the container's own stop timeout (compose stop_grace_period).
        std::thread::spawn(move || output(Command::new("docker").args(["stop", &sidecar])))
    };
    wait_for("SIGTERM to reach the sidecar", SLOW, || {
        (messages(sidecar, "shutting down: draining connections").len() > draining_before)
            .then_some(())
    });
    let mut body = curl.stdin.take().unwrap();
    body.write_all(b"drain,host=app marker=1i\n").unwrap();
    drop(body);
    let answer = curl.wait_with_output().expect("waiting for curl");
    seen.extend(stderr_lines.try_iter());
    assert_eq!(
        String::from_utf8_lossy(&answer.stdout),
        "204",
        "the in-flight write after SIGTERM: {seen:#?}"
    );
    let stopped = stopping.join().unwrap();
    assert!(stopped.status.success(), "docker stop: {stopped:?}");
    let state = &inspect(sidecar)["State"];
    assert_eq!(state["Status"], "exited");
    assert_eq!(
        state["ExitCode"], 0,
        "exited on its own, not killed: {state}"
    );
    let records = json_logs(sidecar);
    assert!(
        records
            .last()
            .is_some_and(|r| r["message"] == "proxy stopped"),
        "{records:#?}"
    );
    assert!(
        !records
            .iter()
            .any(|r| r["message"] == "grace period over; closing remaining connections"),
        "the drain ran out of time"
    );
}

/// How many times `control init` ran: its plain output has one `admin identity` line.
fn init_runs(control: &str) -> usize {
    logs(control)
        .lines()
        .filter(|l| l.starts_with("admin identity"))
        .count()
}

pub(crate) fn wait_healthy(container: &str) {
    wait_for(&format!("{container} to be healthy"), SLOW, || {
        let state = &inspect(container)["State"];
        assert_ne!(state["Status"], "exited", "{}", logs(container));
        (state["Health"]["Status"] == "healthy").then_some(())
    });
}

/// The statuses the app logged (`write: 204`), in order.
pub(crate) fn app_writes(app: &str) -> Vec<String> {
    logs(app)
        .lines()
        .filter_map(|l| l.strip_prefix("write: "))
        .map(str::to_owned)
        .collect()
}

/// Leases the sidecar has installed, from its metrics; `None` while it does not answer.
pub(crate) fn renewals(app: &str) -> Option<u64> {
    let scrape = output(Command::new("docker").args(["exec", app, "curl", "-sf", METRICS]));
    if !scrape.status.success() {
        return None;
    }
    String::from_utf8_lossy(&scrape.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("leasehold_proxy_lease_renewals_total "))
        .and_then(|n| n.trim().parse().ok())
}

/// InfluxDB in its container, queried as the admin (password on curl's stdin).
struct Influx<'a> {
    container: &'a str,
    password: &'a str,
}

impl Influx<'_> {
    fn count(&self, measurement: &str, field: &str) -> u64 {
        let series = self.query(&format!("SELECT count(\"{field}\") FROM \"{measurement}\""));
        series["values"][0][1].as_u64().unwrap_or(0)
    }

    /// The InfluxDB users (leases are users).
    fn users(&self) -> Vec<String> {
        let series = self.query("SHOW USERS");
        series["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| row[0].as_str().unwrap().to_owned())
            .collect()
    }

    /// The first series of the answer to `q` (`null` when there is none).
    fn query(&self, q: &str) -> Value {
        let query = format!("q={q}");
        let out = docker_with_input(
            &[
                "exec",
                "-i",
                self.container,
                "curl",
                "-sS",
                "-f",
                "-G",
                "-K",
                "-",
                "http://127.0.0.1:8086/query",
                "--data-urlencode",
                "db=telemetry",
                "--data-urlencode",
                &query,
            ],
            &format!("user = \"admin:{}\"\n", self.password),
        );
        let answer: Value = serde_json::from_str(&out).expect("InfluxDB answers JSON");
        let result = &answer["results"][0];
        assert!(result["error"].is_null(), "{answer}");
        result["series"][0].clone()
    }
}

/// Unique within this machine: names of compose projects and image tags.
pub(crate) fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}x{nanos}", std::process::id())
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut buf).unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
