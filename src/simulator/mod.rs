//! The simulated management API: an in-process HTTP server that behaves like the newest new-api
//! server (NA-latest in `shared/reference/management-api.md`), quirks included — or, by
//! configuration, like older generations (the legacy auth scheme with `New-Api-User`, the
//! Chinese-only messages before 2026-02-05, unmasked keys) and one-api ([`Flavor::OneApi`]:
//! bare-array listing with a 0-based `p` and 10 keys a page, `models`/`subnet`) — seeded with a
//! deterministic population of keys that holds every edge case, with fault injection and a
//! simulated relay (`consume`) that moves quotas and flips statuses lazily like the real thing.
//!
//! Used by `cometapi-keymon demo`, by the integration tests (over real loopback sockets) and by
//! the benchmarks (up to 100 000 keys; a list page costs O(page)).
//!
//! Layout: `token` (the record and key masking), `seed` (the population), `store` (state,
//! consumption, limiters, faults), `json` (Go-compatible JSON in and out), `routes` (routing, auth,
//! controllers), `server` (hyper plumbing), `random` (SplitMix64).
//!
//! Over 600 lines on purpose: the simulator's settings, presets and test handles are its public
//! face, kept in one file.

mod account;
mod json;
mod random;
mod routes;
mod seed;
mod server;
mod store;
mod token;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use account::{
    hour_bucket, ServerGeneration, SimPlan, SimSubscription, SimWallet, UsageRecord,
    DEFAULT_USER_GROUP, MAX_USAGE_WINDOW_SECONDS, MESSAGE_WINDOW_TOO_LONG,
};
pub use seed::{seed_tokens, FIRST_SEEDED_ID};
pub use token::{
    mask_token_key, SimToken, STATUS_DISABLED, STATUS_ENABLED, STATUS_EXHAUSTED, STATUS_EXPIRED,
};

use account::AccountState;
use random::SplitMix64;
use store::{SharedState, Store};

/// The models the simulated traffic uses (and `consume` charges when no model is named).
pub const SIMULATED_MODELS: [&str; 5] = [
    "gpt-4o-mini",
    "gpt-4.1",
    "claude-sonnet-4",
    "gemini-2.5-flash",
    "deepseek-v3",
];

/// How the server authenticates management requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// new-api ≥ 2026-07-20: raw or `Bearer` (any case) PAT; failures are 401 with a `code`;
    /// `New-Api-User` ignored.
    #[default]
    V2,
    /// new-api 2024-07 … 2026-07-19: only the exact `"Bearer "` is stripped, an unknown PAT is
    /// HTTP 200 `success:false`, `New-Api-User` must equal the owner's id.
    Legacy,
    /// one-api: as `Legacy` without `New-Api-User` (missing header 401, unknown PAT 200).
    OneApi,
}

/// Which server software the simulator imitates, where they differ beyond auth and masking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// new-api ≥ 2025-07-21: the listing is `{page, page_size, total, items}`, `p` 1-based.
    #[default]
    NewApi,
    /// one-api (`OA` in the reference): the listing's `data` is a bare array, `p` is 0-based
    /// (negative is 0), pages hold `config.ItemsPerPage` = 10 keys whatever is asked, records
    /// carry `models`/`subnet` instead of `model_limits*`/`allow_ips`, keys are not masked.
    /// Not reproduced: one-api's own write validation (create and update follow new-api's) and
    /// its `order=` listing parameter.
    OneApi,
}

/// A global per-client-IP limit over every `/api/*` route (`GlobalAPIRateLimit`), sliding log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub window: Duration,
    /// Send `Retry-After: <window seconds>` with the 429 (NA-latest does; older versions don't).
    pub send_retry_after: bool,
}

/// Start-up configuration of a [`Simulator`].
#[derive(Clone, PartialEq)]
pub struct SimulatorConfig {
    /// Size of the seeded population.
    pub keys: usize,
    /// Seed of the population (same seed and clock → same records).
    pub seed: u64,
    /// The personal access token the server accepts.
    pub access_token: String,
    /// Owner of every seeded key, and the user the access token belongs to.
    pub user_id: i64,
    pub auth_mode: AuthMode,
    /// Mask keys in list/get/search/update answers (new-api ≥ 2026-03-08).
    pub mask_keys: bool,
    pub rate_limit: Option<RateLimit>,
    /// Quota units per US dollar, reported by `GET /api/status`; also sets the create/update
    /// maximum (`1e9 × quota_per_unit`).
    pub quota_per_unit: f64,
    /// Create refuses once the owner has this many keys.
    pub max_tokens_per_user: usize,
    /// With Redis the server never writes the lazy status flips (3/4).
    pub redis_mode: bool,
    pub flavor: Flavor,
    /// Every message in Chinese whatever `Accept-Language` says: new-api before i18n
    /// (2026-02-05) and one-api.
    pub chinese_messages: bool,
    /// Which account routes exist and their shapes (reference §13).
    pub generation: ServerGeneration,
    /// The wallet (`/api/user/self` `quota`) at start, in quota units.
    pub wallet_quota: i64,
    /// How long a relay request takes to show up in `/api/data/*` (the real server flushes every
    /// 5 minutes; 0 makes tests exact).
    pub usage_recording_lag: Duration,
}

