//! `Exporter`: the state behind `/metrics`, `/readyz` and `/`.
//!
//! It owns the latest snapshot of every account, their rendered (compressed) families, and the
//! exporter's own health metrics in a `prometheus` registry: `cometapi_up`, poll timestamps,
//! durations, error and request counters, skipped ticks and build info. Pollers call `publish`
//! after a complete poll and `record_failure` after a failed one; the HTTP server calls `scrape`,
//! which only clones an `Arc` and encodes the small registry — it never waits for a poll and
//! never walks the keys.
//!
//! Scrapers that do not accept gzip get the text from `PublishedKeys::plain_text`: the first
//! one after a poll inflates it once (off the async threads) and every later one shares that
//! copy until the next complete poll replaces it. Nobody asking for plain text costs nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::account::Wallet;
use crate::api::{
    ApiError, Endpoint, PartialFailure, RequestObserver, PARTIAL_READ_REASONS, POLL_ERROR_REASONS,
};
use crate::exposition::{self, RenderedKeys};
use crate::snapshot::Snapshot;

/// Poll durations span one status request (tens of milliseconds) to thousands of pages behind a
/// request budget (minutes).
const POLL_DURATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// What `/` shows about one account.
#[derive(Debug, Clone, Default)]
pub struct AccountView {
    pub name: String,
    pub keys: Option<usize>,
    pub usable_keys: Option<usize>,
    pub last_success_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub last_duration: Option<Duration>,
    /// The last failure, cleared by the next complete poll. Never contains a secret.
    pub last_error: Option<String>,
    /// What the policy engine did after the last complete poll and what it holds back (with
    /// `[policy]` only).
    pub policy: Option<PolicyView>,
    /// The wallet as of the last complete poll (`None` before one, or without a wallet route).
    pub wallet: Option<Wallet>,
    /// Quota units per US dollar of the last complete poll.
    pub quota_per_unit: Option<f64>,
    /// Quota spent today as of the last complete poll (`None` when the spend is not read).
    pub spent_today: Option<i64>,
    /// Active subscriptions as of the last complete poll (`None` without the routes).
    pub active_subscriptions: Option<usize>,
}

/// What the policy engine did after one complete poll of an account, and what it held back:
/// the engine's own state, so the status page tells the truth about keys left alone because a
/// rule already acted on them (cooldown) or because the circuit is open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyView {
    pub dry_run: bool,
    pub evaluated_at: i64,
    /// Outcome (`dry_run`, `applied`, `failed`, ...) → actions of this evaluation.
    pub outcomes: BTreeMap<String, usize>,
    /// Decisions left alone because their rule acted on the key within the cooldown.
    pub in_cooldown: usize,
    /// When the first of those cooldowns ends (unix seconds).
    pub cooldown_ends_at: Option<i64>,
    /// Why nothing was done (the circuit: action limit or key-count drop), when it held back.
    pub hold: Option<String>,
    /// A shutdown interrupted a write (it is reconciled at the next start).
    pub interrupted: bool,
    /// The last evaluation with any outcome, and those outcomes: this one, or an earlier one
    /// whose actions now sit in cooldown.
    pub last_activity: Option<(i64, BTreeMap<String, usize>)>,
}

/// The per-key text plus the health text of one scrape.
pub struct Scrape {
    pub keys: Arc<PublishedKeys>,
    pub health_text: Vec<u8>,
}

/// The rendered families of the latest complete polls, and their plain text once a scrape has
/// asked for it.
pub struct PublishedKeys {
    pub rendered: RenderedKeys,
    /// Inflated on the first plain-text scrape; dropped with this value after the next publish
    /// (once the responses still sending it are done).
    plain: tokio::sync::OnceCell<Bytes>,
}

impl PublishedKeys {
    fn new(rendered: RenderedKeys) -> PublishedKeys {
        PublishedKeys {
            rendered,
            plain: tokio::sync::OnceCell::new(),
        }
    }

