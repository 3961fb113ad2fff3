//! The `tollgate` binary: parses the command line and dispatches. Nothing
//! else lives here; the commands are in [`tollgate::cli`] and the server in
//! `tollgate::app`.

// LEAD-MERGE: stand-ins for `tollgate::app::serve` (app) and
// `tollgate::config::check_file` (config branch). Delete this block on merge
// and replace `lead_merge::serve` / `lead_merge::check_file` below with
// `tollgate::app::serve` / `tollgate::config::check_file`.
mod lead_merge {
    use std::path::Path;

    use tollgate::cli::ServeOptions;

    pub async fn serve(_opts: ServeOptions) -> anyhow::Result<()> {
        anyhow::bail!(
            "`tollgate serve` is not wired into this build yet (`tollgate::app::serve` lands with the app)"
        )
    }

    pub fn check_file(path: &Path) -> Result<(), String> {
        Err(format!(
            "{}:1: `config check` is not wired into this build yet",
            path.display()
        ))
    }
}
// LEAD-MERGE: end of block.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use tollgate::cli::{Cli, Command, ConfigCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Config(ConfigCommand::Check { file }) = &cli.command {
        return Ok(match lead_merge::check_file(file) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("{problems}");
                ExitCode::FAILURE
            }
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(lead_merge::serve(args.into()))?,
        command => {
            let mut stdout = std::io::stdout().lock();
            runtime.block_on(tollgate::cli::run_client(
                command,
                &cli.url,
                cli.admin_key,
                &mut stdout,
            ))?;
            stdout.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
