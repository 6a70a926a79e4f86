//! The control's side of a resumed channel on hostile input; see
//! `checks/resume_responder.rs` for the modes and what must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/resume_responder.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
