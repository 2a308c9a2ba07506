//! The account's own routes (reference §13) and how one poll reads them.
//!
//! After the key listing, a poll reads at most one request each of: the wallet
//! (`/api/user/self`), today's spend (`/api/data/flow/self`, or `/api/data/self` on servers
//! without it) and the subscriptions (`/api/subscription/self`); the plan titles
//! (`/api/subscription/plans`) at most once an hour. So a complete poll of N keys costs
//! `ceil(N/100)` list pages plus [`REQUESTS_PER_POLL_BEYOND_PAGES`] (status, wallet, usage,
//! subscriptions), plus one plans read in at most one poll an hour, and never more (a re-scan of
//! a listing that changed under the scan aside).
//!
//! A 404 means the server does not have the route: nothing to export, one info log line, and
//! the poll goes on. The wallet is part of a complete poll: its failure fails the poll. The spend
//! and the subscriptions are not: their failure is returned as a [`PartialFailure`] and the part
//! keeps the previous poll's values (the spend only within the same UTC day).
//!
//! The spend window is 00:00 UTC today → `now`. A usage route that answered 404 is asked again
//! only after an hour; when the flow route is absent the next poll reads `/api/data/self`
//! instead (never both in one poll, so the count above holds).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use reqwest::Method;
use serde::de::DeserializeOwned;

use crate::account::{
    with_plan_titles, AccountMoney, DailySpend, KeyModelSpend, ModelSpend, Subscription, Wallet,
};
use crate::api::error::{ApiError, Endpoint};
use crate::api::wire::{FlowRow, HourlyRow, PlanItem, SubscriptionSelf, UserSelf};
use crate::api::ApiClient;
use crate::clock::utc_day_start;

/// Requests of a complete poll beyond the list pages: status, wallet, usage, subscriptions.
pub const REQUESTS_PER_POLL_BEYOND_PAGES: u32 = 4;
/// A usage route that answered 404 is asked again after this long (the server may be upgraded).
pub const ABSENT_ROUTE_RECHECK_SECONDS: i64 = 3_600;
/// Plan titles change rarely; they are read at most this often.
pub const PLAN_TITLES_MAX_AGE_SECONDS: i64 = 3_600;

/// The parts of the money read whose failure does not fail the poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoneyPart {
    Usage,
    Subscriptions,
}

impl MoneyPart {
    /// The `reason` of `cometapi_poll_errors_total` (see `PARTIAL_READ_REASONS`).
    pub fn reason(self) -> &'static str {
        match self {
            MoneyPart::Usage => "usage_failed",
            MoneyPart::Subscriptions => "subscriptions_failed",
        }
    }
}

/// A read that failed inside a poll that still completes.
#[derive(Debug)]
pub struct PartialFailure {
    pub part: MoneyPart,
    pub error: ApiError,
}

/// The result of one poll's money read.
#[derive(Debug)]
pub struct AccountMoneyRead {
    pub money: AccountMoney,
    /// HTTP requests made (404 answers included, retries not).
    pub requests: u32,
    pub failures: Vec<PartialFailure>,
}

/// What an account's earlier polls learned about its server: absent routes, plan titles, what
/// was already logged. One per account, kept across polls.
#[derive(Debug, Default)]
pub struct AccountRouteMemory {
    absent_since: HashMap<Endpoint, i64>,
    absence_logged: HashSet<Endpoint>,
    plan_titles: Option<(i64, HashMap<i64, String>)>,
    data_export_off_logged: bool,
}

impl AccountRouteMemory {
    fn is_absent(&self, endpoint: Endpoint, now: i64) -> bool {
        self.absent_since
            .get(&endpoint)
            .is_some_and(|since| now - since < ABSENT_ROUTE_RECHECK_SECONDS)
    }

    fn was_absent(&self, endpoint: Endpoint) -> bool {
        self.absent_since.contains_key(&endpoint)
    }

    fn mark_absent(&mut self, account: &str, endpoint: Endpoint, now: i64) {
        self.absent_since.insert(endpoint, now);
        if self.absence_logged.insert(endpoint) {
            tracing::info!(
                account = %account, route = endpoint.describe(),
                "the server has no such route (404); its metrics are not exported"
            );
        }
    }

    fn mark_present(&mut self, account: &str, endpoint: Endpoint) {
        self.absent_since.remove(&endpoint);
        if self.absence_logged.remove(&endpoint) {
            tracing::info!(account = %account, route = endpoint.describe(), "the route answers now");
        }
    }
}

