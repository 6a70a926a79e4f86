//! The `leasehold` command-line interface: argument parsing, output formatting and the
//! wiring of the control, proxy and channel crates. See ARCHITECTURE.md for the map.
#![forbid(unsafe_code)]

pub mod cli;
