//! Tracing set-up: human text or JSON lines on stderr, level from `RUST_LOG`.
//!
//! Logging must never take the process down. tracing-subscriber reports a failed write
//! with `eprintln!`, which panics when stderr itself is the broken pipe (`leasehold proxy
//! 2>&1 | head -1`): a panicking runtime worker would kill the refresher or the signal
//! handler. So the writer here drops a line it cannot write, and says nothing: there is
//! nowhere left to say it.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Log line format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for containers.
    Json,
}

/// Installs the global subscriber. `default_level` applies when `RUST_LOG` is unset.
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only where a human reads them, never in files or collectors.
        .with_ansi(io::stderr().is_terminal())
        .with_writer(LossyStderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .map_writer(|_| JsonObjectsStderr)
            .init(),
    }
}

/// Fields that hold a JSON object written as text (tracing has no stable way to
/// record a map): in JSON logs they become objects, so a collector can query
/// `attributes.service` rather than parse a string.
const OBJECT_FIELDS: &[&str] = &["attributes"];

/// Makes [`JsonObjects`] writers over stderr, for the JSON log format.
#[derive(Debug, Clone, Copy)]
struct JsonObjectsStderr;

impl<'a> MakeWriter<'a> for JsonObjectsStderr {
    type Writer = JsonObjects<LossyWriter<io::StderrLock<'static>>>;

    fn make_writer(&'a self) -> Self::Writer {
        JsonObjects(LossyWriter(io::stderr().lock()))
    }
}

/// Rewrites one JSON log line (the formatter hands over a whole line in one write) so
/// that [`OBJECT_FIELDS`] holding JSON objects as strings become objects. Any other
/// line passes through untouched.
#[derive(Debug)]
struct JsonObjects<W>(W);

impl<W: Write> Write for JsonObjects<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match with_objects(buf) {
            Some(line) => {
                self.0.write_all(&line)?;
                Ok(buf.len())
            }
            None => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// `line` with its object fields as objects, or `None` when there is nothing to do.
fn with_objects(line: &[u8]) -> Option<Vec<u8>> {
    // Most lines carry no such field: skip the parse for them.
    let text = std::str::from_utf8(line).ok()?;
    if !OBJECT_FIELDS
        .iter()
        .any(|f| text.contains(&format!("\"{f}\":\"")))
    {
        return None;
    }
    let mut value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text.trim_end()).ok()?;
    for field in OBJECT_FIELDS {
        if let Some(serde_json::Value::String(inner)) = value.get(*field)
            && let Ok(object @ serde_json::Value::Object(_)) = serde_json::from_str(inner)
        {
            value.insert((*field).to_owned(), object);
        }
    }
    let mut out = serde_json::to_vec(&value).ok()?;
    out.push(b'\n');
    Some(out)
}

/// Makes [`LossyWriter`]s over stderr.
#[derive(Debug, Clone, Copy)]
struct LossyStderr;

impl<'a> MakeWriter<'a> for LossyStderr {
    type Writer = LossyWriter<io::StderrLock<'static>>;

    fn make_writer(&'a self) -> Self::Writer {
        LossyWriter(io::stderr().lock())
    }
}

/// A writer that reports every write as done: a log line that cannot be written is
/// dropped rather than turned into an error that the subscriber would print (and panic
/// on) or a caller would propagate.
#[derive(Debug)]
struct LossyWriter<W>(W);

impl<W: Write> Write for LossyWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A short write is finished by `write_all`; an error ends this line only.
        Ok(self.0.write(buf).unwrap_or(buf.len()))
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink whose every write fails, like a pipe whose reader has gone.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    #[test]
    fn a_broken_sink_drops_the_line_without_an_error() {
        let mut writer = LossyWriter(Broken);
        writer.write_all(b"a log line\n").unwrap();
        writer.flush().unwrap();
    }

    #[test]
    fn attributes_become_json_objects_and_other_lines_pass_through() {
        let mut writer = JsonObjects(Vec::new());
        writer
            .write_all(b"{\"level\":\"INFO\",\"attributes\":\"{\\\"service\\\":\\\"x\\\"}\"}\n")
            .unwrap();
        let line: serde_json::Value = serde_json::from_slice(&writer.0).unwrap();
        assert_eq!(line["attributes"]["service"], "x", "{line}");
        let mut plain = JsonObjects(Vec::new());
        plain.write_all(b"{\"message\":\"hello\"}\n").unwrap();
        assert_eq!(plain.0, b"{\"message\":\"hello\"}\n");
    }

    #[test]
    fn a_working_sink_gets_every_byte() {
        let mut writer = LossyWriter(Vec::new());
        writer.write_all(b"a log line\n").unwrap();
        assert_eq!(writer.0, b"a log line\n");
    }
}
