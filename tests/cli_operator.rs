//! The command line as an operator meets it: one exit-code rule (2 for usage errors the
//! CLI finds itself, 1 for what the control or the system refused), errors that say
//! where to look, help that shows defaults and environment variables, completions and
//! the man page, readable lists, and a proxy that says when its identity was deleted.

mod common;

use std::time::Duration;

use common::{Env, wait_until};
use leasehold_testkit::v2server::V2Server;

/// A complete `addon configure influxdb-v1` but for the admin password, which only
/// the environment can carry.
const V1_CONFIGURE_WITHOUT_PASSWORD: &[&str] = &[
    "addon",
    "configure",
    "influxdb-v1",
    "--endpoint-url",
    "http://x:1",
    "--username",
    "admin",
    "--privileges",
    "WRITE ON \"t\"",
];

fn configured(v2: &V2Server) -> (Env, common::ControlProcess) {
    let mut env = Env::new();
    env.init_control();
    let control = env.serve();
    env.configure_v2(v2, &["--max-ttl", "15m"]);
    (env, control)
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_follow_one_rule_and_errors_point_the_right_way() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, _control) = configured(&v2);
    env.enrolled_identity("app", &["service=app"]);
    let app_id = env.json(&["identity", "show", "app"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let missing_home = env.home().display().to_string();
    let stranger = env
        .ok(&["identity", "create", "stranger"])
        .trim()
        .to_owned();

    // (arguments, exit code, text stderr must contain)
    let table: &[(&[&str], i32, &str)] = &[
        // Usage errors the command line finds itself: 2.
        (&["lease", "create", "--listn", "x"], 2, "--listn"),
        (&["lease", "create", "--ttl", "31d"], 2, "30 days"),
        (
            &["lease", "create", "--ttl", "1m30x"],
            2,
            "invalid duration unit",
        ),
        (&["member", "show", "nonsense"], 2, "not a member id"),
        (&["ticket", "revoke", "not-an-id"], 2, "not a ticket id"),
        (
            &["ticket", "create", "--usage-count", "0"],
            2,
            "usage-count",
        ),
        (&["policy", "set", "--match", "a=b"], 2, "--privileges"),
        (
            &["policy", "set", "--match", "a=b", "--permissions", "[{]"],
            2,
            "not valid JSON",
        ),
        (
            &["policy", "set", "--match", "a=b", "--privileges", "x"],
            2,
            "--privileges",
        ),
        (
            &[
                "addon",
                "configure",
                "influxdb",
                "--endpoint-url",
                "http://x:1",
                "--org-id",
                "my-org",
                "--permissions",
                "[]",
            ],
            2,
            "16 hex digits",
        ),
        (V1_CONFIGURE_WITHOUT_PASSWORD, 2, "INFLUXDB_ADMIN_PASSWORD"),
        // Refused by the control or the system at run time: 1.
        (
            &["lease", "create", "--identity", "app", "--ttl", "1h"],
            1,
            "exceeds the maximum of 900s",
        ),
        (
            &["lease", "show", "00000000deadbeef", "--identity", "app"],
            1,
            "lease 00000000deadbeef",
        ),
        (
            &["lease", "revoke", "00000000deadbeef"],
            1,
            "lease 00000000deadbeef",
        ),
        (
            &["member", "list", "--identity", "app"],
            1,
            "acting as identity \"app\"",
        ),
        (&["member", "list", "--identity", "app"], 1, &app_id),
        (
            &["lease", "create", "--identity", "ghost"],
            1,
            &missing_home,
        ),
        (&["identity", "show", "ghost"], 1, &missing_home),
        (&["member", "show", &stranger], 1, "not found"),
    ];
    let mut failures = Vec::new();
    for (args, code, text) in table {
        let (got, stderr) = env.fails(args);
        if got != *code || !stderr.contains(text) {
            failures.push(format!(
                "leasehold {args:?}: exit {got} (want {code}), stderr lacks {text:?}:\n{stderr}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Lists read on a terminal: a header, names beside ids, a word when empty.
    assert_eq!(
        env.ok(&["lease", "list", "--identity", "app"]).trim(),
        "no leases"
    );
    env.ok(&["lease", "create", "--identity", "app"]);
    for who in ["admin", "app"] {
        let list = env.ok(&["lease", "list", "--identity", who]);
        let mut lines = list.lines();
        let header = lines.next().unwrap();
        assert!(
            header.starts_with("ID") && header.contains("MEMBER"),
            "{list}"
        );
        let row = lines.next().unwrap();
        assert!(row.contains(" app ") && row.contains(&app_id), "{list}");
    }
    let tickets = env.ok(&["ticket", "list"]);
    assert!(
        tickets.starts_with("ID") || tickets.trim() == "no tickets",
        "{tickets}"
    );
    let short: serde_json::Value =
        serde_json::from_str(&env.ok(&["-o", "json", "lease", "list"])).unwrap();
    assert_eq!(short.as_array().unwrap().len(), 1, "{short}");
    // A compound duration is the sum of its parts.
    let lease = env.json(&["lease", "create", "--identity", "app", "--ttl", "1m30s"]);
    let lifetime = common::time(&lease["expires_at"])
        .duration_since(common::time(&lease["created_at"]))
        .unwrap();
    assert_eq!(lifetime, Duration::from_secs(90), "{lease}");
    let nobody = format!("http://127.0.0.1:{}/healthz", common::free_port());
    let out = env.run(&["health", "-o", "json", "--url", &nobody]);
    assert_eq!(out.status.code(), Some(1));
    let health: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(health["healthy"], false, "{health}");

    // The hint names the variable of the flag that is missing, and only that one.
    let (_, stderr) = env.fails(V1_CONFIGURE_WITHOUT_PASSWORD);
    assert!(
        stderr.contains("--password can also come from INFLUXDB_ADMIN_PASSWORD"),
        "{stderr}"
    );
    assert!(!stderr.contains("INFLUXDB_ADMIN_USER"), "{stderr}");

    // Enrolling a member again spends no ticket and says so, instead of "enrolled".
    let ticket = env.ticket(&["service=other"], &[]);
    let out = env.ok(&["enroll", ticket.to_str().unwrap(), "--identity", "app"]);
    assert!(
        out.contains("the ticket was not used") && out.contains("attributes are unchanged"),
        "{out}"
    );
    assert!(!out.starts_with("enrolled"), "{out}");
    let member = env.json(&["member", "show", &app_id]);
    assert_eq!(member["attributes"]["service"], "app", "{member}");
    let json = env.json(&["enroll", ticket.to_str().unwrap(), "--identity", "app"]);
    assert_eq!(json["ticket_used"], false);

    // A proxy for an unenrolled identity points at --ticket.
    env.ok(&["identity", "create", "loner"]);
    let (code, stderr) = env.fails(&["proxy", "--identity", "loner", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--ticket"), "{stderr}");

    // An address in use is said once, with the flag that moves it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let (code, stderr) = env.fails(&[
        "proxy",
        "--identity",
        "app",
        "--listen",
        &taken,
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 1);
    assert_eq!(stderr.matches("in use").count(), 1, "{stderr}");
    assert!(stderr.contains("--listen"), "{stderr}");
}

#[test]
fn help_completions_and_the_man_page_cover_every_subcommand() {
    let env = Env::new();
    // Defaults and environment variables are in --help.
    let help = env.ok(&["--help"]);
    for text in [
        "~/.leasehold",
        "LEASEHOLD_HOME",
        "RUST_LOG",
        "[default: warn",
        "Exit codes",
    ] {
        assert!(help.contains(text), "--help lacks {text:?}:\n{help}");
    }
    let proxy = env.ok(&["proxy", "--help"]);
    for text in [
        "[default: 127.0.0.1:8086 and [::1]:8086",
        "[env: LEASEHOLD_LISTEN=]",
        "[default: 10s]",
        "[default: the policy's]",
        "[env: LEASEHOLD_LEASE_TTL=]",
    ] {
        assert!(
            proxy.contains(text),
            "proxy --help lacks {text:?}:\n{proxy}"
        );
    }
    let serve = env.ok(&["control", "serve", "--help"]);
    assert!(serve.contains("[default: 7d]"), "{serve}");
    let addon = env.ok(&["addon", "configure", "influxdb-v1", "--help"]);
    assert!(addon.contains("[env: INFLUXDB_ADMIN_PASSWORD]"), "{addon}");
    let policy = env.ok(&["policy", "set", "--help"]);
    assert!(
        policy.contains("--permissions") && policy.contains("or --privileges"),
        "{policy}"
    );

    // Every subcommand appears in every completion script and in the man page.
    let names = [
        "identity",
        "control",
        "init",
        "serve",
        "set-advertise",
        "addon",
        "configure",
        "policy",
        "ticket",
        "enroll",
        "member",
        "allow",
        "lease",
        "revoke",
        "proxy",
        "health",
        "completion",
        "man",
    ];
    for shell in ["bash", "zsh", "fish"] {
        let script = env.ok(&["completion", shell]);
        for name in names {
            assert!(script.contains(name), "{shell} completion lacks {name}");
        }
    }
    // roff writes a hyphen as `\-`.
    let man = env.ok(&["man"]).replace("\\-", "-");
    assert!(man.starts_with(".ie") || man.contains(".TH"), "not roff");
    for name in names {
        assert!(man.contains(name), "man page lacks {name}");
    }
    assert!(
        man.contains("LEASEHOLD LEASE CREATE"),
        "no lease create section"
    );
    let (code, _) = env.fails(&["completion", "powershell"]);
    assert_eq!(code, 2);

    // Compound durations are accepted wherever a duration is.
    let out = env.run(&["lease", "create", "--ttl", "1m30s", "--identity", "nobody"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "parsed, then no identity: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_member_s_proxy_says_so_once_at_error_and_in_the_503() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, _control) = configured(&v2);
    env.enrolled_identity("app", &[]);
    let app_id = env.json(&["identity", "show", "app"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let proxy = env.proxy("app", &[]);
    proxy.wait_ready().await;
    let log = proxy.log();
    assert!(
        log.contains("waiting for the first lease from 127.0.0.1:"),
        "{log}"
    );
    assert!(!log.contains("Some("), "Debug values in the log:\n{log}");

    env.ok(&["member", "delete", &app_id]);
    // The next request finds the lease revoked (401), which makes the proxy ask the
    // control at once; from then on it answers 503 saying why.
    let url = format!(
        "{}/api/v2/write?org={}&bucket=telemetry",
        proxy.url(),
        v2.org_name()
    );
    let client = reqwest::Client::new();
    let mut body = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let response = client.post(&url).body("cpu usage=1").send().await.unwrap();
        if response.status() == 503 {
            body = response.text().await.unwrap();
            if body.contains("no longer a member") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        body.contains("re-enroll"),
        "503 body: {body}\n{}",
        proxy.log()
    );
    wait_until(Duration::from_secs(10), "the ERROR line", || {
        proxy.log().contains("no longer a member")
    });
    let log = proxy.log();
    let lines: Vec<_> = log
        .lines()
        .filter(|l| l.contains("no longer a member"))
        .collect();
    assert_eq!(lines.len(), 1, "one ERROR per retry period:\n{log}");
    assert!(lines[0].contains("ERROR"), "{log}");
    assert!(
        !log.contains("could not obtain a lease"),
        "no WARN for it:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn control_logs_are_for_operators() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.set_env("LEASEHOLD_LOG_FORMAT", "json");
    env.init_control();
    let control = env.serve();
    env.configure_v2(&v2, &[]);
    env.enrolled_identity("app", &["service=iot-sensor"]);
    let lease = env.json(&["lease", "create", "--identity", "app"]);
    env.revoke_as_app(&lease);
    // A backend failure is a WARN with the real cause, not an INFO "refused".
    v2.set_failing(true);
    let (code, _) = env.fails(&["lease", "create", "--identity", "app"]);
    assert_eq!(code, 1);
    v2.set_failing(false);

    let log = control.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line:\n{log}"))
    };
    // Attributes are a JSON object, not a string of Rust Debug.
    let enrolled = find("member enrolled");
    assert_eq!(
        enrolled["attributes"]["service"], "iot-sensor",
        "{enrolled}"
    );
    let ticket = find("ticket created");
    assert!(ticket["attributes"].is_object(), "{ticket}");
    // The member's name stands beside its id.
    let issued = find("lease issued");
    assert_eq!(issued["name"], "app", "{issued}");
    let revoked = find("lease revoked");
    assert_eq!(revoked["name"], "app", "{revoked}");
    let failed = find("InfluxDB failed a request");
    assert_eq!(failed["level"], "WARN", "{failed}");
    let cause = failed["error"].as_str().unwrap();
    assert!(cause.to_lowercase().contains("unavailable"), "{failed}");
    assert!(!log.contains("Some("), "Debug values in the log:\n{log}");
}

#[test]
fn advertised_addresses_change_after_init_and_a_second_init_keeps_the_home_s_admin() {
    let env = Env::new();
    env.init_control();
    let before = env.json(&["identity", "show", "admin"]);

    // Another control in the same home must not re-point the home's admin.
    let other = env.home().join("other-control");
    let (code, stderr) = env.fails(&[
        "control",
        "init",
        "--data-dir",
        other.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("already enrolled with control"), "{stderr}");
    assert!(!other.join("control.json").exists(), "nothing was created");
    assert_eq!(env.json(&["identity", "show", "admin"]), before);

    // A malformed address is a usage error and changes nothing.
    let (code, _) = env.fails(&["control", "set-advertise", "no-port"]);
    assert_eq!(code, 2);
    let out = env.ok(&[
        "control",
        "set-advertise",
        "127.0.0.1:1",
        "control.example.com:4100",
    ]);
    assert!(out.contains("restart"), "{out}");
    // Re-add the reachable address first so the ticket can still be used.
    let reachable = format!("127.0.0.1:{}", env.control_port);
    env.ok(&[
        "control",
        "set-advertise",
        &reachable,
        "control.example.com:4100",
    ]);
    let _control = env.serve();
    let ticket = env.json(&["ticket", "create"]);
    let line = ticket["ticket"].as_str().unwrap();
    assert!(
        line.contains(&reachable) && line.contains("control.example.com:4100"),
        "{line}"
    );
    // The ticket works: a client enrolls with the first address.
    let file = env.home().join("t");
    std::fs::write(&file, line).unwrap();
    env.ok(&["identity", "create", "c"]);
    env.ok(&["enroll", file.to_str().unwrap(), "--identity", "c"]);
}
