//! Integration tests: the gateway and the mock provider over real HTTP on
//! 127.0.0.1, real SQLite (and PostgreSQL/Redis where a feature uses them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod adversarial;
mod azure_entra;
mod bedrock;
mod budget;
mod cache_prices;
mod counter_loss;
mod crash;
mod errors;
mod holes;
mod hooks;
mod infra;
mod keys;
mod ledger;
mod limits;
mod process;
mod scaleout;
mod sdk;
mod shadow;
mod streaming;
mod translation;
