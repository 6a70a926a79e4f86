//! Membership and tickets through the real binary: a deleted member stays out until an
//! admin allows it, tickets can be listed and revoked and are pruned when dead, the
//! name given at enrollment cannot smuggle control characters, and a ticket written to
//! a file is private and never overwrites anything.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Env, wait_until};
use leasehold_channel::Identity;
use leasehold_channel::ticket::{Ticket, encode_secret};
use leasehold_protocol::client::{Client, ClientError};
use leasehold_protocol::{ErrorCode, Reply, Request};
use serde_json::Value;

fn serving() -> (Env, common::ControlProcess) {
    let env = Env::new();
    env.init_control();
    let control = env.serve();
    (env, control)
}

fn identifier(env: &Env, name: &str) -> String {
    env.json(&["identity", "show", name])["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn tickets(env: &Env) -> Vec<Value> {
    env.json(&["ticket", "list"]).as_array().unwrap().clone()
}

#[test]
fn a_deleted_member_cannot_re_enroll_until_allowed() {
    let (env, control) = serving();
    env.ok(&["identity", "create", "app"]);
    env.ok(&["identity", "create", "other"]);
    let ticket = env.ticket(&["service=app"], &["--usage-count", "3"]);
    let ticket = ticket.to_str().unwrap();
    env.ok(&["enroll", ticket, "--identity", "app"]);
    let app = identifier(&env, "app");

    env.ok(&["member", "delete", &app]);
    // The multi-use ticket still has uses, but not for this identity.
    let (code, stderr) = env.fails(&["enroll", ticket, "--identity", "app"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("deleted from the control") && stderr.contains("member allow"),
        "{stderr}"
    );
    let (_, stderr) = env.fails(&["lease", "create", "--identity", "app"]);
    assert!(stderr.contains("not an enrolled member"), "{stderr}");
    assert_eq!(
        tickets(&env)[0]["uses_left"],
        2,
        "the refused enrollment spent no use"
    );

    // `member list` shows the denial, in both output forms.
    let members = env.json(&["member", "list"]);
    let entry = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == app.as_str())
        .expect("the denied identity is listed");
    assert_eq!(entry["status"], "denied");
    assert_eq!(entry["name"], "app");
    assert_eq!(entry["attributes"]["service"], "app");
    let plain = env.ok(&["member", "list"]);
    let line = plain.lines().find(|l| l.contains(&app)).unwrap();
    assert!(line.contains("DENIED"), "{plain}");
    let admin = plain.lines().find(|l| l.contains("admin")).unwrap();
    assert!(!admin.contains("DENIED"), "{plain}");

    // Other identities still enroll with the same ticket.
    env.ok(&["enroll", ticket, "--identity", "other"]);

    // Only admins may lift it; an unknown or malformed id changes nothing.
    let (_, stderr) = env.fails(&["member", "allow", &app, "--identity", "other"]);
    assert!(stderr.contains("admin only"), "{stderr}");
    let (_, stderr) = env.fails(&["member", "allow", &identifier(&env, "other")]);
    assert!(stderr.contains("not found"), "{stderr}");
    let (code, _) = env.fails(&["member", "allow", "nonsense"]);
    assert_eq!(code, 2);

    assert!(
        env.ok(&["member", "allow", &app])
            .contains("may enroll again")
    );
    let members = env.json(&["member", "list"]);
    assert!(
        members
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "enrolled"),
        "{members}"
    );
    env.ok(&["enroll", ticket, "--identity", "app"]);
    env.ok(&["member", "show", &app]);
    assert!(control.log().contains("identity allowed to enroll again"));
}

