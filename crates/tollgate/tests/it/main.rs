//! Integration tests: the gateway and the mock provider over real HTTP on
//! 127.0.0.1, real SQLite (and PostgreSQL/Redis where a feature uses them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod adversarial;
mod agents;
mod agents_sdk;
mod alert_delivery;
mod audit;
mod azure_entra;
mod bedrock;
mod browser;
mod budget;
mod cache;
mod cache_prices;
mod console;
mod counter_loss;
mod crash;
mod errors;
mod gemini;
mod holes;
mod hooks;
mod infra;
mod keys;
mod ledger;
mod limits;
mod observability;
mod openapi_fuzz;
mod process;
mod routing;
mod scaleout;
mod sdk;
mod shadow;
mod streaming;
mod translation;
mod vertex;
