//! An application that writes to InfluxDB through the leasehold sidecar: it knows only
//! the sidecar's address and sends no token, user or password. The sidecar injects the
//! current leased credential.
//!
//! ```sh
//! # InfluxDB 1.x (v1 write API), e.g. against ./scripts/demo.sh's proxy:
//! cargo run --example write_through_proxy -- --url http://127.0.0.1:18086 --db demo
//! # InfluxDB 2.x / Cloud (v2 write API):
//! cargo run --example write_through_proxy -- --org my-org --bucket telemetry
//! ```
//! Writes `--count` points, one every `--interval`, prints each answer, and exits 1 if
//! any write was not accepted (204).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;

/// Writes line protocol to InfluxDB through the sidecar, without credentials.
#[derive(Debug, Parser)]
struct Args {
    /// The sidecar's address (`leasehold proxy --listen`).
    #[arg(long, default_value = "http://127.0.0.1:8086")]
    url: String,
    /// v1 API: the database (`POST /write?db=`).
    #[arg(long, conflicts_with_all = ["org", "bucket"], required_unless_present = "bucket")]
    db: Option<String>,
    /// v2 API: the organization name or id (`POST /api/v2/write?org=&bucket=`).
    #[arg(long, requires = "bucket")]
    org: Option<String>,
    /// v2 API: the bucket.
    #[arg(long)]
    bucket: Option<String>,
    /// How many points to write.
    #[arg(long, default_value_t = 10)]
    count: u32,
    /// Pause between two writes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = args.url.trim_end_matches('/');
    let (endpoint, query): (String, Vec<(&str, &str)>) = match (&args.db, &args.bucket) {
        (Some(db), _) => (format!("{base}/write"), vec![("db", db.as_str())]),
        (None, Some(bucket)) => {
            let mut query = vec![("bucket", bucket.as_str()), ("precision", "ns")];
            if let Some(org) = &args.org {
                query.push(("org", org.as_str()));
            }
            (format!("{base}/api/v2/write"), query)
        }
        (None, None) => unreachable!("clap requires --db or --bucket"),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    let mut failed = 0;
    for seq in 1..=args.count {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let line = format!("example,app=write_through_proxy seq={seq}i {now}\n");
        // Note what is missing: no Authorization header, no u/p parameters.
        let response = client
            .post(&endpoint)
            .query(&query)
            .body(line)
            .send()
            .await
            .with_context(|| format!("POST {endpoint}: is `leasehold proxy` running?"))?;
        let status = response.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            println!("write {seq}: {status}");
        } else {
            failed += 1;
            // The proxy answers 503 with an InfluxDB-style JSON error while it holds no
            // valid lease; InfluxDB's own errors pass through verbatim.
            let body = response.text().await.unwrap_or_default();
            println!("write {seq}: {status} {}", body.trim());
        }
        if seq < args.count {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
    }
    if failed > 0 {
        bail!("{failed} of {} writes failed", args.count);
    }
    println!("{} points written through {base}", args.count);
    Ok(())
}
