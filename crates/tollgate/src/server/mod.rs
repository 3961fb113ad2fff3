//! Server lifecycle: what `tollgate serve` runs with. The command line
//! ([`crate::cli`]) builds [`ServeOptions`]; nothing here depends on it.

use std::path::PathBuf;

use clap::ValueEnum;

pub mod busy_poll;
pub mod shard;

/// Log line format. `ValueEnum` so `--log-format` parses straight into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What `tollgate serve` passes to [`crate::app`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub log_format: LogFormat,
}