    /// The whole per-key text. Scrapes arriving while it is being inflated wait for that one
    /// inflation instead of starting their own.
    pub async fn plain_text(self: &Arc<Self>) -> Bytes {
        self.plain
            .get_or_init(|| {
                let published = Arc::clone(self);
                async move {
                    tokio::task::spawn_blocking(move || published.rendered.inflate())
                        .await
                        .expect("inflating the cached stream does not panic")
                }
            })
            .await
            .clone()
    }

    /// True once a plain-text scrape has inflated this render.
    pub fn holds_plain_text(&self) -> bool {
        self.plain.initialized()
    }
}

pub struct Exporter {
    registry: Registry,
    up: IntGaugeVec,
    last_success: GaugeVec,
    poll_duration: HistogramVec,
    poll_errors: IntCounterVec,
    poll_skipped: IntCounterVec,
    api_requests: IntCounterVec,
    accounts: Mutex<Vec<AccountEntry>>,
    rendered: RwLock<Arc<PublishedKeys>>,
    /// Serialises re-rendering so two accounts finishing together cannot swap in an older render
    /// after a newer one.
    render_lock: tokio::sync::Mutex<()>,
    /// Run before each scrape encodes the registry (time-derived gauges such as next runs).
    scrape_hooks: Mutex<Vec<ScrapeHook>>,
}

type ScrapeHook = Box<dyn Fn() + Send + Sync>;

struct AccountEntry {
    view: AccountView,
    snapshot: Option<Arc<Snapshot>>,
}

impl Exporter {
    /// An exporter for these accounts (in the order their families are rendered).
    pub fn new(account_names: &[String]) -> Arc<Exporter> {
        let registry = Registry::new();
        let up = IntGaugeVec::new(
            Opts::new(
                "cometapi_up",
                "1 when the last poll of the account completed, else 0.",
            ),
            &["account"],
        )
        .expect("valid metric");
        let last_success = GaugeVec::new(
            Opts::new(
                "cometapi_last_poll_success_timestamp_seconds",
                "Unix time at which the last complete poll of the account ended.",
            ),
            &["account"],
        )
        .expect("valid metric");
        let poll_duration = HistogramVec::new(
            HistogramOpts::new(
                "cometapi_poll_duration_seconds",
                "Duration of complete and failed polls.",
            )
            .buckets(POLL_DURATION_BUCKETS.to_vec()),
            &["account"],
        )
        .expect("valid metric");
        let poll_errors = IntCounterVec::new(
            Opts::new(
                "cometapi_poll_errors_total",
                "Failed polls by reason; the previous snapshot keeps being served. usage_failed and subscriptions_failed count reads that failed inside a complete poll.",
            ),
            &["account", "reason"],
        )
        .expect("valid metric");
        let poll_skipped = IntCounterVec::new(
            Opts::new(
                "cometapi_poll_skipped_total",
                "Scheduled ticks skipped because the account's previous poll was still running.",
            ),
            &["account"],
        )
        .expect("valid metric");
        let api_requests = IntCounterVec::new(
            Opts::new("cometapi_api_requests_total", "HTTP requests to the management API by endpoint and status code (\"error\" when no response arrived)."),
            &["account", "endpoint", "code"],
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "cometapi_build_info",
                "Version and git revision of the running cometapi-keymon; always 1.",
            ),
            &["version", "revision"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("BUILD_GIT_REVISION")])
            .set(1);
        for collector in [
            Box::new(up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(last_success.clone()),
            Box::new(poll_duration.clone()),
            Box::new(poll_errors.clone()),
            Box::new(poll_skipped.clone()),
            Box::new(api_requests.clone()),
            Box::new(build_info),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        let mut accounts = Vec::new();
        for name in account_names {
            up.with_label_values(&[name]).set(0);
            poll_skipped.with_label_values(&[name]);
            for reason in POLL_ERROR_REASONS.into_iter().chain(PARTIAL_READ_REASONS) {
                poll_errors.with_label_values(&[name.as_str(), reason]);
            }
            accounts.push(AccountEntry {
                view: AccountView {
                    name: name.clone(),
                    ..AccountView::default()
                },
                snapshot: None,
            });
        }
        Arc::new(Exporter {
            registry,
            up,
            last_success,
            poll_duration,
            poll_errors,
            poll_skipped,
            api_requests,
            accounts: Mutex::new(accounts),
            rendered: RwLock::new(Arc::new(PublishedKeys::new(RenderedKeys::empty()))),
            render_lock: tokio::sync::Mutex::new(()),
            scrape_hooks: Mutex::new(Vec::new()),
        })
    }

    /// The registry of the exporter's own metrics, for other families (policy) to join.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs `hook` before every scrape.
    pub fn add_scrape_hook(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.scrape_hooks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Box::new(hook));
    }

