//! The PostgreSQL harness itself: a server of the test's own that a real client reaches
//! with the URL it gives (password auth over TCP), that comes back with its data after
//! a clean stop and after a crash, and that is gone once dropped.

use std::net::TcpStream;

use leasehold_testkit::postgres::Postgres;

/// Connects to `url` and keeps the connection driven in the background.
async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to the harness's server: {e}"));
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn a_server_of_its_own_answers_queries_and_survives_restarts() {
    let mut pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .unwrap()
        .expect("PostgreSQL (Debian package postgresql) is required");
    let url = pg.url();
    let port = pg.port();
    assert!(url.starts_with("postgres://leasehold:"), "{url}");
    assert!(
        pg.socket_dir().join(format!(".s.PGSQL.{port}")).exists(),
        "the Unix socket is in the temporary directory"
    );

    let client = connect(&url).await;
    let row = client.query_one("SELECT 1 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    let version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .unwrap()
        .get(0);
    println!("PostgreSQL {version} on 127.0.0.1:{port}");
    client
        .batch_execute("CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept VALUES (7)")
        .await
        .unwrap();
    drop(client);

    // A wrong password is refused: TCP clients authenticate.
    let wrong = url.replace(pg.password(), "not-the-password");
    assert!(
        tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
            .await
            .is_err()
    );

    // A clean stop, then a crash: the data is there after each restart.
    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop().unwrap();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        pg.start_again().unwrap();
        pg
    })
    .await
    .unwrap();
    let client = connect(&url).await;
    let kept = client.query_one("SELECT id FROM kept", &[]).await.unwrap();
    assert_eq!(kept.get::<_, i32>(0), 7);
    drop(client);
    let pg = tokio::task::spawn_blocking(move || {
        pg.kill().unwrap();
        pg.start_again().unwrap();
        pg
    })
    .await
    .unwrap();
    let client = connect(&url).await;
    assert_eq!(
        client
            .query_one("SELECT count(*) FROM kept", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );

    // A database per test, on the same server.
    let other = pg.create_database("another").unwrap();
    let other = connect(&other).await;
    other.batch_execute("SELECT 1").await.unwrap();
    drop((client, other));

    let socket = pg.socket_dir().join(format!(".s.PGSQL.{port}"));
    drop(pg);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server stops when the harness is dropped"
    );
    assert!(!socket.exists(), "the temporary directory is removed");
}

#[tokio::test]
async fn a_server_with_tls_serves_the_given_certificate_and_keeps_it_across_restarts() {
    use std::os::unix::fs::PermissionsExt;

    let ca = leasehold_testkit::tls::TestCa::new().unwrap();
    let tls = (&ca).into();
    let mut pg = tokio::task::spawn_blocking(move || Postgres::start_tls(&tls))
        .await
        .unwrap()
        .expect("PostgreSQL (Debian package postgresql) is required");
    // The harness's client has no TLS: `ssl` is a setting it can read all the same.
    let ssl = async |url: &str| -> String {
        let url = format!("{url}?sslmode=disable");
        connect(&url)
            .await
            .query_one("SHOW ssl", &[])
            .await
            .unwrap()
            .get(0)
    };
    assert_eq!(ssl(&pg.url()).await, "on", "{}", pg.log());
    let cert: String = connect(&format!("{}?sslmode=disable", pg.url()))
        .await
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0);
    let served = std::fs::read_to_string(&cert).unwrap();
    assert_eq!(served, ca.server_cert_pem);
    let key = std::path::Path::new(&cert).with_file_name("server.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "PostgreSQL refuses a key others can read");

    pg = tokio::task::spawn_blocking(move || {
        pg.stop().unwrap();
        pg.start_again().unwrap();
        pg
    })
    .await
    .unwrap();
    assert_eq!(ssl(&pg.url()).await, "on", "still on after a restart");
}
