//! Link flags for the `leasehold` binary: both make an idle sidecar touch fewer of the
//! binary's pages. Neither changes generated code (BENCHMARKS.md, "Where an idle
//! sidecar's memory goes").
//!
//! - `-z pack-relative-relocs` stores the relative relocations as a compact bitmap
//!   (DT_RELR) instead of 24-byte `RELA` entries. The dynamic loader reads every entry at
//!   each start, so the ~480 KiB table stayed resident in every process. Packed, it is
//!   a few KiB. It needs glibc 2.36 or newer at run time (Debian 12, the image's base);
//!   an older loader refuses the binary with a clear "GLIBC_ABI_DT_RELR" message.
//! - `--symbol-ordering-file link/code-order.txt` (release builds with the default
//!   linker, rust-lld): the functions a sidecar runs from start through its first lease
//!   and requests (`bench/code-order.sh` records them under callgrind) are laid out
//!   together at the start of the code. Left where they fall, those ~1.4 MiB are spread
//!   over most of the 10 MiB of code, and every page fault maps up to 64 KiB around it
//!   (the kernel's fault-around), so an idle sidecar had ~6.4 MiB of code resident. A
//!   name the file lists that the build no longer has is skipped silently: a stale file
//!   costs memory, never correctness.

use std::env;
use std::path::Path;

const CODE_ORDER: &str = "link/code-order.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={CODE_ORDER}");
    let var = |name: &str| env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");

    // GNU ld (bfd) has no symbol ordering: only where rust-lld is the linker, which it is
    // by default for this target since Rust 1.90, unless a linker is configured.
    let default_linker = var("TARGET") == "x86_64-unknown-linux-gnu"
        && env::var_os("RUSTC_LINKER").is_none()
        && !var("CARGO_ENCODED_RUSTFLAGS").contains("link");
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join(CODE_ORDER);
    if var("PROFILE") == "release" && default_linker && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
