//! `leasehold completion SHELL` and `leasehold man`: shell completions and a man page,
//! generated from the same clap definitions that parse the command line, so they can
//! never describe flags the binary does not have.

use clap::{Args, CommandFactory, ValueEnum};

use super::Cli;

/// Shells completions are generated for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `completion` arguments.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// Shell to complete for, e.g. `leasehold completion bash > /etc/bash_completion.d/leasehold`.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Writes the completion script for `shell` to stdout.
pub fn completion(args: &CompletionArgs) -> anyhow::Result<()> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "leasehold", &mut script);
    write_stdout(&script)
}

/// Writes the man page, `leasehold(1)`, to stdout: the top-level page, then one section
/// per subcommand (nested ones included) so a single file documents every flag.
pub fn man() -> anyhow::Result<()> {
    let mut root = Cli::command();
    root.build();
    let mut page = Vec::new();
    clap_mangen::Man::new(root.clone()).render(&mut page)?;
    for (path, cmd) in subcommands(&root) {
        // Each subcommand as a titled section with its own synopsis and options.
        let name = format!("leasehold {path}");
        let cmd = cmd.clone().bin_name(name);
        let man = clap_mangen::Man::new(cmd);
        page.extend_from_slice(format!(".SH \"LEASEHOLD {}\"\n", path.to_uppercase()).as_bytes());
        man.render_description_section(&mut page)?;
        man.render_synopsis_section(&mut page)?;
        man.render_options_section(&mut page)?;
    }
    write_stdout(&page)
}

/// Every subcommand below `cmd` with its path (`lease create`), depth first.
fn subcommands(cmd: &clap::Command) -> Vec<(String, &clap::Command)> {
    let mut out = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        out.push((sub.get_name().to_owned(), sub));
        for (path, nested) in subcommands(sub) {
            out.push((format!("{} {path}", sub.get_name()), nested));
        }
    }
    out
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        // `leasehold man | head` is fine.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(anyhow::Error::from),
    }
}
