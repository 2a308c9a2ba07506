//! Policy enforcement: rules that disable, enable or top up keys after a complete poll.
//!
//! The pure core is `rules` (the validated rule model and its predicates), `history` (what was
//! done when, as data) and `evaluate` (snapshot + rules + history + now → decisions and holds).
//! The edges are `state` (the audit log, grant ledger and lock in `state_dir`), `engine` (fresh
//! reads, safe writes, read-back, reconciliation) and `metrics` (`cometapi_policy_*`).
//! Nothing is written to the server unless `dry_run = false`, and nothing is evaluated from a
//! failed or incomplete poll: the engine is only called with a complete snapshot.

pub mod engine;
pub mod evaluate;
pub mod history;
pub mod metrics;
pub mod rules;
pub mod state;

pub use engine::PolicyEngine;
pub use evaluate::{evaluate, Decision, Evaluation, EvaluationMode, Hold, Verdict};
pub use rules::{ActionKind, PolicyConfig, Rule};
