//! `--ready-file PATH`: once a long-running command has bound its listeners, it writes
//! the addresses it got, one `KEY=ADDR` line each, to PATH.
//!
//! This is what lets a supervisor (a test, a script) start the process on port 0 and
//! learn where *this* process listens, instead of choosing a port beforehand and
//! hoping nothing else takes it. The file is written to a temporary name and renamed,
//! so a reader sees all of it or nothing.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

/// Writes `entries` (`("listen", addr)`, ...) to `path` atomically.
pub fn write(path: &Path, entries: &[(&str, SocketAddr)]) -> anyhow::Result<()> {
    let text: String = entries
        .iter()
        .map(|(key, addr)| format!("{key}={addr}\n"))
        .collect();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing the ready file {}", path.display()))
}
