//! The control highly available on a shared PostgreSQL (a server of the test's own),
//! under load, against a real `influxd` (the 1.x add-on: a lease is an InfluxDB user):
//!
//! - Three replicas killed (`kill -9`) one at a time, round after round, while twenty
//!   proxies on short leases write through them: every write answered 204, every
//!   point stored, every lease user created once and dropped exactly once as InfluxDB
//!   saw it (its query log, not the control's word), none left at the end.
//! - PostgreSQL stopped and started again while proxies write: while it is down the
//!   replicas say they are not ready and refuse leases ("store unavailable"), creating
//!   no credential they could not record; once it is back they are ready again and
//!   issue again, no lease record is lost, the proxies' writes never fail on the
//!   leases they hold, and nothing is left in InfluxDB.
//!
//! What the tests print (writes, kills, leases, drops, CPU) is for the reader; nothing
//! is asserted about speed. InfluxDB 1.x's cost per lease sizes the chaos test: see
//! `LEASE_TTL`.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::replicas::{copy_dir, readyz, replica_restarted_on_failure};
use common::setup::eventually;
use common::{EVENT_DEADLINE, Env, Process, ProxyProcess};
use leasehold_control::backend::parse_lease_user;
use leasehold_testkit::influxd::Influxd;
use leasehold_testkit::postgres::Postgres;

/// How long replicas are killed one after another (at least).
const CHAOS: Duration = Duration::from_secs(60);
/// How long a killed replica stays down before it is started again.
const DOWN: Duration = Duration::from_secs(2);
/// How long every replica is up between two kills.
const UP: Duration = Duration::from_secs(2);
/// How many proxies write during the chaos.
const PROXIES: usize = 20;
/// The proxies' leases in the chaos test. The issue asks for 5 s; at twenty proxies
/// that is ~7.4 leases a second, each a `CREATE USER` that InfluxDB 1.x hashes (bcrypt)
/// while holding its global meta lock (150-185 ms here), so the lock alone would be
/// busy more than the whole time on this 2-core machine, issuance would fall behind
/// the leases' 2 s renewal margin, and every write would get 503. 15 s leases keep the
/// fleet and the kills, at ~2.3 leases a second and a 6 s margin.
const LEASE_TTL: &str = "15s";
/// How often each proxy is written to.
const WRITE_EVERY: Duration = Duration::from_millis(500);
/// The grant of every lease.
const PRIVILEGES: &[&str] = &[r#"WRITE ON "telemetry""#];

/// Held by each test for its whole run: the chaos test needs the machine's CPU (a
/// `CREATE USER` costs InfluxDB a bcrypt hash under its global lock, several a second
/// here), and the other test would compete for it.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn postgres() -> Postgres {
    tokio::task::spawn_blocking(Postgres::start)
        .await
        .unwrap()
        .expect("PostgreSQL (Debian package postgresql) is required: scripts/test.sh installs it")
}

async fn influxd() -> Influxd {
    Influxd::start_logging_queries()
        .await
        .expect("a real influxd (Debian package influxdb) is required")
}

/// CPU seconds (user + system) process `pid` has used so far; 0 once it is gone.
fn cpu_secs(pid: u32) -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    });
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): state is the first,
    // utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks_used: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks_used / ticks
}

/// A control of several replicas on one PostgreSQL with the v1 add-on configured,
/// each replica restartable on its advertised address.
struct Cluster {
    env: Env,
    addrs: Vec<String>,
    dirs: Vec<PathBuf>,
    replicas: Vec<Option<(Process, SocketAddr)>>,
    /// CPU seconds of the replicas killed so far.
    cpu_of_the_dead: f64,
}

impl Cluster {
    /// `n` replicas on `pg`, the add-on configured against `db`, all ready.
    async fn start(pg: &Postgres, db: &Influxd, n: usize) -> Self {
        let mut env = Env::new();
        env.set_env("LEASEHOLD_STORE_URL", &pg.url());
        let addrs: Vec<String> = std::iter::once(env.control_port)
            .chain((1..n).map(|_| common::reserve_port()))
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        env.ok(&[
            "control",
            "init",
            "--listen",
            &addrs[0],
            "--advertise",
            &addrs.join(","),
        ]);
        // The identity key provisioned to every replica: copies of the data directory.
        let dirs: Vec<PathBuf> = (0..n)
            .map(|i| {
                if i == 0 {
                    return env.data_dir();
                }
                let dir = env.dir.path().join(format!("replica-{i}"));
                copy_dir(&env.data_dir(), &dir);
                dir
            })
            .collect();
        let mut cluster = Self {
            env,
            addrs,
            dirs,
            replicas: (0..n).map(|_| None).collect(),
            cpu_of_the_dead: 0.0,
        };
        for i in 0..n {
            cluster.start_replica(i);
        }
        // Configured through one replica; the others follow it from the store.
        cluster.env.configure_v1(db, PRIVILEGES);
        cluster.wait_all(200, "every replica ready").await;
        cluster
    }

