//! The real Python clients the suite drives (`tests/python/`), run with the venv that
//! `scripts/test.sh` makes.

use leasehold_testkit::v2server::V2Server;

/// The test venv's Python; the suite fails loudly without it rather than skipping.
pub fn python() -> String {
    std::env::var("LEASEHOLD_TEST_PYTHON").expect(
        "LEASEHOLD_TEST_PYTHON must name a Python with influxdb-client and influxdb installed: run ./scripts/test.sh",
    )
}

/// Runs `tests/python/SCRIPT ARGS...`, asserts it succeeded and returns its stdout.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The official v2 client writes its three points to bucket `telemetry` through the
/// sidecar at `url`, with no token of its own: all three land, each written with a
/// leased token.
pub async fn official_v2_client_writes(v2: &V2Server, url: String) {
    let org = v2.org_name().to_owned();
    tokio::task::spawn_blocking(move || {
        run_python("v2_client_write.py", &[&url, &org, "telemetry"]);
    })
    .await
    .unwrap();
    let points = v2.points();
    assert_eq!(v2.point_count("telemetry"), 3, "{points:?}");
    let lease_auths: Vec<_> = v2.authorizations().into_iter().map(|a| a.id).collect();
    assert!(
        points
            .iter()
            .all(|p| lease_auths.contains(&p.authorization_id)),
        "written with the leased token"
    );
}
