//! One task per account: waits for a tick, lists every key, reads the account's money, and
//! publishes the snapshot or records the failure; after a complete poll (only then) it hands the
//! snapshot to the policy engine, so an account's enforcement never overlaps its next poll.
//!
//! A poll is complete when the listing and the wallet read both succeeded. A failed read of the
//! spend or the subscriptions does not fail it: those parts keep their last values and the
//! failure is counted under its own reason (`usage_failed`, `subscriptions_failed`).
//!
//! Each account has its own task, client and request budget, so a slow or failing account
//! never delays another. The scheduler marks `poll_running` before it sends a tick; the poller
//! clears it when the poll has ended, so a tick arriving in between is skipped and counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::account::AccountMoney;
use crate::api::{
    read_account_money, scan_account, AccountRouteMemory, ApiClient, ApiError, PartialFailure,
};
use crate::clock::Clock;
use crate::metrics::Exporter;
use crate::policy::PolicyEngine;
use crate::snapshot::Snapshot;

/// One complete poll of an account.
#[derive(Debug)]
pub struct AccountPoll {
    pub snapshot: Snapshot,
    /// HTTP requests of the listing (successful ones) and of the money read (all).
    pub requests: u32,
    pub rescanned: bool,
    /// Reads that failed inside the complete poll (their parts kept the previous values).
    pub partial_failures: Vec<PartialFailure>,
}

/// Lists every key and reads the account's money: the snapshot of one complete poll, or the
/// error that made it fail. `previous` is the money of the last complete poll (what a failed
/// spend or subscriptions read keeps); `usage` turns the spend read on.
pub async fn poll_account(
    client: &ApiClient,
    memory: &Mutex<AccountRouteMemory>,
    previous: Option<&AccountMoney>,
    clock: &Clock,
    usage: bool,
) -> Result<AccountPoll, ApiError> {
    let listing = scan_account(client).await?;
    let read = read_account_money(
        client,
        memory,
        previous,
        clock.now(),
        usage,
        listing.data_export_enabled,
    )
    .await?;
    let snapshot = Snapshot::new(
        client.account().to_owned(),
        listing.keys,
        listing.quota_per_unit,
        clock.now(),
    )
    .with_money(read.money);
    Ok(AccountPoll {
        snapshot,
        requests: listing.requests + read.requests,
        rescanned: listing.rescanned,
        partial_failures: read.failures,
    })
}

pub struct AccountPoller {
    pub client: ApiClient,
    pub exporter: Arc<Exporter>,
    pub poll_running: Arc<AtomicBool>,
    /// Called after every complete poll (and only then) when `[policy]` is configured.
    pub policy: Option<Arc<PolicyEngine>>,
    /// Read today's spend by key and model (`usage` of the account or `[poll]`).
    pub usage: bool,
    pub clock: Clock,
    /// What earlier polls learned about the server's account routes.
    pub route_memory: Mutex<AccountRouteMemory>,
}

impl AccountPoller {
    /// Polls on every tick until shutdown. A poll in progress at shutdown is cancelled by the
    /// client (which watches the same token) and not counted as a failure.
    pub async fn run(self, mut ticks: mpsc::Receiver<()>, shutdown: CancellationToken) {
        loop {
            let tick = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                tick = ticks.recv() => tick,
            };
            if tick.is_none() {
                break;
            }
            let _ = self.poll_once().await;
            self.poll_running.store(false, Ordering::SeqCst);
        }
    }

    /// One complete poll of the account; returns the snapshot it published.
    pub async fn poll_once(&self) -> Result<Arc<Snapshot>, ApiError> {
        let account = self.client.account().to_owned();
        let started = Instant::now();
        let previous = self.exporter.snapshot(&account);
        let result = poll_account(
            &self.client,
            &self.route_memory,
            previous.as_ref().map(|snapshot| &snapshot.money),
            &self.clock,
            self.usage,
        )
        .await;
        let duration = started.elapsed();
        match result {
            Ok(poll) => {
                let keys = poll.snapshot.keys.len();
                let (requests, rescanned) = (poll.requests, poll.rescanned);
                self.exporter
                    .record_partial_failures(&account, &poll.partial_failures);
                let render_started = Instant::now();
                let snapshot = self.exporter.publish(poll.snapshot, duration).await;
                tracing::info!(
                    account = %account, keys, requests, rescanned, duration_ms = duration.as_millis() as u64,
                    render_ms = render_started.elapsed().as_millis() as u64,
                    partial_failures = poll.partial_failures.len(), "poll complete"
                );
                if let Some(policy) = &self.policy {
                    let summary = policy.after_complete_poll(&self.client, &snapshot).await;
                    self.exporter.record_policy_summary(&account, summary);
                }
                Ok(snapshot)
            }
            Err(ApiError::Cancelled) => {
                tracing::info!(account = %account, "poll cancelled by shutdown");
                Err(ApiError::Cancelled)
            }
            Err(error) => {
                let reason = error.reason().unwrap_or("none");
                let duration_ms = duration.as_millis() as u64;
                if self.exporter.snapshot(&account).is_some() {
                    tracing::warn!(
                        account = %account, reason, error = %error, duration_ms,
                        "poll failed; still serving the previous snapshot"
                    );
                } else {
                    tracing::warn!(
                        account = %account, reason, error = %error, duration_ms,
                        "poll failed; nothing is served for this account yet (no poll has completed)"
                    );
                }
                self.exporter
                    .record_failure(&account, &error, duration, self.clock.now());
                Err(error)
            }
        }
    }
}
