//! The `tollgate` binary: parses the command line and dispatches. Nothing
//! else lives here; the commands are in [`tollgate::cli`] and the server in
//! [`tollgate::server`].

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
        return Ok(match tollgate::config::check_file(file) {
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
    // The data plane runs on its own shards (`tollgate::server::shard`); this
    // runtime only accepts connections and runs background work (ledger
    // writer, alerts, reloads).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(tollgate::server::serve(args.into()))?,
        command => {
            let mut stdout = std::io::stdout().lock();
            let done = runtime
                .block_on(tollgate::cli::run_client(
                    command,
                    &cli.url,
                    cli.admin_key,
                    &mut stdout,
                ))
                .and_then(|()| stdout.flush().map_err(Into::into));
            match done {
                // `tollgate keys create … | head -1` closes the pipe early: that
                // is the reader's choice, not an error.
                Err(tollgate::cli::CliError::Output(e))
                    if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
