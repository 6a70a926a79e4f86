//! Argument parsing and dispatch. Each subcommand lives in its own file; this one holds
//! the global options, exit codes and the runtime.

#[macro_use]
mod output;

mod admin;
mod check;
mod common;
mod completion;
mod connect;
mod control;
mod duration;
mod enroll;
mod identity;
mod lease;
mod logging;
mod open_files;
mod outlet;
mod proxy;
mod ready;
mod signal;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use leasehold_channel::home::Home;

pub use output::Output;

/// Secure-channel sidecar proxy with automatic credential leasing for InfluxDB.
#[derive(Debug, Parser)]
#[command(
    name = "leasehold",
    version,
    propagate_version = true,
    after_help = "Environment:\n  RUST_LOG  log level or filter [default: warn; info for `control serve` and `proxy`]\n\nExit codes: 0 ok, 1 refused or failed at run time (by the control or the system), 2 usage error found by the command line itself."
)]
pub struct Cli {
    /// Directory holding identities and enrollments [default: ~/.leasehold].
    #[arg(long, global = true, env = "LEASEHOLD_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// How to print records.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Plain)]
    pub output: Output,
    /// Log format on stderr (`RUST_LOG` sets the level).
    #[arg(long, global = true, env = "LEASEHOLD_LOG_FORMAT", value_enum, default_value_t = logging::LogFormat::Text)]
    pub log_format: logging::LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list and show local Ed25519 identities.
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// Initialize or run the control plane.
    #[command(subcommand)]
    Control(control::ControlCommand),
    /// Configure the InfluxDB add-on (admin).
    #[command(subcommand)]
    Addon(admin::AddonCommand),
    /// Per-attribute lease policies (admin).
    #[command(subcommand)]
    Policy(admin::PolicyCommand),
    /// Enrollment tickets (admin).
    #[command(subcommand)]
    Ticket(admin::TicketCommand),
    /// Redeem an enrollment ticket for a local identity.
    Enroll(enroll::EnrollArgs),
    /// Enrolled members (admin).
    #[command(subcommand)]
    Member(admin::MemberCommand),
    /// Create, list, show and revoke leases.
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Run the sidecar proxy.
    Proxy(proxy::ProxyArgs),
    /// Probe a leasehold admin endpoint (for container health checks).
    Health(proxy::HealthArgs),
    /// Print a shell completion script (bash, zsh or fish) to stdout.
    Completion(completion::CompletionArgs),
    /// Print the man page, leasehold(1), to stdout.
    Man,
    /// Run an outlet beside a private InfluxDB: members' sidecars reach it only
    /// through authenticated channels.
    Outlet(outlet::OutletArgs),
}

/// An error that is the user's input rather than a failure: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs the command line and returns the process exit code: 0 ok, 1 runtime failure,
/// 2 usage.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => exit_on_parse_error(error),
    };
    logging::init(cli.log_format, cli.command.default_log_level());
    // The sidecar runs its data path thread per core (`proxy/src/shard.rs`): this
    // thread's runtime is the first of them, and runs the lease renewal and the admin
    // endpoint besides. No work-stealing scheduler on the request path, and on one CPU
    // no second thread.
    let mut builder = match cli.command {
        Command::Proxy(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot start the async runtime: {error}"
            );
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    // Blocking work still queued (a store read, a stdin read) must not keep a command
    // that has finished, or a service that has drained, from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Not `eprintln!`: it panics when stderr is a closed pipe.
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            ExitCode::from(exit_code(&error))
        }
    }
}