impl SimulatorConfig {
    /// one-api (`songquanpeng/one-api` 2025-02): bare-array listing, its auth, Chinese messages,
    /// full keys.
    pub fn one_api() -> SimulatorConfig {
        SimulatorConfig {
            auth_mode: AuthMode::OneApi,
            mask_keys: false,
            flavor: Flavor::OneApi,
            chinese_messages: true,
            generation: ServerGeneration::OneApi,
            ..SimulatorConfig::default()
        }
    }

    /// new-api of early 2026 (NA-2026-01): paginated listing, the legacy auth scheme
    /// (`New-Api-User` required, unknown token HTTP 200), Chinese messages, full keys.
    pub fn new_api_2026_01() -> SimulatorConfig {
        SimulatorConfig {
            auth_mode: AuthMode::Legacy,
            mask_keys: false,
            chinese_messages: true,
            generation: ServerGeneration::NewApiBeforeSubscriptions,
            ..SimulatorConfig::default()
        }
    }
}

impl Default for SimulatorConfig {
    fn default() -> SimulatorConfig {
        SimulatorConfig {
            keys: 1_200,
            seed: 7,
            access_token: SplitMix64::from_entropy().alphanumeric(32),
            user_id: 5678,
            auth_mode: AuthMode::V2,
            mask_keys: true,
            rate_limit: None,
            quota_per_unit: 500_000.0,
            max_tokens_per_user: 1_000,
            redis_mode: false,
            flavor: Flavor::NewApi,
            chinese_messages: false,
            generation: ServerGeneration::default(),
            wallet_quota: 250_000_000,
            usage_recording_lag: Duration::ZERO,
        }
    }
}

impl fmt::Debug for SimulatorConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SimulatorConfig")
            .field("keys", &self.keys)
            .field("seed", &self.seed)
            .field("access_token", &"**redacted**")
            .field("user_id", &self.user_id)
            .field("auth_mode", &self.auth_mode)
            .field("mask_keys", &self.mask_keys)
            .field("rate_limit", &self.rate_limit)
            .field("quota_per_unit", &self.quota_per_unit)
            .field("max_tokens_per_user", &self.max_tokens_per_user)
            .field("redis_mode", &self.redis_mode)
            .field("flavor", &self.flavor)
            .field("chinese_messages", &self.chinese_messages)
            .field("generation", &self.generation)
            .field("wallet_quota", &self.wallet_quota)
            .field("usage_recording_lag", &self.usage_recording_lag)
            .finish()
    }
}

/// One HTTP request the simulator received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The raw (not percent-decoded) path.
    pub path: String,
    pub query: Option<String>,
    /// The request body (lossy UTF-8).
    pub body: String,
    pub authorization_present: bool,
    pub new_api_user: Option<String>,
    /// The status answered; 0 when the connection was dropped on purpose (`CloseConnection`).
    pub status: u16,
    /// When the request arrived.
    pub at: Instant,
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultEndpoint {
    /// Every routed `/api` request (including search and key reveal).
    Any,
    /// `GET /api/token/`.
    List,
    /// `GET /api/status`.
    Status,
    /// `GET /api/token/:id`.
    Get,
    /// `POST /api/token/`.
    Create,
    /// `PUT /api/token/`.
    Update,
    /// `DELETE /api/token/:id` and `POST /api/token/batch`.
    Delete,
    /// `GET /api/user/self`.
    User,
    /// `GET /api/data/self`.
    HourlyUsage,
    /// `GET /api/data/flow/self`.
    FlowUsage,
    /// `GET /api/subscription/self`.
    Subscriptions,
    /// `GET /api/subscription/plans`.
    Plans,
}

/// How many matching requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTimes {
    Once,
    Times(u32),
    /// Until `clear_faults()`.
    Always,
}

