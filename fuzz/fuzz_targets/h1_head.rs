//! See `checks/h1_head.rs` for what must hold (shared with the stable corpus replay test).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/h1_head.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