    /// Swaps in the snapshot of a complete poll, re-renders, and marks the account up.
    pub async fn publish(&self, snapshot: Snapshot, duration: Duration) -> Arc<Snapshot> {
        let _render_guard = self.render_lock.lock().await;
        let snapshot = Arc::new(snapshot);
        let account = snapshot.account.clone();
        // Render first, with the new snapshot in its account's place, and store the snapshot
        // only afterwards: whoever sees the account ready (or the snapshot) also sees its series.
        let snapshots: Vec<Arc<Snapshot>> = self
            .lock_accounts()
            .iter()
            .filter_map(|entry| {
                if entry.view.name == account {
                    Some(Arc::clone(&snapshot))
                } else {
                    entry.snapshot.clone()
                }
            })
            .collect();
        let rendered = tokio::task::spawn_blocking(move || exposition::render(&snapshots))
            .await
            .expect("rendering does not panic");
        *self
            .rendered
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Arc::new(PublishedKeys::new(rendered));
        if let Some(entry) = self
            .lock_accounts()
            .iter_mut()
            .find(|entry| entry.view.name == account)
        {
            entry.view.keys = Some(snapshot.keys.len());
            entry.view.usable_keys = Some(snapshot.usable_count());
            entry.view.last_success_at = Some(snapshot.completed_at);
            entry.view.last_attempt_at = Some(snapshot.completed_at);
            entry.view.last_duration = Some(duration);
            entry.view.last_error = None;
            entry.view.wallet = snapshot.money.wallet.clone();
            entry.view.quota_per_unit = Some(snapshot.quota_per_unit);
            entry.view.spent_today = snapshot
                .money
                .spend
                .as_ref()
                .map(|spend| spend.total_quota());
            entry.view.active_subscriptions =
                snapshot.money.subscriptions.as_ref().map(|subscriptions| {
                    subscriptions
                        .iter()
                        .filter(|subscription| subscription.status == "active")
                        .count()
                });
            entry.snapshot = Some(Arc::clone(&snapshot));
        }
        self.poll_duration
            .with_label_values(&[&account])
            .observe(duration.as_secs_f64());
        self.last_success
            .with_label_values(&[&account])
            .set(snapshot.completed_at as f64);
        self.up.with_label_values(&[&account]).set(1);
        snapshot
    }

    /// Records a failed or incomplete poll: the previous snapshot stays, `up` goes to 0.
    pub fn record_failure(
        &self,
        account: &str,
        error: &ApiError,
        duration: Duration,
        attempted_at: i64,
    ) {
        let Some(reason) = error.reason() else { return };
        self.poll_errors.with_label_values(&[account, reason]).inc();
        self.poll_duration
            .with_label_values(&[account])
            .observe(duration.as_secs_f64());
        self.up.with_label_values(&[account]).set(0);
        let mut accounts = self.lock_accounts();
        if let Some(entry) = accounts.iter_mut().find(|entry| entry.view.name == account) {
            entry.view.last_attempt_at = Some(attempted_at);
            entry.view.last_duration = Some(duration);
            entry.view.last_error = Some(error.to_string());
        }
    }

