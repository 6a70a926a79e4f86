//! TLS to a real PostgreSQL (the harness's, with `ssl = on` and a certificate from a
//! test CA), mode by mode; and a server without TLS, which `require` refuses and
//! `prefer` falls back from (and over whose Unix socket `sslmode` does not apply).

use leasehold_channel::Identity;
use leasehold_protocol::{MemberRecord, Timestamp};
use leasehold_testkit::postgres::Postgres;
use leasehold_testkit::tls::TestCa;

use super::tests::server;
use super::{PgError, PostgresStore};
use crate::store::Store;

/// Whether the store's connections are TLS, as the server sees them.
async fn over_tls(store: &PostgresStore) -> bool {
    store
        .client()
        .await
        .unwrap()
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_checks_what_libpq_checks() {
    // The certificate names the address only: "localhost" is the wrong host.
    let ca = TestCa::for_names(&["127.0.0.1"]).unwrap();
    let tls = (&ca).into();
    let pg = tokio::task::spawn_blocking(move || Postgres::start_tls(&tls))
        .await
        .unwrap()
        .expect("PostgreSQL (Debian package postgresql) is required: scripts/test.sh installs it");
    let dir = tempfile::tempdir().unwrap();
    let right = dir.path().join("ca.pem");
    std::fs::write(&right, &ca.ca_pem).unwrap();
    let wrong = dir.path().join("other-ca.pem");
    std::fs::write(&wrong, TestCa::new().unwrap().ca_pem).unwrap();
    let url = |query: &str| format!("{}?{query}", pg.url());
    let at_localhost = |query: &str| url(query).replace("@127.0.0.1:", "@localhost:");
    let identity = Identity::generate();

    // verify-full with the CA that signed it: the store works, over TLS.
    let full = format!("sslmode=verify-full&sslrootcert={}", right.display());
    let store = PostgresStore::init(&url(&full), identity.public())
        .await
        .unwrap_or_else(|e| panic!("verify-full: {e}\n{}", pg.log()));
    assert!(over_tls(&store).await);
    let member = MemberRecord {
        id: Identity::generate().public(),
        name: "app".into(),
        attributes: Default::default(),
        enrolled_at: Timestamp(1),
    };
    store.put_member(member.clone()).await.unwrap();
    assert_eq!(store.member(member.id).await.unwrap().unwrap().name, "app");
    // And the lock sessions (claims.rs) connect as the pool does.
    assert!(store.exclusive("sweep").await.unwrap().is_some());

    let refused = async |url: String| -> String {
        let error = PostgresStore::open(&url, identity.public())
            .await
            .expect_err(&url);
        assert!(matches!(error, PgError::Tls(_)), "{error:?}");
        let error = error.to_string();
        assert!(!error.contains(pg.password()), "no secret in: {error}");
        error
    };
    // Another CA: refused, saying so.
    let error = refused(url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        wrong.display()
    )))
    .await;
    assert!(
        error.contains("not signed by a CA this control trusts"),
        "{error}"
    );
    // verify-ca too; and require given a root file checks the chain (libpq's rule).
    refused(url(&format!(
        "sslmode=verify-ca&sslrootcert={}",
        wrong.display()
    )))
    .await;
    refused(url(&format!(
        "sslmode=require&sslrootcert={}",
        wrong.display()
    )))
    .await;
    // The wrong host: verify-full refuses, verify-ca (the chain only) connects.
    let error = refused(at_localhost(&full)).await;
    assert!(
        error.contains("not valid for the name \"localhost\""),
        "{error}"
    );
    let ca_only = format!("sslmode=verify-ca&sslrootcert={}", right.display());
    let store = PostgresStore::open(&at_localhost(&ca_only), identity.public())
        .await
        .unwrap();
    assert!(over_tls(&store).await);
    // require and prefer: encrypted, the certificate unchecked (no root given).
    for mode in ["require", "prefer"] {
        let store =
            PostgresStore::open(&at_localhost(&format!("sslmode={mode}")), identity.public())
                .await
                .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(over_tls(&store).await, "{mode}");
    }
    // disable: plain.
    let store = PostgresStore::open(&url("sslmode=disable"), identity.public())
        .await
        .unwrap();
    assert!(!over_tls(&store).await);
    // A root file that is not there: said before anything connects.
    let error = PostgresStore::open(
        &url("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
        identity.public(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, PgError::RootCert { .. }), "{error:?}");
    assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tls_is_refused_by_require_and_prefer_falls_back() {
    let (pg, _store, identity) = server().await;
    let error = PostgresStore::open(&format!("{}?sslmode=require", pg.url()), identity.public())
        .await
        .unwrap_err();
    assert!(matches!(error, PgError::TlsRefused), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("does not accept TLS"), "{message}");
    assert!(!message.contains(pg.password()), "{message}");
    let store = PostgresStore::open(&format!("{}?sslmode=prefer", pg.url()), identity.public())
        .await
        .unwrap();
    assert!(
        !over_tls(&store).await,
        "plain, as the server offers no TLS"
    );
    assert!(store.members().await.unwrap().is_empty());
    // Over the Unix socket, sslmode is ignored, as libpq ignores it.
    let socket = format!(
        "postgres://leasehold@/leasehold?host={}&port={}&sslmode=verify-full",
        pg.socket_dir().display(),
        pg.port()
    );
    let store = PostgresStore::open(&socket, identity.public())
        .await
        .unwrap_or_else(|e| panic!("over the socket: {e}"));
    assert!(!over_tls(&store).await);
}
