//! cometapi-keymon: a Prometheus exporter for the API keys of CometAPI and new-api accounts.
//!
//! The daemon pages through every key of every configured account on a schedule, keeps the
//! last complete view in memory and serves it on `/metrics`. See ARCHITECTURE.md for the code
//! map and the invariants; `cli` is the entry point of the binary.

pub mod account;
pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cron;
pub mod exposition;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod poller;
pub mod schedule;
pub mod secret;
pub mod shutdown;
pub mod simulator;
pub mod snapshot;
