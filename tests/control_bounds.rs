//! Bounds on what the control keeps and hands out, against the InfluxDB v2 test server:
//! TTL limits, the per-member live-lease cap (pipelined creates included), the 5-minute
//! default lifetime, a credential never outliving a failed store write, paged lease
//! lists whose every answer is small, and the pruning of ended leases' records.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::setup::{InProcessControl, start_in_process};
use common::{Env, time, wait_until};
use leasehold_channel::home::Home;
use leasehold_channel::{PublicIdentity, Secret};
use leasehold_control::Control;
use leasehold_control::datadir::{DataDir, Settings};
use leasehold_control::server::Limits;
use leasehold_control::store::{
    LeaseFilter, RedbStore, Store, StoreError, StoreResult, StoredLease, StoredTicket,
};
use leasehold_protocol::client::{Client, ClientError};
use leasehold_protocol::{
    AddonConfig, ErrorCode, LEASE_PAGE_MAX, LeaseRecord, LeaseStatus, MemberRecord, PolicyRecord,
    PolicySpec, Reply, Request, Timestamp,
};
use leasehold_testkit::v2server::V2Server;
use tokio_util::sync::CancellationToken;

/// A control running in this process, its admin client and home.
struct InProcess {
    _dir: tempfile::TempDir,
    home: Home,
    running: leasehold_control::Running,
    shutdown: CancellationToken,
    admin: Client,
}

impl InProcess {
    async fn start(v2: &V2Server, max_live_leases: Option<u32>) -> Self {
        let InProcessControl {
            dir,
            home,
            addr,
            running,
            shutdown,
        } = start_in_process(Limits::default()).await;
        let identity = home.load_identity("admin").unwrap();
        let mut admin = Client::connect_to(&[addr.to_string()], &running.identity, &identity)
            .await
            .unwrap();
        admin
            .call(Request::AddonConfigure {
                addon: v2_addon(v2, Some(900), max_live_leases),
                skip_verify: false,
            })
            .await
            .unwrap();
        Self {
            _dir: dir,
            home,
            running,
            shutdown,
            admin,
        }
    }

    /// The first page (up to 100) of the leases with `status` held by `member`.
    async fn first_lease_page(
        &mut self,
        status: Option<LeaseStatus>,
        member: Option<String>,
    ) -> (Vec<LeaseRecord>, Option<String>) {
        let reply = self
            .admin
            .call(Request::LeasePage {
                status,
                member,
                after: None,
                limit: 100,
            })
            .await
            .unwrap();
        let Reply::LeasePage { leases, next } = reply else {
            panic!("not a page");
        };
        (leases, next)
    }

    async fn stop(self) {
        drop(self.admin);
        self.shutdown.cancel();
        self.running.wait().await;
    }
}

/// A policy for members with `role=admin`: write every bucket, with these limits.
fn admin_write_policy(max_ttl_secs: Option<u64>, max_live_leases: Option<u32>) -> PolicySpec {
    PolicySpec {
        matches: [("role".to_owned(), "admin".to_owned())].into(),
        grant: leasehold_protocol::Grant::Permissions(
            serde_json::json!([{"action":"write","resource":{"type":"buckets"}}]),
        ),
        default_ttl_secs: None,
        max_ttl_secs,
        max_live_leases,
    }
}

fn v2_addon(v2: &V2Server, max_ttl: Option<u64>, max_live_leases: Option<u32>) -> AddonConfig {
    AddonConfig::Influxdb {
        endpoint_url: v2.url(),
        token: Secret::new(v2.admin_token()),
        org_id: v2.org_id().to_owned(),
        permissions: serde_json::json!([{"action":"write","resource":{"type":"buckets"}}]),
        default_ttl_secs: None,
        max_ttl_secs: max_ttl,
        max_live_leases,
        ca_pem: None,
    }
}