    fn start_replica(&mut self, i: usize) {
        let started = tokio::task::block_in_place(|| {
            replica_restarted_on_failure(&self.env, &self.dirs[i], &self.addrs[i])
        });
        self.replicas[i] = Some(started);
    }

    fn kill(&mut self, i: usize) {
        let (process, _) = self.replicas[i].take().expect("running");
        self.cpu_of_the_dead += cpu_secs(process.pid());
        process.kill9();
    }

    fn admins(&self) -> Vec<SocketAddr> {
        self.replicas.iter().flatten().map(|(_, a)| *a).collect()
    }

    /// Waits until every running replica's `/readyz` answers `status`.
    async fn wait_all(&self, status: u16, what: &str) {
        let admins = self.admins();
        eventually(EVENT_DEADLINE, what, async || {
            for admin in &admins {
                if readyz(*admin).await != status {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// CPU seconds used by the replicas, the dead ones included.
    fn cpu(&self) -> f64 {
        self.cpu_of_the_dead
            + self
                .replicas
                .iter()
                .flatten()
                .map(|(p, _)| cpu_secs(p.pid()))
                .sum::<f64>()
    }

    /// Everything the replicas logged, the dead ones included.
    fn logs(&self) -> String {
        std::fs::read_dir(self.env.home())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("replica-"))
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Identities `names`, each enrolled with a ticket of its own (a few at a time).
fn enroll(env: &Env, names: &[String]) {
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            for chunk in names.chunks(names.len().div_ceil(4)) {
                scope.spawn(move || {
                    for name in chunk {
                        env.enrolled_identity(name, &[]);
                    }
                });
            }
        })
    });
}

/// A proxy per identity, on `ttl` leases, each holding one. Started one after
/// another, each once the previous one holds its lease, as a rollout would: twenty
/// first leases at once would have InfluxDB hash twenty passwords under its lock.
async fn proxies(env: &Env, names: &[String], ttl: &str) -> Vec<ProxyProcess> {
    let mut proxies = Vec::new();
    for name in names {
        let proxy = tokio::task::block_in_place(|| env.proxy(name, &["--ttl", ttl]));
        proxy.wait_ready().await;
        proxies.push(proxy);
    }
    proxies
}

/// Writes through every proxy, each at its own steady pace, until stopped; every
/// answer that is not 204 is kept to be reported.
struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, Vec<String>)>>,
}

