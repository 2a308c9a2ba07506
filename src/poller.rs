//! One task per account: waits for a tick, lists every key, and publishes the snapshot or
//! records the failure; after a complete poll (only then) it hands the snapshot to the policy
//! engine, so an account's enforcement never overlaps its next poll.
//!
//! Each account has its own task, client and request budget, so a slow or failing account
//! never delays another. The scheduler marks `poll_running` before it sends a tick; the poller
//! clears it when the poll has ended, so a tick arriving in between is skipped and counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::{scan_account, ApiClient, ApiError};
use crate::clock::unix_now;
use crate::metrics::Exporter;
use crate::policy::PolicyEngine;
use crate::snapshot::Snapshot;

pub struct AccountPoller {
    pub client: ApiClient,
    pub exporter: Arc<Exporter>,
    pub poll_running: Arc<AtomicBool>,
    /// Called after every complete poll (and only then) when `[policy]` is configured.
    pub policy: Option<Arc<PolicyEngine>>,
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
        let result = scan_account(&self.client).await;
        let duration = started.elapsed();
        let now = unix_now();
        match result {
            Ok(listing) => {
                let (keys, requests, rescanned) =
                    (listing.keys.len(), listing.requests, listing.rescanned);
                let snapshot =
                    Snapshot::new(account.clone(), listing.keys, listing.quota_per_unit, now);
                let render_started = Instant::now();
                let snapshot = self.exporter.publish(snapshot, duration).await;
                tracing::info!(
                    account = %account, keys, requests, rescanned, duration_ms = duration.as_millis() as u64,
                    render_ms = render_started.elapsed().as_millis() as u64, "poll complete"
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
                tracing::warn!(
                    account = %account, reason = error.reason().unwrap_or("none"), error = %error,
                    duration_ms = duration.as_millis() as u64, "poll failed; still serving the previous snapshot"
                );
                self.exporter
                    .record_failure(&account, &error, duration, now);
                Err(error)
            }
        }
    }
}