impl ApiClient {
    /// `data` of a GET, `None` when the route does not exist (404). A `null` data of a list
    /// route (a Go nil slice) is an empty list.
    async fn optional_data<T: DeserializeOwned + Default>(
        &self,
        endpoint: Endpoint,
        path: &str,
    ) -> Result<Option<T>, ApiError> {
        match self.execute(endpoint, Method::GET, path, None).await {
            Ok(bytes) => Ok(Some(
                self.decode_envelope::<T>(endpoint, &bytes)?
                    .unwrap_or_default(),
            )),
            Err(ApiError::Http { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `GET /api/user/self`; `None` when the server has no such route.
    pub async fn wallet(&self) -> Result<Option<Wallet>, ApiError> {
        let path = "/api/user/self";
        match self.execute(Endpoint::User, Method::GET, path, None).await {
            Ok(bytes) => {
                let user = self
                    .decode_envelope::<UserSelf>(Endpoint::User, &bytes)?
                    .ok_or_else(|| ApiError::Decode {
                        endpoint: Endpoint::User,
                        detail: "success without data".into(),
                    })?;
                Ok(Some(Wallet::from(user)))
            }
            Err(ApiError::Http { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `GET /api/data/flow/self` over `[start, end]`: the sums by key, group and model.
    pub async fn spend_by_key_and_model(
        &self,
        start: i64,
        end: i64,
    ) -> Result<Option<Vec<KeyModelSpend>>, ApiError> {
        let path = format!("/api/data/flow/self?start_timestamp={start}&end_timestamp={end}");
        let rows: Option<Vec<FlowRow>> = self.optional_data(Endpoint::Usage, &path).await?;
        Ok(rows.map(|rows| rows.into_iter().map(KeyModelSpend::from).collect()))
    }

    /// `GET /api/data/self` over `[start, end]`: the hourly buckets, one entry per row.
    pub async fn spend_by_model(
        &self,
        start: i64,
        end: i64,
    ) -> Result<Option<Vec<ModelSpend>>, ApiError> {
        let path = format!("/api/data/self?start_timestamp={start}&end_timestamp={end}");
        let rows: Option<Vec<HourlyRow>> = self.optional_data(Endpoint::UsageHourly, &path).await?;
        Ok(rows.map(|rows| rows.into_iter().map(ModelSpend::from).collect()))
    }

    /// `GET /api/subscription/self` (every subscription, titles not filled in).
    pub async fn subscriptions(&self) -> Result<Option<Vec<Subscription>>, ApiError> {
        let path = "/api/subscription/self";
        match self
            .execute(Endpoint::Subscriptions, Method::GET, path, None)
            .await
        {
            Ok(bytes) => {
                let data =
                    self.decode_envelope::<SubscriptionSelf>(Endpoint::Subscriptions, &bytes)?;
                Ok(Some(
                    data.map(SubscriptionSelf::into_subscriptions)
                        .unwrap_or_default(),
                ))
            }
            Err(ApiError::Http { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `GET /api/subscription/plans`: title by plan id.
    pub async fn plan_titles(&self) -> Result<Option<HashMap<i64, String>>, ApiError> {
        let plans: Option<Vec<PlanItem>> = self
            .optional_data(Endpoint::Plans, "/api/subscription/plans")
            .await?;
        Ok(plans.map(|plans| {
            plans
                .into_iter()
                .map(|item| (item.plan.id, item.plan.title))
                .collect()
        }))
    }
}

/// Reads the account's money after a complete listing, as the module doc describes.
/// `previous` is the money of the account's last complete poll; `data_export_enabled` what
/// `/api/status` said. `Err` only when the wallet read failed (the poll fails).
pub async fn read_account_money(
    client: &ApiClient,
    memory: &Mutex<AccountRouteMemory>,
    previous: Option<&AccountMoney>,
    now: i64,
    usage_enabled: bool,
    data_export_enabled: Option<bool>,
) -> Result<AccountMoneyRead, ApiError> {
    let account = client.account();
    let remember = |update: &mut dyn FnMut(&mut AccountRouteMemory)| {
        update(
            &mut memory
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
    };
    let mut requests = 1;
    let wallet = client.wallet().await?;
    remember(&mut |memory| match wallet {
        Some(_) => memory.mark_present(account, Endpoint::User),
        None => memory.mark_absent(account, Endpoint::User, now),
    });
    let mut failures = Vec::new();

    let day_start = utc_day_start(now);
    let kept_spend = || {
        previous
            .and_then(|money| money.spend_of_day(day_start))
            .cloned()
    };
    let (ask_flow, ask_hourly, hourly_known) = {
        let mut memory = memory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if data_export_enabled == Some(false) && usage_enabled {
            if !memory.data_export_off_logged {
                memory.data_export_off_logged = true;
                tracing::info!(account = %account, "the server's data export is off; no spend by key and model is exported");
            }
        } else {
            memory.data_export_off_logged = false;
        }
        let wanted = usage_enabled && data_export_enabled != Some(false);
        let flow = wanted && !memory.is_absent(Endpoint::Usage, now);
        let hourly = wanted && !flow && !memory.is_absent(Endpoint::UsageHourly, now);
        let hourly_known = memory.was_absent(Endpoint::Usage)
            && !memory.was_absent(Endpoint::UsageHourly)
            && previous.is_some_and(|money| money.spend.is_some());
        (flow, hourly, hourly_known)
    };
    let spend = if ask_flow {
        requests += 1;
        match client.spend_by_key_and_model(day_start, now).await {
            Ok(Some(rows)) => {
                remember(&mut |memory| memory.mark_present(account, Endpoint::Usage));
                Some(DailySpend::by_key_and_model(day_start, now, rows))
            }
            Ok(None) => {
                remember(&mut |memory| memory.mark_absent(account, Endpoint::Usage, now));
                // A re-check of a server known to have only the hourly route keeps its values.
                hourly_known.then(kept_spend).flatten()
            }
            Err(ApiError::Cancelled) => return Err(ApiError::Cancelled),
            Err(error) => {
                failures.push(PartialFailure {
                    part: MoneyPart::Usage,
                    error,
                });
                kept_spend()
            }
        }
    } else if ask_hourly {
        requests += 1;
        match client.spend_by_model(day_start, now).await {
            Ok(Some(rows)) => {
                remember(&mut |memory| memory.mark_present(account, Endpoint::UsageHourly));
                Some(DailySpend::by_model(day_start, now, rows))
            }
            Ok(None) => {
                remember(&mut |memory| memory.mark_absent(account, Endpoint::UsageHourly, now));
                None
            }
            Err(ApiError::Cancelled) => return Err(ApiError::Cancelled),
            Err(error) => {
                failures.push(PartialFailure {
                    part: MoneyPart::Usage,
                    error,
                });
                kept_spend()
            }
        }
    } else {
        // Usage off, the data export off, or both routes absent (asked again within the hour).
        None
    };

    let kept_subscriptions = || previous.and_then(|money| money.subscriptions.clone());
    // After a 429 the budget waits out the server's Retry-After: asking more in this poll would
    // only hold the poll up (or be refused again), so the subscriptions keep their values.
    let rate_limited = failures
        .iter()
        .any(|failure| matches!(failure.error, ApiError::Http { status: 429, .. }));
    let subscriptions = if rate_limited {
        kept_subscriptions()
    } else {
        requests += 1;
        read_subscriptions(client, memory, now, &mut requests, &mut failures)
            .await?
            .unwrap_or_else(kept_subscriptions)
    };
    for failure in &failures {
        tracing::warn!(
            account = %account, part = failure.part.reason(), reason = failure.error.reason().unwrap_or("none"),
            error = %failure.error, "read failed; the poll completes and this part keeps its last values"
        );
    }
    Ok(AccountMoneyRead {
        money: AccountMoney {
            wallet,
            spend,
            subscriptions,
        },
        requests,
        failures,
    })
}

/// The subscriptions with their plan titles: `Ok(Some(value))` read (`None` inside: the server
/// has no such route), `Ok(None)` failed (pushed to `failures`; the caller keeps the old ones).
async fn read_subscriptions(
    client: &ApiClient,
    memory: &Mutex<AccountRouteMemory>,
    now: i64,
    requests: &mut u32,
    failures: &mut Vec<PartialFailure>,
) -> Result<Option<Option<Vec<Subscription>>>, ApiError> {
    let account = client.account();
    let remember = |update: &mut dyn FnMut(&mut AccountRouteMemory)| {
        update(
            &mut memory
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
    };
    Ok(match client.subscriptions().await {
        Ok(Some(subscriptions)) => {
            remember(&mut |memory| memory.mark_present(account, Endpoint::Subscriptions));
            let (titles, plans_requests, plans_failure) =
                plan_titles(client, memory, &subscriptions, now).await?;
            *requests += plans_requests;
            failures.extend(plans_failure);
            Some(Some(with_plan_titles(subscriptions, &titles)))
        }
        Ok(None) => {
            remember(&mut |memory| memory.mark_absent(account, Endpoint::Subscriptions, now));
            Some(None)
        }
        Err(ApiError::Cancelled) => return Err(ApiError::Cancelled),
        Err(error) => {
            failures.push(PartialFailure {
                part: MoneyPart::Subscriptions,
                error,
            });
            None
        }
    })
}

/// The plan titles: the cached ones while fresh (or when no subscription names a plan), else one
/// read of `/api/subscription/plans`. A failed read keeps the cached titles.
async fn plan_titles(
    client: &ApiClient,
    memory: &Mutex<AccountRouteMemory>,
    subscriptions: &[Subscription],
    now: i64,
) -> Result<(HashMap<i64, String>, u32, Option<PartialFailure>), ApiError> {
    let cached = memory
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .plan_titles
        .clone();
    let fresh = cached
        .as_ref()
        .is_some_and(|(read_at, _)| now - read_at < PLAN_TITLES_MAX_AGE_SECONDS);
    let cached_titles = cached.map(|(_, titles)| titles).unwrap_or_default();
    if fresh || subscriptions.is_empty() {
        return Ok((cached_titles, 0, None));
    }
    match client.plan_titles().await {
        Ok(titles) => {
            let titles = titles.unwrap_or_default();
            memory
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .plan_titles = Some((now, titles.clone()));
            Ok((titles, 1, None))
        }
        Err(ApiError::Cancelled) => Err(ApiError::Cancelled),
        Err(error) => Ok((
            cached_titles,
            1,
            Some(PartialFailure {
                part: MoneyPart::Subscriptions,
                error,
            }),
        )),
    }
}
