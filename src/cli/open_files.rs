//! Raising the soft limit on open files to the hard limit, at start-up.
//!
//! Every connection is a file descriptor. Distributions often start a process with a
//! soft limit of 1,024 while allowing far more (the hard limit): a control serving
//! thousands of sidecars, or a proxy with `--max-connections 1024` and as many
//! upstream connections, would run out well before the system does. The `rlimit` crate
//! makes the system calls, so this crate keeps `forbid(unsafe_code)`.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; logs the limit in force.
pub fn raise_to_hard_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open files limit"),
    }
}