/// What happens to a matching request.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Answer this status and body (`Content-Type` guessed from the body: JSON, HTML or text;
    /// none when empty) and optionally `Retry-After`.
    HttpStatus {
        status: u16,
        body: String,
        retry_after: Option<u64>,
    },
    /// Sleep, then answer normally.
    Delay(Duration),
    /// 200 with a JSON content type and a body that is not JSON.
    MalformedJson,
    /// 200 with valid JSON of the wrong shape (`"items":"nope"`, string numbers).
    WrongShape,
    /// The normal answer with its full `Content-Length` declared, but only the first half sent
    /// before the connection is closed.
    TruncatedBody,
    /// 200 with a body of exactly `bytes` bytes, streamed (valid JSON if `bytes` ≥ 90).
    Oversized { bytes: usize },
    /// 200 `{"message":…,"success":false}`.
    SuccessFalse { message: String },
    /// Read the request, then close the connection without answering.
    CloseConnection,
    /// Answer normally, then soft-delete the `delete` oldest keys and create `create` new ones,
    /// so the offsets of the next page shift.
    Churn { create: usize, delete: usize },
}

/// A fault to inject; checked after routing and authentication.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub endpoint: FaultEndpoint,
    /// Only list requests whose parsed `p` equals this.
    pub page: Option<i64>,
    pub times: FaultTimes,
    pub kind: FaultKind,
}

/// Why a simulated relay request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayRejection {
    /// Status 2 or any value other than 1, 3, 4.
    Disabled,
    /// Status 3, or past `expired_time` (flips the status to 3 unless `redis_mode`).
    Expired,
    /// Status 4, or a limited key with `remain_quota <= 0` (flips to 4 unless `redis_mode`).
    Exhausted,
    /// The key is fine but the account's wallet is at or below 0 ("user quota is not enough").
    WalletEmpty,
    NotFound,
}

/// The configuration the request path reads (immutable after start).
pub(crate) struct Settings {
    pub(crate) access_token: String,
    pub(crate) user_id: i64,
    pub(crate) auth_mode: AuthMode,
    pub(crate) mask_keys: bool,
    pub(crate) quota_per_unit: f64,
    pub(crate) max_tokens_per_user: usize,
    pub(crate) redis_mode: bool,
    pub(crate) flavor: Flavor,
    pub(crate) chinese_messages: bool,
    pub(crate) generation: ServerGeneration,
    pub(crate) server_address: String,
    pub(crate) started_at: i64,
}

impl Settings {
    /// `int(1000000000 * common.QuotaPerUnit)`.
    pub(crate) fn max_quota(&self) -> i64 {
        (1_000_000_000.0 * self.quota_per_unit) as i64
    }

    #[cfg(test)]
    pub(crate) fn for_tests(generation: ServerGeneration) -> Settings {
        Settings {
            access_token: "t".into(),
            user_id: 5,
            auth_mode: AuthMode::V2,
            mask_keys: true,
            quota_per_unit: 500_000.0,
            max_tokens_per_user: 1_000,
            redis_mode: false,
            flavor: Flavor::NewApi,
            chinese_messages: false,
            generation,
            server_address: "http://127.0.0.1:1".into(),
            started_at: 0,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) settings: Settings,
    state: Mutex<SharedState>,
    pub(crate) shutdown: CancellationToken,
    address: SocketAddr,
    seed: u64,
    /// Seconds added to the real clock (tests move the server across midnight).
    clock_offset: AtomicI64,
}

impl Inner {
    /// The server's clock: unix seconds plus the offset tests set.
    pub(crate) fn now(&self) -> i64 {
        unix_now() + self.clock_offset.load(Ordering::SeqCst)
    }