impl Writers {
    fn start(proxies: &[ProxyProcess]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        // Distinct timestamps per proxy (each its own series): no point overwrites
        // another, so the points stored can be counted against the writes answered.
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            * 1_000_000_000;
        let tasks = proxies
            .iter()
            .enumerate()
            .map(|(i, proxy)| {
                let url = format!("{}/write?db=telemetry&precision=ns", proxy.url());
                let (stop, client) = (stop.clone(), client.clone());
                tokio::spawn(async move {
                    let (mut sent, mut failed) = (0u64, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let answer = client
                            .post(&url)
                            .body(format!("m,proxy={i} v=1 {}\n", base + sent))
                            .send()
                            .await;
                        match answer {
                            Ok(answer) if answer.status() == 204 => {}
                            Ok(answer) => failed.push(format!(
                                "proxy {i} write {sent}: {} {}",
                                answer.status(),
                                answer.text().await.unwrap_or_default()
                            )),
                            Err(error) => failed.push(format!("proxy {i} write {sent}: {error}")),
                        }
                        sent += 1;
                        tokio::time::sleep(WRITE_EVERY).await;
                    }
                    (sent, failed)
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the writers: how many writes were sent, and the failed ones.
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut sent, mut failed) = (0, Vec::new());
        for task in self.tasks {
            let (n, f) = task.await.unwrap();
            sent += n;
            failed.extend(f);
        }
        (sent, failed)
    }
}

/// Stops every proxy (each gives its leases back) and waits for them to exit.
fn stop_all(mut proxies: Vec<ProxyProcess>) {
    for proxy in &mut proxies {
        proxy.process().signal("TERM");
    }
    for mut proxy in proxies {
        let exited = proxy.process().wait_exit(EVENT_DEADLINE);
        assert!(
            exited.is_some_and(|s| s.success()),
            "a proxy did not stop cleanly ({exited:?}):\n{}",
            proxy.log()
        );
    }
}

/// The lease users InfluxDB has now.
async fn lease_users(db: &Influxd) -> Vec<String> {
    db.show_users()
        .await
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| parse_lease_user(name).is_some())
        .collect()
}

/// Per lease user, how many times InfluxDB executed `CREATE USER` and `DROP USER`
/// for it (from its query log).
fn user_statements(db: &Influxd) -> BTreeMap<String, (usize, usize)> {
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for statement in db.executed() {
        let words: Vec<&str> = statement.split_whitespace().collect();
        let (verb, name) = match words.as_slice() {
            ["CREATE", "USER", name, ..] => (0, name),
            ["DROP", "USER", name, ..] => (1, name),
            _ => continue,
        };
        let name = name.trim_matches('"');
        if parse_lease_user(name).is_none() {
            continue;
        }
        let entry = counts.entry(name.to_owned()).or_default();
        if verb == 0 {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    counts
}

/// Waits until no lease user is left in InfluxDB and the store owes no removal, then
/// checks what InfluxDB executed: every lease user was created for a lease the store
/// records, once, and dropped exactly once. Returns (users, drops).
async fn assert_each_user_created_recorded_and_dropped_once(
    db: &Influxd,
    pg: &Postgres,
    replica_logs: impl Fn() -> String,
) -> (usize, usize) {
    eventually(
        EVENT_DEADLINE,
        "no lease user left in InfluxDB",
        async || lease_users(db).await.is_empty(),
    )
    .await;
    // Every removal recorded, including those a killed replica left to a claim that
    // had to lapse first: after this no removal can still be on its way to InfluxDB.
    eventually(EVENT_DEADLINE, "the store to owe no removal", async || {
        pg.psql("SELECT count(*) FROM leases WHERE NOT removed")
            .unwrap()
            .first()
            .map(String::as_str)
            == Some("0")
    })
    .await;
    let recorded: std::collections::BTreeSet<String> = pg
        .psql("SELECT id FROM leases")
        .unwrap()
        .into_iter()
        .collect();
    let statements = user_statements(db);
    assert!(
        !statements.is_empty(),
        "InfluxDB's query log shows no lease user"
    );
    let mut wrong = Vec::new();
    for (user, (created, dropped)) in &statements {
        let (lease, _) = parse_lease_user(user).unwrap();
        if !recorded.contains(lease) {
            wrong.push(format!("{user}: created but its lease is not in the store"));
        }
        if (*created, *dropped) != (1, 1) {
            wrong.push(format!(
                "{user}: created {created} times, dropped {dropped} times"
            ));
        }
    }
    if !wrong.is_empty() {
        let logs = replica_logs();
        let about: Vec<&str> = logs
            .lines()
            .filter(|line| {
                wrong.iter().any(|w| {
                    let user = w.split(':').next().unwrap();
                    let (lease, _) = parse_lease_user(user).unwrap();
                    line.contains(lease)
                })
            })
            .collect();
        panic!(
            "{} of {} lease users wrong:\n{}\nwhat the replicas logged of them:\n{}",
            wrong.len(),
            statements.len(),
            wrong.join("\n"),
            about.join("\n")
        );
    }
    let drops = statements.values().map(|(_, d)| d).sum();
    (statements.len(), drops)
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_proxies_write_through_replicas_killed_one_at_a_time() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let pg = postgres().await;
    let db = influxd().await;
    let mut cluster = Cluster::start(&pg, &db, 3).await;
    let names: Vec<String> = (0..PROXIES).map(|i| format!("app-{i}")).collect();
    enroll(&cluster.env, &names);
    let proxies = proxies(&cluster.env, &names, LEASE_TTL).await;

    let writers = Writers::start(&proxies);
    let started = Instant::now();
    let mut kills = 0;
    while started.elapsed() < CHAOS {
        let i = kills % cluster.replicas.len();
        cluster.kill(i);
        kills += 1;
        tokio::time::sleep(DOWN).await;
        cluster.start_replica(i);
        cluster.wait_all(200, "the restarted replica ready").await;
        tokio::time::sleep(UP).await;
    }
    let chaos = started.elapsed();
    let (sent, failed) = writers.finish().await;
    // Printed before anything is asserted: a failure under load shows the load.
    let cpu_proxies: f64 = proxies.iter().map(|p| cpu_secs(p.pid())).sum();
    println!(
        "{kills} replica kills in {:.0} s; {sent} writes through {PROXIES} proxies; CPU s: \
         replicas {:.1}, proxies {cpu_proxies:.1}, influxd {:.1}; load average {}",
        chaos.as_secs_f64(),
        cluster.cpu(),
        cpu_secs(db.pid().unwrap()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    assert!(
        failed.is_empty(),
        "{} of {sent} writes failed:\n{}",
        failed.len(),
        failed[..failed.len().min(20)].join("\n")
    );
    assert_eq!(
        db.count("telemetry", "m").await.unwrap(),
        sent,
        "every point stored"
    );

    // The proxies give their leases back as they stop; the rest expire.
    stop_all(proxies);
    let (users, drops) =
        assert_each_user_created_recorded_and_dropped_once(&db, &pg, || cluster.logs()).await;
    println!(
        "all {sent} writes 204 and stored; {users} leases (InfluxDB users), {drops} DROP USER, \
         one each"
    );
}

/// The leases of the proxies in the PostgreSQL test: long enough that a renewal
/// meeting the outage still has more than the outage left (renewal at 54-66% of the
/// lifetime, then retries after 0.25, 0.75, 1.75, 3.75 and 7.75 s).
const RESTART_TTL: &str = "30s";
/// How long PostgreSQL stays down.
const OUTAGE: Duration = Duration::from_secs(3);
/// When PostgreSQL is stopped, counted from the proxies' first leases: just before
/// their renewals (16-20 s into a 30-second lease), so that some renewals meet the
/// outage. Nothing depends on how many do.
const OUTAGE_AT: Duration = Duration::from_secs(14);

#[tokio::test(flavor = "multi_thread")]
async fn postgresql_restarted_under_load_loses_nothing_and_orphans_nothing() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut pg = postgres().await;
    let db = influxd().await;
    let cluster = Cluster::start(&pg, &db, 2).await;
    let env = &cluster.env;
    let names: Vec<String> = (0..4).map(|i| format!("app-{i}")).collect();
    enroll(env, &[names.clone(), vec!["cli".to_owned()]].concat());
    let proxies = proxies(env, &names, RESTART_TTL).await;
    let leased = Instant::now();
    let writers = Writers::start(&proxies);
    let create = ["lease", "create", "--identity", "cli", "--ttl", "5s"];
    let before: Vec<String> = (0..3)
        .map(|_| env.json(&create)["id"].as_str().unwrap().to_owned())
        .collect();

    tokio::time::sleep(OUTAGE_AT.saturating_sub(leased.elapsed())).await;
    // A clean stop: the harness's server does not wait for its WAL on commit, so an
    // immediate one could lose the last commits the control was told were durable.
    tokio::task::block_in_place(|| pg.stop()).unwrap();
    let down = Instant::now();
    let (code, stderr) = env.fails(&create);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("store unavailable"), "{stderr}");
    cluster.wait_all(503, "every replica not ready").await;
    tokio::time::sleep(OUTAGE.saturating_sub(down.elapsed())).await;
    tokio::task::block_in_place(|| pg.start_again()).unwrap();
    let up = Instant::now();
    cluster.wait_all(200, "every replica ready again").await;
    let ready_after = up.elapsed();
    let lease = env.json(&create);
    assert_eq!(lease["status"], "active", "{lease}");
    let listed = env.json(&["lease", "list", "--identity", "cli"]);
    let listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    for id in &before {
        assert!(listed.contains(&id.as_str()), "{id} lost: {listed:?}");
    }

    // Every proxy renews its lease once more, then the writes stop.
    eventually(
        EVENT_DEADLINE,
        "every proxy to renew its lease",
        async || {
            proxies
                .iter()
                .all(|p| p.log().matches("lease installed").count() >= 2)
        },
    )
    .await;
    let (sent, failed) = writers.finish().await;
    assert!(
        failed.is_empty(),
        "{} of {sent} writes failed:\n{}",
        failed.len(),
        failed[..failed.len().min(20)].join("\n")
    );
    assert_eq!(
        db.count("telemetry", "m").await.unwrap(),
        sent,
        "every point stored"
    );
    let refused: usize = proxies
        .iter()
        .map(|p| p.log().matches("could not obtain a lease").count())
        .sum();
    stop_all(proxies);
    let (users, drops) =
        assert_each_user_created_recorded_and_dropped_once(&db, &pg, || cluster.logs()).await;
    println!(
        "PostgreSQL down {:.1} s; replicas ready {:.1} s after it was back; {sent} writes, all \
         204, all stored; {refused} lease renewals refused meanwhile; {users} leases, each \
         recorded, {drops} DROP USER, one each",
        up.duration_since(down).as_secs_f64(),
        ready_after.as_secs_f64()
    );
}
