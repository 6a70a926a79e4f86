//! Printing records: human lines, or JSON (an object per record, an array per list).

use std::io::Write;

use serde::Serialize;

/// `println!` for command output: a closed pipe (`leasehold lease list | head -1`) ends
/// the process quietly, as Unix tools do, instead of panicking.
macro_rules! say {
    () => { $crate::cli::output::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::output::line(format_args!($($arg)*)) };
}

/// Writes one line to stdout; see [`say!`].
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(std::io::stderr(), "error: writing to stdout: {error}");
        std::process::exit(1);
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Human-readable lines.
    Plain,
    /// JSON.
    Json,
}

/// Prints `value` as JSON.
pub fn json<T: Serialize + ?Sized>(value: &T) {
    say!(
        "{}",
        serde_json::to_string_pretty(value).expect("records serialize")
    );
}

/// Prints aligned `label: value` lines.
pub fn fields(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        say!("{key:width$}  {value}");
    }
}