    /// The state lock; a poisoned lock is recovered (the state stays usable for a simulator).
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, SharedState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Current unix time in seconds.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// `address` with a wildcard IP (`0.0.0.0`, `::`) replaced by loopback.
fn connectable(address: SocketAddr) -> SocketAddr {
    let mut address = address;
    if address.ip().is_unspecified() {
        address.set_ip(match address.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    address
}

/// A running simulated server. Cheap to clone; every clone controls the same server.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
    server_task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Simulator")
            .field("address", &self.inner.address)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Seeds the population and starts serving on `listen` (`127.0.0.1:0` picks a free port).
    pub async fn start(config: SimulatorConfig, listen: SocketAddr) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(listen).await?;
        let address = listener.local_addr()?;
        let now = unix_now();
        let seeded = seed_tokens(&config, now);
        let first_free_id = FIRST_SEEDED_ID + seeded.len() as i64;
        let seeded_used_quota = seeded.iter().map(|token| token.used_quota.max(0)).sum();
        let account = AccountState::seeded(
            config.user_id,
            config.wallet_quota,
            seeded_used_quota,
            i64::try_from(config.usage_recording_lag.as_secs()).unwrap_or(i64::MAX),
            now,
        );
        let state = SharedState::new(
            Store::new(seeded, first_free_id),
            account,
            config.rate_limit,
        );
        let inner = Arc::new(Inner {
            settings: Settings {
                access_token: config.access_token,
                user_id: config.user_id,
                auth_mode: config.auth_mode,
                mask_keys: config.mask_keys,
                quota_per_unit: config.quota_per_unit,
                max_tokens_per_user: config.max_tokens_per_user,
                redis_mode: config.redis_mode,
                flavor: config.flavor,
                chinese_messages: config.chinese_messages,
                generation: config.generation,
                server_address: format!("http://{}", connectable(address)),
                started_at: now,
            },
            state: Mutex::new(state),
            shutdown: CancellationToken::new(),
            address,
            seed: config.seed,
            clock_offset: AtomicI64::new(0),
        });
        let task = tokio::spawn(server::serve(
            listener,
            inner.clone(),
            inner.shutdown.clone(),
        ));
        Ok(Simulator {
            inner,
            server_task: Arc::new(Mutex::new(Some(task))),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.address
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash (a wildcard listen address is replaced
    /// by the loopback address of the same family, so the URL is always connectable).
    pub fn base_url(&self) -> String {
        format!("http://{}", connectable(self.inner.address))
    }

    pub fn access_token(&self) -> String {
        self.inner.settings.access_token.clone()
    }

    pub fn quota_per_unit(&self) -> f64 {
        self.inner.settings.quota_per_unit
    }

    /// Every live record (all owners), full keys, ascending id.
    pub fn tokens(&self) -> Vec<SimToken> {
        self.inner.lock_state().store.all().cloned().collect()
    }

    pub fn token(&self, id: i64) -> Option<SimToken> {
        self.inner.lock_state().store.get(id).cloned()
    }

    /// Inserts a record directly (no API checks, no defaults except: an empty `key` gets a fresh
    /// generated one). `token.id` is ignored; the new id is returned. `user_id` is kept as given,
    /// so a record of another user is invisible to the API, like on the real server.
    pub fn insert_token(&self, token: SimToken) -> i64 {
        self.inner.lock_state().store.insert(token)
    }

    /// Edits a record directly; `false` when there is no live record `id`. The id cannot change.
    pub fn update_token(&self, id: i64, edit: impl FnOnce(&mut SimToken)) -> bool {
        self.inner.lock_state().store.edit(id, edit)
    }

    /// Soft-deletes a record (the id is never reused).
    pub fn delete_token(&self, id: i64) -> bool {
        self.inner.lock_state().store.remove(id)
    }

    /// One simulated relay request on key `id` costing `quota` (negative = refund), with the
    /// server's runtime rules: see [`RelayRejection`]; the overdrawing request is admitted,
    /// unlimited keys are decremented too.
    ///
    /// The wallet is charged together with the key, and the request is recorded for
    /// `/api/data/*` (while the data export is on) under the first of [`SIMULATED_MODELS`] with
    /// a token count of a tenth of the quota.
    pub fn consume(&self, id: i64, quota: i64) -> Result<(), RelayRejection> {
        self.consume_model(id, SIMULATED_MODELS[0], quota, quota.max(0) / 10)
    }

    /// [`consume`](Self::consume) on a named model with a token count.
    pub fn consume_model(
        &self,
        id: i64,
        model: &str,
        quota: i64,
        tokens: i64,
    ) -> Result<(), RelayRejection> {
        let redis_mode = self.inner.settings.redis_mode;
        let now = self.inner.now();
        self.inner
            .lock_state()
            .relay(id, model, quota, tokens, now, redis_mode)
    }

    /// The server's clock (unix seconds plus the offset set with `set_clock_offset`).
    pub fn now(&self) -> i64 {
        self.inner.now()
    }

    /// Moves the server's clock: every later request, relay call and usage record uses real time
    /// plus `seconds`.
    pub fn set_clock_offset(&self, seconds: i64) {
        self.inner.clock_offset.store(seconds, Ordering::SeqCst);
    }

    pub fn generation(&self) -> ServerGeneration {
        self.inner.settings.generation
    }

    /// The account's wallet as `/api/user/self` reports it.
    pub fn wallet(&self) -> SimWallet {
        self.inner.lock_state().account.wallet.clone()
    }

    pub fn update_wallet(&self, edit: impl FnOnce(&mut SimWallet)) {
        edit(&mut self.inner.lock_state().account.wallet);
    }

    /// Every usage record (flushed or not), in the order they were written.
    pub fn usage_records(&self) -> Vec<UsageRecord> {
        self.inner.lock_state().account.usage.clone()
    }

    /// Writes a usage record directly (any time, any group; an empty `use_group` imitates rows
    /// written before the column existed). The wallet is not charged.
    pub fn record_usage(&self, record: UsageRecord) {
        self.inner.lock_state().account.usage.push(record);
    }

    /// `DataExportEnabled`: while off, relay requests are not recorded for `/api/data/*`.
    pub fn set_data_export(&self, enabled: bool) {
        self.inner.lock_state().account.data_export = enabled;
    }

    pub fn plans(&self) -> Vec<SimPlan> {
        self.inner.lock_state().account.plans.clone()
    }

    /// Whether `/api/subscription/plans` lists the plans (servers ≥ 2026-05-13 answer `[]` until
    /// the admin confirms payment compliance).
    pub fn set_plans_listed(&self, listed: bool) {
        self.inner.lock_state().account.plans_listed = listed;
    }

    pub fn subscriptions(&self) -> Vec<SimSubscription> {
        self.inner.lock_state().account.subscriptions.clone()
    }

    /// Edits the subscription `id`; `false` when there is none.
    pub fn update_subscription(&self, id: i64, edit: impl FnOnce(&mut SimSubscription)) -> bool {
        let mut state = self.inner.lock_state();
        match state
            .account
            .subscriptions
            .iter_mut()
            .find(|subscription| subscription.id == id)
        {
            Some(subscription) => {
                edit(subscription);
                true
            }
            None => false,
        }
    }

    /// Every HTTP request received, in the order they were answered.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.lock_state().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.inner.lock_state().requests.clear();
    }

    /// Queues a fault; queued faults are tried in the order they were pushed.
    pub fn push_fault(&self, fault: Fault) {
        self.inner.lock_state().push_fault(fault);
    }

    pub fn clear_faults(&self) {
        self.inner.lock_state().faults.clear();
    }

    /// Replaces the global rate limit and forgets the requests counted so far.
    pub fn set_rate_limit(&self, rate_limit: Option<RateLimit>) {
        let mut state = self.inner.lock_state();
        state.rate_limit = rate_limit;
        state.global_limiter.clear();
    }

    /// Background traffic for `demo`: every `every`, consumes a little quota from three random
    /// keys of the owner and, on every tenth tick, refunds a little to one. The hand-made
    /// edge-case records at the start of the population are left alone (unless nothing else
    /// exists), so the demo keeps showing them. Stops when `shutdown` is cancelled or the server
    /// shuts down; the handle finishes once the task has stopped (no charge after that). Must be
    /// called inside a Tokio runtime.
    pub fn spawn_traffic(
        &self,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        let every = every.max(Duration::from_millis(1));
        let first_ordinary_id = FIRST_SEEDED_ID + seed::edge_case_count() as i64;
        tokio::spawn(async move {
            let mut generator = SplitMix64::new(inner.seed ^ 0x7472_6166_6669_6321);
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut tick: u64 = 0;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = inner.shutdown.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                tick += 1;
                let now = inner.now();
                let redis_mode = inner.settings.redis_mode;
                let mut state = inner.lock_state();
                let all_ids = state.store.ids_for_user(inner.settings.user_id);
                let ordinary_start = all_ids.partition_point(|id| *id < first_ordinary_id);
                let candidates = if ordinary_start < all_ids.len() {
                    &all_ids[ordinary_start..]
                } else {
                    all_ids
                };
                if candidates.is_empty() {
                    continue;
                }
                let mut chosen: Vec<(i64, &str, i64)> = (0..3)
                    .map(|_| {
                        (
                            *generator.pick(candidates),
                            *generator.pick(&SIMULATED_MODELS),
                            generator.between(100, 20_000),
                        )
                    })
                    .collect();
                if tick.is_multiple_of(10) {
                    chosen.push((
                        *generator.pick(candidates),
                        SIMULATED_MODELS[0],
                        -generator.between(50, 5_000),
                    ));
                }
                for (id, model, quota) in chosen {
                    // A refused relay request is part of the traffic, not an error.
                    let tokens = quota.max(0) / 10;
                    let _ = state.relay(id, model, quota, tokens, now, redis_mode);
                }
            }
        })
    }

    /// Stops accepting, closes the listener, and waits (up to a few seconds) for open
    /// connections to finish.
    pub async fn shutdown(self) {
        self.inner.shutdown.cancel();
        let task = self
            .server_task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
