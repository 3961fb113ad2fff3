//! `tollgate serve`: its flags, handed to [`crate::server`] as
//! [`ServeOptions`] (the server side does not depend on the command line).

use std::path::PathBuf;

use clap::Args;

use crate::server::{LogFormat, ServeOptions};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file; without it `./tollgate.yaml` if present, else embedded defaults.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl From<ServeArgs> for ServeOptions {
    fn from(a: ServeArgs) -> Self {
        ServeOptions {
            config: a.config,
            log_format: a.log_format,
        }
    }
}