    /// Counts the reads that failed inside a complete poll (`usage_failed`,
    /// `subscriptions_failed`); the poll itself is not failed by them.
    pub fn record_partial_failures(&self, account: &str, failures: &[PartialFailure]) {
        for failure in failures {
            self.poll_errors
                .with_label_values(&[account, failure.part.reason()])
                .inc();
        }
    }

    /// What the policy engine did after the account's last complete poll, for `/`; an
    /// evaluation with no outcome keeps the last one that had some.
    pub fn record_policy(&self, account: &str, mut view: PolicyView) {
        if let Some(entry) = self
            .lock_accounts()
            .iter_mut()
            .find(|entry| entry.view.name == account)
        {
            view.last_activity = if view.outcomes.is_empty() {
                entry
                    .view
                    .policy
                    .as_ref()
                    .and_then(|previous| previous.last_activity.clone())
            } else {
                Some((view.evaluated_at, view.outcomes.clone()))
            };
            entry.view.policy = Some(view);
        }
    }

    pub fn count_skipped_tick(&self, account: &str) {
        self.poll_skipped.with_label_values(&[account]).inc();
    }

    /// True once every account has completed at least one poll.
    pub fn is_ready(&self) -> bool {
        self.lock_accounts()
            .iter()
            .all(|entry| entry.snapshot.is_some())
    }

    pub fn account_views(&self) -> Vec<AccountView> {
        self.lock_accounts()
            .iter()
            .map(|entry| entry.view.clone())
            .collect()
    }

    pub fn snapshot(&self, account: &str) -> Option<Arc<Snapshot>> {
        self.lock_accounts()
            .iter()
            .find(|entry| entry.view.name == account)
            .and_then(|entry| entry.snapshot.clone())
    }

    pub fn scrape(&self) -> Scrape {
        let keys = Arc::clone(
            &self
                .rendered
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for hook in self
            .scrape_hooks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
        {
            hook();
        }
        let mut health_text = Vec::with_capacity(4096);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut health_text)
            .expect("encoding into memory cannot fail");
        Scrape { keys, health_text }
    }

    fn lock_accounts(&self) -> std::sync::MutexGuard<'_, Vec<AccountEntry>> {
        self.accounts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RequestObserver for Exporter {
    fn observe_request(&self, account: &str, endpoint: Endpoint, code: &str) {
        self.api_requests
            .with_label_values(&[account, endpoint.label(), code])
            .inc();
    }
}

/// The content type of `/metrics`.
pub fn content_type() -> &'static str {
    prometheus::TEXT_FORMAT
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::KeyState;

    fn snapshot(keys: i64, completed_at: i64) -> Snapshot {
        let keys = (1..=keys).map(KeyState::for_tests).collect();
        Snapshot::new("main", keys, 500_000.0, completed_at)
    }

    #[tokio::test]
    async fn plain_text_is_inflated_once_per_publish_and_only_when_asked() {
        let exporter = Exporter::new(&["main".to_string()]);
        exporter
            .publish(snapshot(500, 1_000), Duration::from_millis(5))
            .await;
        let first = exporter.scrape().keys;
        let _gzip = first.rendered.gzip_parts(b"");
        assert!(!first.holds_plain_text(), "gzip scrapes never inflate");

        let text = first.plain_text().await;
        assert_eq!(text.len() as u64, first.rendered.text_len());
        let again = exporter.scrape().keys.plain_text().await;
        assert_eq!(
            text.as_ptr(),
            again.as_ptr(),
            "a second plain scrape shares the first one's copy"
        );

        exporter
            .publish(snapshot(400, 2_000), Duration::from_millis(5))
            .await;
        let second = exporter.scrape().keys;
        assert!(
            !second.holds_plain_text(),
            "a new poll starts without a plain copy"
        );
        let newer = second.plain_text().await;
        assert_ne!(newer.len(), text.len(), "and serves the new keys");
        let old = Arc::downgrade(&first);
        drop((first, text, again));
        assert!(
            old.upgrade().is_none(),
            "the old render and its plain copy are freed"
        );
    }
}
