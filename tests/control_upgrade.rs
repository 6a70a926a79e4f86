//! Upgrading a replicated control's PostgreSQL schema from the previous release's
//! (version 2), as an operator does it: `control serve` refuses the older schema and
//! names the command; `control init` on the existing data directory points at it;
//! `control migrate` refuses another control's database (exit 1) and a machine with
//! no data directory (exit 2), changing nothing, then migrates this control's
//! ("schema 2 → 4", exit 0) keeping its records, and says "already at schema 4" the
//! second time; then the replica serves. A database migrated by a newer release: this
//! one neither serves nor migrates it, and says to upgrade.

mod common;

use std::collections::BTreeMap;

use common::Env;
use leasehold_channel::Identity;
use leasehold_control::store::postgres::schema::{CURRENT, MIGRATIONS};
use leasehold_protocol::{MemberRecord, Timestamp};
use leasehold_testkit::postgres::Postgres;

/// The schema version of the previous release.
const PREVIOUS: usize = 2;

fn schema_version(pg: &Postgres) -> String {
    pg.psql("SELECT max(version) FROM leasehold_schema")
        .unwrap()
        .concat()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_migrates_a_replicas_database_from_the_previous_schema() {
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .unwrap()
        .expect("PostgreSQL (Debian package postgresql) is required: scripts/test.sh installs it");
    // A replica's data directory (its identity), and its database as the previous
    // release's `control init` left it, with a member.
    let mut env = Env::new();
    let init = env.json(&[
        "control",
        "init",
        "--listen",
        &format!("127.0.0.1:{}", env.control_port),
    ]);
    let control = init["control"].as_str().unwrap().to_owned();
    let mut previous = String::from("CREATE TABLE leasehold_schema (version INTEGER NOT NULL);");
    for (at, migration) in MIGRATIONS[..PREVIOUS].iter().enumerate() {
        previous.push_str(migration);
        previous.push_str(&format!(
            ";INSERT INTO leasehold_schema (version) VALUES ({});",
            at + 1
        ));
    }
    let member = MemberRecord {
        id: Identity::generate().public(),
        name: "edge".into(),
        attributes: BTreeMap::new(),
        enrolled_at: Timestamp(5),
    };
    previous.push_str(&format!(
        "INSERT INTO leasehold_meta (key, value) VALUES ('control_identity', '{control}');
         INSERT INTO members (id, record) VALUES ('{}', '{}');",
        member.id,
        serde_json::to_string(&member).unwrap()
    ));
    pg.psql(&previous).unwrap();
    env.set_env("LEASEHOLD_STORE_URL", &pg.url());

    let (code, stderr) = env.fails(&["control", "serve"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("schema is at version 2"), "{stderr}");
    assert!(
        stderr.contains("run `leasehold control migrate --store URL`"),
        "{stderr}"
    );
    assert!(!stderr.contains(pg.password()), "{stderr}");

    // `control init` again on the replica: refused, pointing at `control migrate`.
    let (code, stderr) = env.fails(&["control", "init"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("control migrate"), "{stderr}");
    assert_eq!(schema_version(&pg), "2", "a refused init migrated");

    // Another control's replica: refused, nothing changed.
    let mut stranger = Env::new();
    stranger.init_control();
    stranger.set_env("LEASEHOLD_STORE_URL", &pg.url());
    let (code, stderr) = stranger.fails(&["control", "migrate"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert!(stderr.contains(&control), "{stderr}");
    assert_eq!(schema_version(&pg), "2", "a refused migrate migrated");

    // A machine without a replica's data directory: a usage error, nothing changed.
    let mut bare = Env::new();
    bare.set_env("LEASEHOLD_STORE_URL", &pg.url());
    let (code, stderr) = bare.fails(&["control", "migrate"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("holds no control identity"), "{stderr}");
    assert_eq!(schema_version(&pg), "2");

    let stdout = env.ok(&["control", "migrate"]);
    assert!(
        stdout.contains(&format!("schema 2 \u{2192} {CURRENT}")),
        "{stdout}"
    );
    assert_eq!(schema_version(&pg), CURRENT.to_string());
    let stdout = env.ok(&["control", "migrate"]);
    assert!(
        stdout.contains(&format!("already at schema {CURRENT}")),
        "{stdout}"
    );
    let again = env.json(&["control", "migrate"]);
    assert_eq!(again["from"], CURRENT, "{again}");
    assert_eq!(again["applied"], 0, "{again}");
    assert_eq!(
        pg.psql("SELECT id FROM members").unwrap(),
        vec![member.id.to_string()],
        "the records are kept"
    );

    let replica = env.serve();
    assert!(replica.stop().success());

    // A database migrated by a newer release: this one neither serves nor migrates it.
    pg.psql(&format!(
        "INSERT INTO leasehold_schema (version) VALUES ({})",
        CURRENT + 1
    ))
    .unwrap();
    for command in ["serve", "migrate"] {
        let (code, stderr) = env.fails(&["control", command]);
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains(&format!(
                "schema is at version {}, newer than this control knows ({CURRENT}): \
                 upgrade this replica",
                CURRENT + 1
            )),
            "{stderr}"
        );
    }
}
