//! The HTTP/1 fast path: the common request (HTTP/1.1 client, plain `http://` upstream,
//! `Content-Length` or chunked body) parsed with `httparse`, rewritten in place and
//! written with its body straight onto the client connection's own upstream connection,
//! the answer streamed back, all in the connection's task. hyper keeps everything else:
//! HTTP/2, TLS upstreams, the proxy's own answers but 502, and any head that is not the
//! common case (see `head.rs` for the line, `conn.rs` for the loop).
//!
//! **Why.** Per small write, hyper's general HTTP/1 server and client (two state
//! machines, a task hand-off to the upstream connection's task, request and response
//! structs moved between futures) were most of the proxy's ~28,000 user-space
//! instructions; nginx spends ~19,500. This path does the same work in a fraction of
//! them (BENCHMARKS.md has the figures).
//!
//! **Safety of the split.** The fast path accepts a strict subset of what hyper accepts
//! (one `Content-Length` of plain digits or exactly `Transfer-Encoding: chunked`, never
//! both, no `Expect`/`Upgrade`, origin-form targets of plain URL characters, HTTP/1.1
//! only), and parses with hyper's own parser and settings; every other head goes to
//! hyper with the bytes already read, so request-smuggling rules stay hyper's. The
//! chunked decoder follows hyper's grammar and limits byte for byte (`chunked.rs`). Both
//! decoders are fuzzed (`fuzz/`).

pub mod chunked;
pub mod conn;
pub mod head;
pub mod io;

pub use conn::{FastPath, Served};
pub use io::Rewind;
