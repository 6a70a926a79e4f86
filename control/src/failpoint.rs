//! Test-only failure points, to prove crash safety with a real process.
//!
//! Only debug builds (the ones the test suite runs) honour them; in a release build
//! every function here is empty. `LEASEHOLD_FAILPOINT` names the point:
//!
//! - `abort-after-credential-created`: the control aborts (no clean-up, like
//!   `kill -9`) right after InfluxDB created a lease's credential and before the
//!   lease is recorded as issued.

/// The environment variable naming the armed failure point.
pub const ENV: &str = "LEASEHOLD_FAILPOINT";

/// Called right after the backend created a credential.
pub(crate) fn after_credential_created() {
    #[cfg(debug_assertions)]
    if armed("abort-after-credential-created") {
        eprintln!("{ENV}: aborting after the credential was created");
        std::process::abort();
    }
}

#[cfg(debug_assertions)]
fn armed(point: &str) -> bool {
    static ARMED: std::sync::LazyLock<Option<String>> =
        std::sync::LazyLock::new(|| std::env::var(ENV).ok());
    ARMED.as_deref() == Some(point)
}
