//! End-to-end tests of the proxy on ephemeral loopback ports: a fake lease source, a fake
//! InfluxDB recording what reaches it, and real HTTP in between. One test binary (one
//! link) for all of them; each module is one concern.

mod admin;
mod browser;
mod forwarding;
mod framing;
mod limits;
mod own_answers;
mod paths;
mod renewal;
mod shutdown;
mod support;
mod threads;
mod timeouts;
mod tls;
mod upstream_failure;
mod warmup;