fn refusal(result: Result<Reply, ClientError>) -> leasehold_protocol::WireError {
    match result {
        Err(ClientError::Remote(error)) => error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Pipelines `n` lease creates on one channel; returns the leases and the refusals.
async fn pipelined_creates(
    client: &mut Client,
    n: usize,
) -> (Vec<LeaseRecord>, Vec<leasehold_protocol::WireError>) {
    let mut ids = HashSet::new();
    for _ in 0..n {
        ids.insert(
            client
                .submit(Request::LeaseCreate { ttl_secs: None })
                .await
                .unwrap(),
        );
    }
    let (mut leases, mut refused) = (Vec::new(), Vec::new());
    while !ids.is_empty() {
        let (id, answer) = client.next_answer().await.unwrap();
        assert!(ids.remove(&id), "answer {id} unexpected or repeated");
        match answer {
            Ok(Reply::Lease(lease)) => leases.push(lease),
            other => refused.push(refusal(other)),
        }
    }
    (leases, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_above_the_limit_are_refused_and_nothing_is_created() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut control = InProcess::start(&v2, None).await;
    // The largest TTL a client can send: refused before InfluxDB is asked, no panic.
    let error = refusal(
        control
            .admin
            .call(Request::LeaseCreate {
                ttl_secs: Some(u64::MAX),
            })
            .await,
    );
    assert_eq!(error.code, ErrorCode::BadRequest);
    assert!(error.message.contains("900s"), "{}", error.message);
    assert_eq!(v2.authorization_count(), 0);
    // Add-on and policy lifetimes above the limit are refused with the limit.
    let mut too_long_default = v2_addon(&v2, None, None);
    if let AddonConfig::Influxdb {
        default_ttl_secs, ..
    } = &mut too_long_default
    {
        *default_ttl_secs = Some(31 * 86_400);
    }
    for addon in [v2_addon(&v2, Some(u64::MAX), None), too_long_default] {
        let error = refusal(
            control
                .admin
                .call(Request::AddonConfigure {
                    addon,
                    skip_verify: false,
                })
                .await,
        );
        assert_eq!(error.code, ErrorCode::BadRequest);
        assert!(error.message.contains("2592000s"), "{}", error.message);
    }
    let error = refusal(
        control
            .admin
            .call(Request::PolicySet {
                policy: admin_write_policy(Some(u64::MAX), None),
            })
            .await,
    );
    assert!(error.message.contains("2592000s"), "{}", error.message);
    // The control is unharmed and the earlier settings stand.
    let Reply::Lease(lease) = control
        .admin
        .call(Request::LeaseCreate {
            ttl_secs: Some(900),
        })
        .await
        .unwrap()
    else {
        panic!("not a lease");
    };
    assert_eq!(lease.expires_at.0 - lease.created_at.0, 900);
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_live_leases_are_capped_even_when_pipelined() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut control = InProcess::start(&v2, None).await;

    // The default cap is 8: of 200 creates sent at once, 8 are issued.
    let (leases, refused) = pipelined_creates(&mut control.admin, 200).await;
    assert_eq!(leases.len(), 8);
    assert_eq!(refused.len(), 192);
    for error in &refused {
        assert_eq!(error.code, ErrorCode::Conflict);
        assert!(
            error.message.contains("8 live leases"),
            "a clear message: {}",
            error.message
        );
    }
    assert_eq!(
        v2.authorization_count(),
        8,
        "refused creates created nothing"
    );

    // Revoking one frees a place.
    control
        .admin
        .call(Request::LeaseRevoke {
            id: leases[0].id.clone(),
        })
        .await
        .unwrap();
    let (more, refused) = pipelined_creates(&mut control.admin, 3).await;
    assert_eq!((more.len(), refused.len()), (1, 2));

    // A policy may set its own cap.
    control
        .admin
        .call(Request::PolicySet {
            policy: admin_write_policy(None, Some(11)),
        })
        .await
        .unwrap();
    let (more, refused) = pipelined_creates(&mut control.admin, 6).await;
    assert_eq!((more.len(), refused.len()), (3, 3));
    assert!(refused[0].message.contains("11 live leases"));
    assert_eq!(v2.authorization_count(), 11);

    // And the add-on's cap applies where no policy says otherwise.
    control
        .admin
        .call(Request::PolicyDelete {
            id: "role=admin".into(),
        })
        .await
        .unwrap();
    control
        .admin
        .call(Request::AddonConfigure {
            addon: v2_addon(&v2, Some(900), Some(12)),
            skip_verify: false,
        })
        .await
        .unwrap();
    let (more, refused) = pipelined_creates(&mut control.admin, 3).await;
    assert_eq!((more.len(), refused.len()), (1, 2));
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_leases_list_in_small_pages() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut control = InProcess::start(&v2, Some(2000)).await;
    let mut issued = Vec::new();
    // In windows, so that neither side's buffers fill with unread answers.
    for _ in 0..20 {
        let (leases, refused) = pipelined_creates(&mut control.admin, 50).await;
        assert!(refused.is_empty(), "{refused:?}");
        issued.extend(leases.into_iter().map(|l| l.id));
    }
    assert_eq!(issued.len(), 1000);
    // Answers come as leases are issued; ids order by issue time.
    issued.sort();
    for id in &issued[..10] {
        control
            .admin
            .call(Request::LeaseRevoke { id: id.clone() })
            .await
            .unwrap();
    }

    // Walk every page, asking for more than a page holds: each answer is capped.
    let mut listed = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let reply = control
            .admin
            .call(Request::LeasePage {
                status: None,
                member: None,
                after: after.take(),
                limit: 1000,
            })
            .await
            .unwrap();
        let size = serde_json::to_vec(&reply).unwrap().len();
        assert!(size < 48 * 1024, "a page of {size} bytes");
        let Reply::LeasePage { leases, next } = reply else {
            panic!("not a page");
        };
        assert!(leases.len() <= LEASE_PAGE_MAX as usize);
        pages += 1;
        listed.extend(leases.into_iter().map(|l| l.id));
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, issued, "every lease once, oldest first");
    assert!(pages >= 10);

    // Filters: by status, and by member.
    let (leases, next) = control
        .first_lease_page(Some(LeaseStatus::Revoked), None)
        .await;
    assert_eq!(leases.len(), 10);
    assert!(next.is_none());
    let stranger = leasehold_channel::Identity::generate().public();
    let (leases, _) = control
        .first_lease_page(None, Some(stranger.to_string()))
        .await;
    assert!(leases.is_empty());

    // The command line pages for the user: --limit above a page, and filters.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(common::bin())
            .args(["--output", "json", "lease", "list"])
            .args(args)
            .env("LEASEHOLD_HOME", control._dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    };
    let all = cli(&[]);
    assert_eq!(all.len(), 1000);
    let some = cli(&["--limit", "250"]);
    assert_eq!(some.len(), 250);
    assert_eq!(some[249]["id"], issued[249].as_str());
    let active = cli(&["--status", "active", "--limit", "995"]);
    assert_eq!(active.len(), 990);
    assert!(active.iter().all(|l| l["status"] == "active"));
    let admin_id = control.home.load_identity("admin").unwrap().public();
    let mine = cli(&["--status", "revoked", "--member", &admin_id.to_string()]);
    assert_eq!(mine.len(), 10);
    control.stop().await;
}

/// A store that fails to record issued leases while `fail` is set, and calls
/// `on_failure` when it does (to break InfluxDB at that very moment).
#[derive(Clone)]
struct FailingStore {
    inner: RedbStore,
    fail: Arc<AtomicBool>,
    on_failure: Arc<dyn Fn() + Send + Sync>,
}

impl Store for FailingStore {
    async fn put_member(&self, member: MemberRecord) -> StoreResult<()> {
        self.inner.put_member(member).await
    }
    async fn member(&self, id: PublicIdentity) -> StoreResult<Option<MemberRecord>> {
        self.inner.member(id).await
    }
    async fn members(&self) -> StoreResult<Vec<MemberRecord>> {
        self.inner.members().await
    }
    async fn delete_member(&self, id: PublicIdentity) -> StoreResult<Option<MemberRecord>> {
        self.inner.delete_member(id).await
    }
    async fn put_ticket(&self, hash: String, ticket: StoredTicket) -> StoreResult<()> {
        self.inner.put_ticket(hash, ticket).await
    }
    async fn redeem_ticket(
        &self,
        hash: String,
        now: Timestamp,
        member: PublicIdentity,
        name: String,
    ) -> StoreResult<Result<MemberRecord, leasehold_control::store::RedeemError>> {
        self.inner.redeem_ticket(hash, now, member, name).await
    }
    async fn put_policy(&self, policy: PolicyRecord) -> StoreResult<()> {
        self.inner.put_policy(policy).await
    }
    async fn policies(&self) -> StoreResult<Vec<PolicyRecord>> {
        self.inner.policies().await
    }
    async fn delete_policy(&self, id: String) -> StoreResult<bool> {
        self.inner.delete_policy(id).await
    }
    async fn put_lease(&self, lease: StoredLease) -> StoreResult<()> {
        if lease.issued && !lease.removed && self.fail.load(Ordering::SeqCst) {
            (self.on_failure)();
            return Err(StoreError::new("injected failure"));
        }
        self.inner.put_lease(lease).await
    }
    async fn reserve_lease(
        &self,
        intent: StoredLease,
        now: Timestamp,
        max: u32,
    ) -> StoreResult<Result<(), leasehold_control::store::AtCap>> {
        self.inner.reserve_lease(intent, now, max).await
    }
    async fn release_lease(&self, intent: StoredLease) -> StoreResult<()> {
        self.inner.release_lease(intent).await
    }
    async fn lease(&self, id: String) -> StoreResult<Option<StoredLease>> {
        self.inner.lease(id).await
    }
    async fn leases(&self) -> StoreResult<Vec<StoredLease>> {
        self.inner.leases().await
    }
    async fn lease_page(
        &self,
        filter: LeaseFilter,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Vec<StoredLease>> {
        self.inner.lease_page(filter, after, limit).await
    }
    async fn prune_leases(&self, ended_by: Timestamp) -> StoreResult<usize> {
        self.inner.prune_leases(ended_by).await
    }
    async fn deny_member(
        &self,
        id: PublicIdentity,
        now: Timestamp,
    ) -> StoreResult<Option<MemberRecord>> {
        self.inner.deny_member(id, now).await
    }
    async fn denied(&self) -> StoreResult<Vec<leasehold_protocol::DeniedIdentity>> {
        self.inner.denied().await
    }
    async fn allow(&self, id: PublicIdentity) -> StoreResult<bool> {
        self.inner.allow(id).await
    }
    async fn tickets(&self) -> StoreResult<Vec<(String, StoredTicket)>> {
        self.inner.tickets().await
    }
    async fn delete_ticket(&self, hash: String) -> StoreResult<bool> {
        self.inner.delete_ticket(hash).await
    }
    async fn prune_tickets(&self, now: Timestamp) -> StoreResult<usize> {
        self.inner.prune_tickets(now).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_is_recorded_or_removed_whatever_fails_in_between() {
    let v2 = Arc::new(V2Server::start_default().await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("control"));
    data.init(&Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: vec![],
    })
    .unwrap();
    let inner = RedbStore::open(&data.store_path()).unwrap();
    let admin = leasehold_channel::Identity::generate().public();
    inner
        .put_member(MemberRecord {
            id: admin,
            name: "admin".into(),
            attributes: [("role".to_owned(), "admin".to_owned())].into(),
            enrolled_at: Timestamp::now(),
        })
        .await
        .unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let break_influxdb = Arc::new(AtomicBool::new(false));
    let store = FailingStore {
        inner: inner.clone(),
        fail: fail.clone(),
        on_failure: {
            let (v2, break_influxdb) = (v2.clone(), break_influxdb.clone());
            Arc::new(move || {
                if break_influxdb.load(Ordering::SeqCst) {
                    v2.fail_for(Duration::from_secs(3));
                }
            })
        },
    };
    let (identity, _) = data.load().unwrap();
    let shutdown = CancellationToken::new();
    let control = Control::start(identity, store, data, vec![], shutdown.clone())
        .await
        .unwrap();
    control
        .handle(
            admin,
            Request::AddonConfigure {
                addon: v2_addon(&v2, Some(900), None),
                skip_verify: false,
            },
        )
        .await
        .unwrap();

    // The store fails after InfluxDB created the credential: it is removed before
    // the request returns, and the member's place under the cap is given back.
    fail.store(true, Ordering::SeqCst);
    for _ in 0..10 {
        let error = control
            .handle(admin, Request::LeaseCreate { ttl_secs: None })
            .await
            .unwrap_err();
        assert_eq!(error.to_wire().code, ErrorCode::Internal);
        assert_eq!(
            v2.authorization_count(),
            0,
            "the unrecorded credential is gone"
        );
    }
    fail.store(false, Ordering::SeqCst);
    control
        .handle(admin, Request::LeaseCreate { ttl_secs: None })
        .await
        .expect("failed creates do not count against the cap");
    assert_eq!(v2.authorization_count(), 1);

    // The store fails and InfluxDB is unreachable for the clean-up too: the intent
    // written before the credential was created gets it removed at expiry.
    fail.store(true, Ordering::SeqCst);
    break_influxdb.store(true, Ordering::SeqCst);
    control
        .handle(admin, Request::LeaseCreate { ttl_secs: Some(4) })
        .await
        .unwrap_err();
    fail.store(false, Ordering::SeqCst);
    assert_eq!(
        v2.authorization_count(),
        2,
        "the clean-up could not reach InfluxDB"
    );
    let intent = inner
        .leases()
        .await
        .unwrap()
        .into_iter()
        .find(|l| !l.issued && l.expires_at.0 - l.created_at.0 == 4)
        .expect("the intent record is kept");
    assert!(!intent.removed);
    wait_until(
        Duration::from_secs(20),
        "the intent's credential to go",
        || v2.authorization_count() == 1,
    );
    // The removal is recorded just after InfluxDB answered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let recorded = inner.lease(intent.id.clone()).await.unwrap().unwrap();
        assert!(!recorded.issued);
        if recorded.removed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "removal never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An intent is no lease anyone holds: it is not listed.
    let Reply::LeasePage { leases, .. } = control
        .handle(
            admin,
            Request::LeasePage {
                status: None,
                member: None,
                after: None,
                limit: 100,
            },
        )
        .await
        .unwrap()
    else {
        panic!("not a page");
    };
    assert_eq!(leases.len(), 1);
    shutdown.cancel();
    control.tasks().close();
    control.tasks().wait().await;
}

#[test]
fn the_command_line_refuses_ttls_above_the_limit_with_exit_2() {
    let env = Env::new();
    env.init_control();
    for args in [
        &["lease", "create", "--ttl", "18446744073709551615"][..],
        &["lease", "create", "--ttl", "31d"],
        &[
            "addon",
            "configure",
            "influxdb-v1",
            "--endpoint-url",
            "http://127.0.0.1:1",
            "--username",
            "admin",
            "--password",
            "pw",
            "--privileges",
            "WRITE ON db",
            "--max-ttl",
            "18446744073709551615",
        ],
        &[
            "policy",
            "set",
            "--match",
            "a=b",
            "--privileges",
            "WRITE ON db",
            "--default-ttl",
            "2592001",
        ],
    ] {
        let (code, stderr) = env.fails(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("limit of 2592000s"), "{args:?}: {stderr}");
    }
    let (code, stderr) = env.fails(&[
        "policy",
        "set",
        "--match",
        "a=b",
        "--privileges",
        "WRITE ON db",
        "--max-live-leases",
        "0",
    ]);
    assert_eq!(code, 2, "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_lifetime_is_five_minutes_and_the_cap_is_settable_on_the_addon() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.init_control();
    let control = env.serve();
    env.configure_v2(&v2, &["--max-ttl", "900", "--max-live-leases", "2"]);
    env.enrolled_identity("app", &[]);
    let lease = env.json(&["lease", "create", "--identity", "app"]);
    let lifetime = time(&lease["expires_at"])
        .duration_since(time(&lease["created_at"]))
        .unwrap();
    assert_eq!(lifetime, Duration::from_secs(300));
    env.json(&["lease", "create", "--identity", "app"]);
    let (code, stderr) = env.fails(&["lease", "create", "--identity", "app"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("you already hold 2 live leases, the most allowed"),
        "{stderr}"
    );
    assert_eq!(v2.authorization_count(), 2);
    // The count is rebuilt from the store after a crash.
    control.kill9();
    let _control = env.serve();
    let (_, stderr) = env.fails(&["lease", "create", "--identity", "app"]);
    assert!(stderr.contains("2 live leases"), "{stderr}");
    assert_eq!(v2.authorization_count(), 2);
    // A member lists its own leases only, and may not name another member.
    let admin = env.json(&["identity", "show", "admin"]);
    let (code, stderr) = env.fails(&[
        "lease",
        "list",
        "--identity",
        "app",
        "--member",
        admin["id"].as_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("only an admin"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ended_leases_are_pruned_after_the_retention() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.init_control();
    env.set_env("LEASEHOLD_RETENTION", "2s");
    env.set_env("LEASEHOLD_PRUNE_INTERVAL", "1s");
    let control = env.serve();
    env.configure_v2(&v2, &[]);
    let expiring = env.json(&["lease", "create", "--ttl", "2s"]);
    let revoked = env.json(&["lease", "create"]);
    env.json(&["lease", "revoke", revoked["id"].as_str().unwrap()]);
    let kept = env.json(&["lease", "create"]);
    let ids = || -> Vec<String> {
        env.json(&["lease", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids().len(), 3);
    wait_until(Duration::from_secs(30), "ended leases to be pruned", || {
        ids() == [kept["id"].as_str().unwrap()]
    });
    let (_, stderr) = env.fails(&["lease", "show", expiring["id"].as_str().unwrap()]);
    assert!(stderr.contains("not found"), "{stderr}");
    assert!(control.log().contains("pruned the records of ended leases"));
    assert_eq!(v2.authorization_count(), 1);
}
