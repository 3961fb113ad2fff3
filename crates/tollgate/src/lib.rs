//! tollgate: one ingress for a company's LLM traffic. Virtual keys, hard
//! budgets, rate limits and loop guards in front of LLM providers.
//!
//! The request path, top to bottom: [`app`] orders the layers, [`proxy`]
//! handles `/v1/*` (auth → policy admit → provider → settle), [`policy`]
//! decides over [`counters`], [`providers`] speak each upstream's wire format,
//! [`store`] keeps keys and the ledger.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod counters;
pub mod error;
pub mod policy;
pub mod providers;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod types;
