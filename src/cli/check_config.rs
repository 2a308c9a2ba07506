//! `cometapi-keymon check-config`: validates the configuration and prints the effective values
//! with every secret redacted (the web config too: no hash, no key); warnings go to stderr.
//! `--online` then reaches every account —
//! one `GET /api/status`, one list page, and one GET per optional route — and reports whether
//! it is reachable, whether the token is accepted, whether `user_id` is needed, what server
//! generation it looks like, and what a poll costs at the request budget; exit 1 when any
//! account fails. `--token-file` reads an account's token from another path, so a configuration
//! whose token exists only inside the service (a systemd credential) can be checked beforehand.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::report::plural;
use super::shared::{apply_web_config_flag, print_then, runtime};
use crate::api::budget::time_from_full_budget;
use crate::api::scan::PAGE_SIZE;
use crate::api::{
    ApiClient, ApiError, AuthProblem, IgnoreRequests, ListingProbe, RouteAnswer,
    REQUESTS_PER_POLL_BEYOND_PAGES,
};
use crate::clock::unix_now;
use crate::config::{self, AccountConfig, Config, TokenFileOverride};

pub fn run(
    path: Option<PathBuf>,
    web_config_file: Option<PathBuf>,
    online: bool,
    token_files: &[String],
) -> ExitCode {
    let overrides = match parse_token_files(token_files) {
        Ok(overrides) => overrides,
        Err(message) => {
            eprintln!("cometapi-keymon: {message}");
            return ExitCode::from(2);
        }
    };
    let mut config = match config::load_with_token_files(path.as_deref(), &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("cometapi-keymon: {error}");
            return ExitCode::from(2);
        }
    };
    if let Err(code) = apply_web_config_flag(&mut config, web_config_file) {
        return code;
    }
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    let rendered = config.render_redacted();
    if !online {
        return print_then(&rendered, ExitCode::SUCCESS);
    }
    let checks = runtime().block_on(check_every_account(&config));
    let mut text = rendered;
    text.push_str("\n# online check\n");
    let mut failed = false;
    for (account, check) in config.accounts.iter().zip(&checks) {
        text.push_str(&check.report(account));
        if let Some(error) = check.failure() {
            eprintln!("cometapi-keymon: account {}: {error}", account.name);
            failed = true;
        }
    }
    print_then(
        &text,
        if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// `[ACCOUNT=]PATH`; a relative PATH is taken from the current directory, as a shell user
/// expects of a command-line path.
fn parse_token_files(values: &[String]) -> Result<Vec<TokenFileOverride>, String> {
    values
        .iter()
        .map(|value| {
            let (account, path) = match value.split_once('=') {
                Some((account, path)) if !account.is_empty() && !account.contains('/') => {
                    (Some(account.to_owned()), path)
                }
                _ => (None, value.as_str()),
            };
            if path.is_empty() {
                return Err(format!("--token-file {value:?}: no path"));
            }
            let path = Path::new(path);
            let path = if path.is_absolute() {
                path.to_path_buf()
            } else {
                std::env::current_dir()
                    .map_err(|error| format!("--token-file: no current directory: {error}"))?
                    .join(path)
            };
            Ok(TokenFileOverride { account, path })
        })
        .collect()
}

/// The optional routes, by what they hold and since when servers have them (reference §13).
const OPTIONAL_ROUTES: [(&str, &str); 4] = [
    ("wallet", "/api/user/self"),
    ("usage", "/api/data/self"),
    ("spend by key", "/api/data/flow/self"),
    ("subscriptions", "/api/subscription/self"),
];

/// What the online check learned about one account.
#[derive(Debug)]
struct AccountCheck {
    /// `GET /api/status`: `quota_per_unit`, or why the server could not be reached.
    status: Result<f64, ApiError>,
    /// The list page, when the server was reached.
    listing: Option<Result<ListingProbe, ApiError>>,
    legacy_auth: bool,
    routes: Vec<(&'static str, &'static str, RouteAnswer)>,
}

async fn check_every_account(config: &Config) -> Vec<AccountCheck> {
    let cancel = CancellationToken::new();
    let mut checks = tokio::task::JoinSet::new();
    for (index, account) in config.accounts.iter().enumerate() {
        let settings = config::client_settings(account, &config.poll);
        let client = ApiClient::new(settings, Arc::new(IgnoreRequests), cancel.clone());
        checks.spawn(async move {
            let check = match client {
                Ok(client) => check_account(&client).await,
                Err(error) => AccountCheck {
                    status: Err(ApiError::Decode {
                        endpoint: crate::api::Endpoint::Status,
                        detail: error.reason,
                    }),
                    listing: None,
                    legacy_auth: false,
                    routes: Vec::new(),
                },
            };
            (index, check)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = checks.join_next().await {
        results.push(joined.expect("a check does not panic"));
    }
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, check)| check).collect()
}

async fn check_account(client: &ApiClient) -> AccountCheck {
    let status = client.quota_per_unit().await;
    if status.is_err() {
        return AccountCheck {
            status,
            listing: None,
            legacy_auth: false,
            routes: Vec::new(),
        };
    }
    let listing = client.probe_listing().await;
    let mut routes = Vec::new();
    if listing.is_ok() {
        let now = unix_now();
        for (label, route) in OPTIONAL_ROUTES {
            let path = if route.starts_with("/api/data/") {
                format!(
                    "{route}?start_timestamp={}&end_timestamp={now}",
                    now - 3_600
                )
            } else {
                route.to_owned()
            };
            routes.push((label, route, client.route_exists(&path).await));
        }
    }
    AccountCheck {
        status,
        listing: Some(listing),
        legacy_auth: client.has_seen_legacy_auth(),
        routes,
    }
}

impl AccountCheck {
    fn failure(&self) -> Option<&ApiError> {
        match (&self.status, &self.listing) {
            (Err(error), _) => Some(error),
            (Ok(_), Some(Err(error))) => Some(error),
            _ => None,
        }
    }

    fn report(&self, account: &AccountConfig) -> String {
        let mut lines = vec![format!("account {} ({}):", account.name, account.base_url)];
        let mut line = |label: &str, text: String| lines.push(format!("  {label:<15} {text}"));
        match &self.status {
            Ok(quota_per_unit) => line(
                "reachable:",
                format!("yes (GET /api/status: 1 USD = {quota_per_unit} quota units)"),
            ),
            Err(error @ (ApiError::Connect { .. } | ApiError::Timeout { .. })) => {
                line("reachable:", format!("no: {error}"));
            }
            Err(error) => line(
                "reachable:",
                format!("answered, but not as the API: {error}"),
            ),
        }
        let Some(listing) = &self.listing else {
            line("result:", "FAILED".into());
            return lines.join("\n") + "\n";
        };
        let listing = match listing {
            Ok(listing) => listing,
            Err(error) => {
                // What the server's refusal says about New-Api-User (reference §2.1).
                let user_id = match error {
                    ApiError::Unauthorized { problem, .. } => match problem {
                        AuthProblem::UserIdRequired => Some(
                            "needed and not set: this server (new-api before 2026-07-20) checks \
                             New-Api-User; the token itself may be fine"
                                .to_owned(),
                        ),
                        AuthProblem::UserIdNotNumeric => {
                            Some("needed as a number: the server could not read it".to_owned())
                        }
                        AuthProblem::UserIdMismatch { user_id } => Some(format!(
                            "needed, and {} is not the token's user",
                            user_id.map_or("the one sent".to_owned(), |id| id.to_string())
                        )),
                        AuthProblem::TokenRejected { .. } => None,
                    },
                    _ => None,
                };
                let token = if user_id.is_some() {
                    "unknown: the server stopped at New-Api-User".to_owned()
                } else {
                    format!("no: {error}")
                };
                line("token accepted:", token);
                if let Some(user_id) = user_id {
                    line("user_id:", user_id);
                }
                line("error:", error.to_string());
                line("result:", "FAILED".into());
                return lines.join("\n") + "\n";
            }
        };
        line("token accepted:", "yes (GET /api/token/ answered)".into());
        line("user_id:", user_id_text(self.legacy_auth, account.user_id));
        let form = if listing.paginated {
            match listing.total {
                Some(total) => format!("paginated, {}", plural(total, "key", "keys")),
                None => "paginated".into(),
            }
        } else {
            "bare array (no total: a poll reads pages until a short one)".into()
        };
        let masking = match listing.keys_masked {
            Some(true) => "keys masked",
            Some(false) => "keys in full (not masked)",
            None => "masking unknown (no key on the page)",
        };
        line("listing:", format!("{form}; {masking}"));
        for (label, route, answer) in &self.routes {
            let answer = match answer {
                RouteAnswer::Exists => "yes".to_owned(),
                RouteAnswer::Missing => "no".to_owned(),
                RouteAnswer::Unknown(why) => format!("unknown ({why})"),
            };
            line(&format!("{label}:"), format!("{answer} (GET {route})"));
        }
        line("generation:", generation(&self.facts(listing)));
        line(
            "poll time:",
            poll_time_text(listing.total, account.requests_per_minute),
        );
        line("result:", "ok".into());
        lines.join("\n") + "\n"
    }

    fn facts(&self, listing: &ListingProbe) -> ServerFacts {
        let route = |wanted: &str| {
            self.routes
                .iter()
                .find(|(_, route, _)| *route == wanted)
                .and_then(|(_, _, answer)| match answer {
                    RouteAnswer::Exists => Some(true),
                    RouteAnswer::Missing => Some(false),
                    RouteAnswer::Unknown(_) => None,
                })
        };
        ServerFacts {
            paginated: listing.paginated,
            masked: listing.keys_masked,
            legacy_auth: self.legacy_auth,
            usage_route: route("/api/data/self"),
            flow_route: route("/api/data/flow/self"),
            subscription_route: route("/api/subscription/self"),
        }
    }
}

fn user_id_text(legacy_auth: bool, user_id: Option<i64>) -> String {
    match (legacy_auth, user_id) {
        (true, Some(id)) => format!(
            "needed, and user_id {id} is accepted (this server checks New-Api-User: new-api \
             before 2026-07-20)"
        ),
        // The legacy check cannot pass without the header; seen only on an odd server.
        (true, None) => "needed by this server's authentication, yet not set".into(),
        (false, Some(id)) => {
            format!("not needed (the server does not check New-Api-User; user_id {id} is sent and filters the listing to that user)")
        }
        (false, None) => "not needed (the server does not check New-Api-User)".into(),
    }
}

/// `13 requests a poll (1,200 keys): within the budget's burst of 30 a minute, no wait`.
fn poll_time_text(total: Option<i64>, requests_per_minute: u32) -> String {
    let Some(total) = total else {
        return format!(
            "unknown without a total; each poll costs one request per page plus \
             {REQUESTS_PER_POLL_BEYOND_PAGES}"
        );
    };
    // The pages, then the status, wallet, spend and subscription reads of every poll.
    let requests = (total.max(0) as u64).div_ceil(PAGE_SIZE as u64)
        + u64::from(REQUESTS_PER_POLL_BEYOND_PAGES);
    let time = time_from_full_budget(requests_per_minute, requests);
    let cost = format!("{} a poll", plural(requests, "request", "requests"));
    if time.is_zero() {
        format!("{cost}: within the budget's burst at {requests_per_minute} requests/min, no wait")
    } else {
        format!(
            "{cost}: about {} at {requests_per_minute} requests/min (requests_per_minute)",
            super::progress::short_duration(time)
        )
    }
}

/// What one check saw that tells server generations apart (reference §11 and §13).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ServerFacts {
    paginated: bool,
    masked: Option<bool>,
    legacy_auth: bool,
    usage_route: Option<bool>,
    flow_route: Option<bool>,
    subscription_route: Option<bool>,
}

/// The new-api release window the facts allow, or one-api; says when the signs disagree (a
/// patched server, such as a hosted service may run).
fn generation(facts: &ServerFacts) -> String {
    if !facts.paginated {
        return if facts.legacy_auth {
            "new-api 2024-07-19 … 2025-06-11 (bare listing, New-Api-User checked)".into()
        } else if facts.usage_route == Some(false) {
            "one-api (bare listing, no New-Api-User check, no usage route)".into()
        } else {
            "one-api or new-api before 2025-06-12 (bare listing)".into()
        };
    }
    // Dates as (since, reason) lower bounds and (before, reason) upper bounds.
    let mut since = vec![("2025-06-12", "paginated listing")];
    let mut before: Vec<(&str, &str)> = Vec::new();
    match facts.masked {
        Some(true) => since.push(("2026-03-08", "masked keys")),
        Some(false) => before.push(("2026-03-08", "keys not masked")),
        None => {}
    }
    match facts.subscription_route {
        Some(true) => since.push(("2026-02-03", "subscription route")),
        Some(false) => before.push(("2026-02-03", "no subscription route")),
        None => {}
    }
    match facts.flow_route {
        Some(true) => since.push(("2026-06-20", "spend-by-key route")),
        Some(false) => before.push(("2026-06-20", "no spend-by-key route")),
        None => {}
    }
    if facts.legacy_auth {
        before.push(("2026-07-20", "New-Api-User checked"));
    } else {
        since.push(("2026-07-20", "New-Api-User not checked"));
    }
    let lower = since.iter().max_by_key(|(date, _)| *date).copied();
    let upper = before.iter().min_by_key(|(date, _)| *date).copied();
    match (lower, upper) {
        (Some((from, why_from)), Some((until, why_until))) if from >= until => format!(
            "a patched or unknown new-api: {why_from} says {from} or newer, {why_until} says \
             before {until}"
        ),
        (Some((from, why_from)), Some((until, why_until))) => {
            format!("new-api from {from} ({why_from}) to before {until} ({why_until})")
        }
        (Some((from, why_from)), None) => format!("new-api {from} or newer ({why_from})"),
        (None, _) => "new-api".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_follow_the_version_matrix() {
        let newest = ServerFacts {
            paginated: true,
            masked: Some(true),
            legacy_auth: false,
            usage_route: Some(true),
            flow_route: Some(true),
            subscription_route: Some(true),
        };
        assert_eq!(
            generation(&newest),
            "new-api 2026-07-20 or newer (New-Api-User not checked)"
        );
        let legacy_masked = ServerFacts {
            legacy_auth: true,
            flow_route: Some(false),
            ..newest
        };
        assert_eq!(
            generation(&legacy_masked),
            "new-api from 2026-03-08 (masked keys) to before 2026-06-20 (no spend-by-key route)"
        );
        let contradictory = ServerFacts {
            masked: Some(false),
            ..newest
        };
        assert!(generation(&contradictory).starts_with("a patched or unknown new-api"));
        let one_api = ServerFacts {
            paginated: false,
            usage_route: Some(false),
            ..ServerFacts::default()
        };
        assert!(generation(&one_api).starts_with("one-api"));
    }

    #[test]
    fn poll_time_counts_pages_and_the_burst() {
        assert_eq!(
            poll_time_text(Some(1_200), 30),
            "16 requests a poll: within the budget's burst at 30 requests/min, no wait"
        );
        assert_eq!(
            poll_time_text(Some(10_000), 30),
            "104 requests a poll: about 2m 28s at 30 requests/min (requests_per_minute)"
        );
        assert_eq!(
            poll_time_text(Some(0), 30),
            "4 requests a poll: within the budget's burst at 30 requests/min, no wait"
        );
    }

    #[test]
    fn token_file_overrides_name_an_account_or_not() {
        let parsed =
            parse_token_files(&["main=/etc/keymon/token".into(), "/tmp/t".into()]).unwrap();
        assert_eq!(parsed[0].account.as_deref(), Some("main"));
        assert_eq!(parsed[0].path, PathBuf::from("/etc/keymon/token"));
        assert_eq!(parsed[1].account, None);
        assert!(parse_token_files(&["main=".into()]).is_err());
    }
}