#[test]
fn tickets_are_listed_revoked_and_pruned() {
    let (env, _control) = serving();
    for name in ["a", "b", "c"] {
        env.ok(&["identity", "create", name]);
    }
    let created = env.json(&[
        "ticket",
        "create",
        "--attribute",
        "service=x",
        "--usage-count",
        "2",
    ]);
    let id = created["id"].as_str().unwrap().to_owned();
    let line = created["ticket"].as_str().unwrap().to_owned();
    let file = env.home().join("two-use.ticket");
    std::fs::write(&file, &line).unwrap();
    let file = file.to_str().unwrap();
    let single = env.json(&["ticket", "create"]);
    let single_id = single["id"].as_str().unwrap().to_owned();
    let single_file = env.home().join("single.ticket");
    std::fs::write(&single_file, single["ticket"].as_str().unwrap()).unwrap();
    let single = single_file.to_str().unwrap().to_owned();
    let short = env.ticket(&[], &["--expires-in", "1s"]);

    let listed = tickets(&env);
    assert!(
        (2..=3).contains(&listed.len()),
        "the short one may be gone: {listed:?}"
    );
    let two_use = listed.iter().find(|t| t["id"] == id.as_str()).unwrap();
    assert_eq!(two_use["uses_left"], 2);
    assert_eq!(two_use["attributes"]["service"], "x");
    assert_eq!(two_use["expires_at"], created["expires_at"]);
    assert_eq!(id.len(), 16);
    // A listing never carries a secret.
    let secret = line.split('@').next().unwrap().rsplit(':').next().unwrap();
    let plain = env.ok(&["ticket", "list"]);
    assert!(
        !plain.contains(secret) && !tickets(&env).iter().any(|t| t.to_string().contains(secret))
    );
    let row = plain
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{plain}"));
    assert_eq!(
        row.split_whitespace().nth(2),
        Some("2"),
        "uses left:\n{plain}"
    );

    // Used once: one use left. Used up: gone from the list.
    env.ok(&["enroll", file, "--identity", "a"]);
    let two_use = tickets(&env)
        .into_iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert_eq!(two_use["uses_left"], 1);
    env.ok(&["enroll", file, "--identity", "b"]);
    assert!(!tickets(&env).iter().any(|t| t["id"] == id.as_str()));

    // Revoked: refused at enrollment, gone from the list; a second revoke finds nothing.
    assert!(
        env.ok(&["ticket", "revoke", &single_id])
            .contains("revoked")
    );
    assert!(!tickets(&env).iter().any(|t| t["id"] == single_id.as_str()));
    let (_, stderr) = env.fails(&["enroll", &single, "--identity", "c"]);
    assert!(stderr.contains("ticket refused"), "{stderr}");
    let (_, stderr) = env.fails(&["ticket", "revoke", &single_id]);
    assert!(stderr.contains("not found"), "{stderr}");
    let (code, _) = env.fails(&["ticket", "revoke", "not-an-id"]);
    assert_eq!(code, 2);

    // The short ticket expires and is pruned.
    wait_until(
        Duration::from_secs(15),
        "the expired ticket to be pruned",
        || tickets(&env).is_empty(),
    );
    let (_, stderr) = env.fails(&["enroll", short.to_str().unwrap(), "--identity", "c"]);
    assert!(stderr.contains("ticket refused"), "{stderr}");
    // Members cannot list or revoke tickets.
    let (_, stderr) = env.fails(&["ticket", "list", "--identity", "a"]);
    assert!(stderr.contains("admin only"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_enrollment_name_with_control_characters_is_refused_and_spends_nothing() {
    let (env, control) = serving();
    let path = env.ticket(&[], &[]);
    let ticket: Ticket = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let identity = Identity::generate();
    // A non-member gets one request per channel: each attempt connects anew.
    let connect = || Client::connect_to(&ticket.addrs, &ticket.control, &identity);
    let long = "n".repeat(65);
    for name in [
        "evil\nname",
        "esc\u{1b}[31mred",
        "",
        long.as_str(),
        "a b",
        "é",
    ] {
        let answer = connect()
            .await
            .unwrap()
            .call(Request::Enroll {
                secret: encode_secret(&ticket.secret),
                name: name.to_owned(),
            })
            .await;
        match answer {
            Err(ClientError::Remote(e)) => {
                assert_eq!(e.code, ErrorCode::BadRequest, "{name:?}: {e}");
                assert!(e.message.contains("identity name"), "{e}");
                assert!(!e.message.contains('\n') && !e.message.contains('\u{1b}'));
            }
            other => panic!("{name:?} was not refused: {other:?}"),
        }
    }
    // The ticket is unspent: a valid name enrolls with it.
    let answer = connect()
        .await
        .unwrap()
        .call(Request::Enroll {
            secret: encode_secret(&ticket.secret),
            name: "good-name_1.0".to_owned(),
        })
        .await
        .unwrap();
    assert!(matches!(answer, Reply::Member(m) if m.name == "good-name_1.0"));
    let log = control.log();
    assert!(
        !log.contains("\u{1b}[31mred") && !log.contains("evil\nname"),
        "a control character reached the log:\n{log}"
    );
    let members = env.ok(&["member", "list"]);
    assert!(members.contains("good-name_1.0") && !members.contains("evil"));
}

#[test]
fn ticket_output_file_is_private_and_never_overwritten() {
    let (env, _control) = serving();
    let path = env.home().join("sensor.ticket");
    let path_str = path.to_str().unwrap();
    let out = env.ok(&[
        "ticket",
        "create",
        "--attribute",
        "service=iot-sensor",
        "--output-file",
        path_str,
    ]);
    assert!(
        out.contains("wrote ticket") && !out.contains("lht1:"),
        "{out}"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "ticket file mode {mode:o}");
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.parse::<Ticket>().is_ok(), "{written}");

    // A second create to the same file is refused, changes the file not at all and
    // creates no ticket.
    let (code, stderr) = env.fails(&["ticket", "create", "--output-file", path_str]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), written);
    assert_eq!(tickets(&env).len(), 1);

    // The file enrolls.
    env.ok(&["identity", "create", "iot-sensor"]);
    env.ok(&["enroll", path_str, "--identity", "iot-sensor"]);

    // A refused request leaves no file behind.
    let refused = env.home().join("refused.ticket");
    let (code, _) = env.fails(&[
        "ticket",
        "create",
        "--usage-count",
        "0",
        "--output-file",
        refused.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(!refused.exists());
}
