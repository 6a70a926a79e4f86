//! `frame::decode` on arbitrary bytes: never panics, and whatever it accepts is exactly
//! what `frame::encode` would have produced (the checks live in `checks/`, shared with
//! the stable corpus replay test).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/frame_decoder.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
