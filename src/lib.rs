//! cometapi-keymon: a Prometheus exporter and policy daemon for the API keys of CometAPI and
//! new-api accounts. See ARCHITECTURE.md for the code map and the invariants.

pub mod config;
pub mod secret;
pub mod simulator;