/// Prints a clap error and exits (2 for usage errors, 0 for `--help`/`--version`). A
/// missing flag that an environment variable can also give names that variable, since
/// secrets belong there (`INFLUXDB_ADMIN_PASSWORD`), not in argv.
fn exit_on_parse_error(error: clap::Error) -> ! {
    use clap::CommandFactory;
    if error.kind() != clap::error::ErrorKind::MissingRequiredArgument {
        error.exit();
    }
    let text = error.render().to_string();
    let missing = match error.get(clap::error::ContextKind::InvalidArg) {
        Some(clap::error::ContextValue::Strings(missing)) => missing.join(" "),
        _ => String::new(),
    };
    // The subcommand that was run: its flags are the ones that were missing.
    let mut cmd = Cli::command();
    for word in std::env::args().skip(1) {
        if let Some(sub) = cmd.find_subcommand(&word) {
            cmd = sub.clone();
        }
    }
    let hints: Vec<String> = cmd
        .get_arguments()
        .filter_map(|arg| {
            let (long, env) = (arg.get_long()?, arg.get_env()?);
            missing
                .contains(&format!("--{long} <"))
                .then(|| format!("  --{long} can also come from {}", env.to_string_lossy()))
        })
        .collect();
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "{text}");
    if !hints.is_empty() {
        let _ = writeln!(
            stderr,
            "\nhint: set the environment variable instead of the flag:"
        );
        for hint in hints {
            let _ = writeln!(stderr, "{hint}");
        }
    }
    std::process::exit(2);
}

/// The one rule: 2 for a usage error the CLI detects itself (clap's own errors exit 2
/// too), 1 for everything the control or the system refused at run time, including a
/// request the control found invalid (see `check.rs` for what is caught locally).
fn exit_code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}

impl Command {
    fn default_log_level(&self) -> &'static str {
        match self {
            Command::Control(control::ControlCommand::Serve(_))
            | Command::Proxy(_)
            | Command::Outlet(_) => "info",
            _ => "warn",
        }
    }
}

/// The home directory from `--home`/`LEASEHOLD_HOME`, else `~/.leasehold`.
pub fn home(explicit: Option<PathBuf>) -> anyhow::Result<Home> {
    if let Some(path) = explicit {
        return Ok(Home::new(path));
    }
    let user_home = std::env::var_os("HOME")
        .ok_or_else(|| UsageError("HOME is not set: pass --home or set LEASEHOLD_HOME".into()))?;
    Ok(Home::new(PathBuf::from(user_home).join(".leasehold")))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let home = home(cli.home)?;
    let out = cli.output;
    match cli.command {
        Command::Identity(cmd) => identity::run(&home, out, cmd),
        Command::Control(cmd) => control::run(&home, out, cmd).await,
        Command::Addon(cmd) => admin::addon(&home, out, cmd).await,
        Command::Policy(cmd) => admin::policy(&home, out, cmd).await,
        Command::Ticket(cmd) => admin::ticket(&home, out, cmd).await,
        Command::Member(cmd) => admin::member(&home, out, cmd).await,
        Command::Enroll(args) => enroll::run(&home, out, args).await,
        Command::Lease(cmd) => lease::run(&home, out, cmd).await,
        Command::Proxy(args) => proxy::run(&home, args).await,
        Command::Health(args) => proxy::health(out, args).await,
        Command::Completion(args) => completion::completion(&args),
        Command::Man => completion::man(),
        Command::Outlet(args) => outlet::run(&home, args).await,
    }
}

/// Parses a duration flag (`300`, `300s`, `5m`, `1h`).
pub(crate) fn duration_secs(text: &str) -> Result<u64, String> {
    duration::parse(text).map(|d| d.as_secs())
}

/// Parses a lease lifetime flag: a duration no longer than any lease may live, so the
/// command line refuses (exit 2, with the limit) what the control would refuse.
pub(crate) fn ttl_secs(text: &str) -> Result<u64, String> {
    use leasehold_control::policy::MAX_TTL_SECS;
    let secs = duration_secs(text)?;
    if secs > MAX_TTL_SECS {
        return Err(format!(
            "{secs}s exceeds the limit of {MAX_TTL_SECS}s (30 days) for any lease"
        ));
    }
    Ok(secs)
}

/// Parses `KEY=VALUE`.
pub(crate) fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}
