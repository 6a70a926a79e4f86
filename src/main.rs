//! The `leasehold` command. Everything lives in the library; this only runs it.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    leasehold::cli::main()
}
