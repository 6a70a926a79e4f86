//! The store-and-forward record decoder on arbitrary bytes: never panics, and whatever it
//! accepts is exactly what the encoder would have written (the checks live in
//! `checks/`, shared with the stable seed replay test).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/record_decoder.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
