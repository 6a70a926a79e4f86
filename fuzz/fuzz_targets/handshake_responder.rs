//! The control's side of the handshake on hostile input; see
//! `checks/handshake_responder.rs` for the modes and what must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/handshake_responder.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
