//! The status page `/`: what an operator opens without Grafana. Pure: a `StatusPage` view is
//! built from the exporter's account views and snapshots at `now`, and rendered into one
//! self-contained HTML document — no external assets, no JavaScript, readable on a phone
//! (viewport meta, a single column under 40 em), refreshing itself every `REFRESH_SECONDS`.
//! Every text from a server or the configuration (account and key names, errors) is escaped.
//!
//! First, per account: its keys (usable, expiring within 7 days, expired but still enabled,
//! exhausted, disabled), the wallet, the last poll and its error, and what the policy engine did
//! and holds back (cooldowns, an open circuit). Then the keys that need attention now, most
//! urgent first, by account, id and name — never a key value, which the daemon never holds.
//!
//! About 570 lines of code and their unit tests: the page's view, ordering and HTML in one pure
//! file.

use std::fmt::Write as _;

use crate::metrics::{AccountView, PolicyView};
use crate::snapshot::{KeyState, KeyStatus, Snapshot};

/// The page reloads itself this often; polls are a minute apart by default.
pub const REFRESH_SECONDS: u32 = 30;
/// "Expiring soon" is the same 7 days as the `CometAPIKeyExpiringSoon` alert.
pub const EXPIRING_WITHIN_SECONDS: i64 = 7 * 86_400;
/// A key expiring within a day is as urgent as the `CometAPIKeyExpiringCritical` alert.
const EXPIRING_CRITICAL_SECONDS: i64 = 86_400;
/// Limited keys that used more than this share of their quota (`CometAPIKeyQuotaAlmostUsed`).
const QUOTA_ALMOST_USED: f64 = 0.9;
/// The attention list stays short; the rest is counted.
pub const ATTENTION_LIMIT: usize = 25;

/// Everything the page shows.
#[derive(Debug, Clone, Default)]
pub struct StatusPage {
    pub version: String,
    pub now: i64,
    pub accounts: Vec<AccountStatus>,
    /// Most urgent first, at most `ATTENTION_LIMIT`.
    pub attention: Vec<AttentionKey>,
    /// Keys that need attention beyond the list.
    pub attention_not_shown: usize,
}

#[derive(Debug, Clone, Default)]
pub struct AccountStatus {
    pub view: AccountView,
    /// From the last complete poll; `None` before the first.
    pub keys: Option<KeyCounts>,
    pub quota_per_unit: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCounts {
    pub total: usize,
    pub usable: usize,
    /// Usable keys that expire within 7 days.
    pub expiring_soon: usize,
    /// Past their expiry while the server still lists them as enabled (its status is lazy).
    pub expired_but_enabled: usize,
    /// Not disabled, and a limited key without quota or marked exhausted by the server.
    pub exhausted: usize,
    pub disabled: usize,
}

impl KeyCounts {
    pub fn of(snapshot: &Snapshot, now: i64) -> KeyCounts {
        let mut counts = KeyCounts {
            total: snapshot.keys.len(),
            ..KeyCounts::default()
        };
        for key in &snapshot.keys {
            let usable = key.is_usable_at(now);
            counts.usable += usize::from(usable);
            counts.expiring_soon += usize::from(
                usable && !key.never_expires() && key.expired_time - now <= EXPIRING_WITHIN_SECONDS,
            );
            counts.expired_but_enabled +=
                usize::from(key.status() == KeyStatus::Enabled && key.is_expired_at(now));
            counts.exhausted += usize::from(is_exhausted(key));
            counts.disabled += usize::from(key.status() == KeyStatus::Disabled);
        }
        counts
    }
}

fn is_exhausted(key: &KeyState) -> bool {
    key.status() != KeyStatus::Disabled
        && (key.status() == KeyStatus::Exhausted || (!key.unlimited_quota && key.remain_quota <= 0))
}

/// One key that needs attention, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionKey {
    pub account: String,
    pub id: i64,
    pub name: String,
    pub problem: String,
    /// 0 is the most urgent: failing now; 1 expires within a day; 2 within 7 days; 3 almost
    /// out of quota.
    pub urgency: u8,
    /// Orders keys of one urgency: the sooner or the more used, the smaller.
    pub order: i64,
}

/// The keys of one snapshot that need attention now (disabled keys never do).
pub fn attention_keys(snapshot: &Snapshot, now: i64) -> Vec<AttentionKey> {
    let per_unit = snapshot.quota_per_unit;
    let mut found = Vec::new();
    for key in &snapshot.keys {
        if key.status() == KeyStatus::Disabled {
            continue;
        }
        let mut add = |problem: String, urgency: u8, order: i64| {
            found.push(AttentionKey {
                account: snapshot.account.clone(),
                id: key.id,
                name: key.name.clone(),
                problem,
                urgency,
                order,
            });
        };
        // Failing keys that were used recently come first: someone is being refused.
        let recently_used_first = -key.accessed_time;
        if key.is_expired_at(now) {
            let state = match key.status() {
                KeyStatus::Enabled => "; the server still lists it as enabled",
                _ => "",
            };
            add(
                format!(
                    "expired {} ago{state}",
                    short_duration(now - key.expired_time)
                ),
                0,
                recently_used_first,
            );
        } else if is_exhausted(key) {
            let problem = if key.unlimited_quota {
                "marked exhausted by the server".to_owned()
            } else {
                format!("no quota left ({})", quota_text(key.remain_quota, per_unit))
            };
            add(problem, 0, recently_used_first);
        } else if key.status() != KeyStatus::Enabled {
            add(
                format!("status {}", key.status().label()),
                0,
                recently_used_first,
            );
        } else if !key.never_expires() && key.expired_time - now <= EXPIRING_WITHIN_SECONDS {
            let left = key.expired_time - now;
            let urgency = if left <= EXPIRING_CRITICAL_SECONDS {
                1
            } else {
                2
            };
            add(
                format!("expires in {}", short_duration(left)),
                urgency,
                key.expired_time,
            );
        } else if !key.unlimited_quota {
            let total = key.remain_quota.saturating_add(key.used_quota);
            if total > 0 && key.used_quota as f64 / total as f64 > QUOTA_ALMOST_USED {
                let used_per_mille = key.used_quota.saturating_mul(1_000) / total;
                add(
                    format!(
                        "{}% of its quota used; {} left",
                        used_per_mille / 10,
                        quota_text(key.remain_quota, per_unit)
                    ),
                    3,
                    -used_per_mille,
                );
            }
        }
    }
    found
}

impl StatusPage {
    /// The page for these accounts (with their snapshots) at `now`.
    pub fn build(
        version: &str,
        accounts: Vec<(AccountView, Option<std::sync::Arc<Snapshot>>)>,
        now: i64,
    ) -> StatusPage {
        let mut attention = Vec::new();
        let mut statuses = Vec::new();
        for (view, snapshot) in accounts {
            if let Some(snapshot) = &snapshot {
                attention.extend(attention_keys(snapshot, now));
            }
            statuses.push(AccountStatus {
                keys: snapshot
                    .as_ref()
                    .map(|snapshot| KeyCounts::of(snapshot, now)),
                quota_per_unit: snapshot.as_ref().map(|snapshot| snapshot.quota_per_unit),
                view,
            });
        }
        attention.sort_by(|a, b| {
            (a.urgency, a.order, &a.account, a.id).cmp(&(b.urgency, b.order, &b.account, b.id))
        });
        let attention_not_shown = attention.len().saturating_sub(ATTENTION_LIMIT);
        attention.truncate(ATTENTION_LIMIT);
        StatusPage {
            version: version.to_owned(),
            now,
            accounts: statuses,
            attention,
            attention_not_shown,
        }
    }

    /// The HTML document.
    pub fn render(&self) -> String {
        let mut html = String::with_capacity(8 * 1024);
        let _ = write!(
            html,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\n\
             <title>cometapi-keymon</title>\n<style>{STYLE}</style></head><body>\n\
             <header><h1>cometapi-keymon <small>{}</small></h1>\n\
             <p class=\"muted\">As of {} · this page refreshes every {REFRESH_SECONDS} s · \
             <a href=\"/metrics\">/metrics</a> · <a href=\"/readyz\">/readyz</a> · \
             <a href=\"/healthz\">/healthz</a></p></header>\n",
            escape_html(&self.version),
            utc_text(self.now),
        );
        // Accounts first: a failing poll makes every key figure below stale.
        html.push_str("<h2>Accounts</h2>\n<div class=\"accounts\">\n");
        for account in &self.accounts {
            self.render_account(&mut html, account);
        }
        html.push_str("</div>\n");
        self.render_attention(&mut html);
        html.push_str("</body></html>\n");
        html
    }

    fn render_attention(&self, html: &mut String) {
        html.push_str("<section class=\"attention\"><h2>Needs attention now</h2>\n");
        if self.attention.is_empty() {
            let polled = self.accounts.iter().any(|account| account.keys.is_some());
            html.push_str(if polled {
                "<p>No key needs attention.</p>\n"
            } else {
                "<p>No complete poll yet: nothing is known about the keys.</p>\n"
            });
            html.push_str("</section>\n");
            return;
        }
        html.push_str(
            "<div class=\"scroll\"><table><thead><tr><th>account</th><th>key</th>\
             <th>name</th><th>problem</th></tr></thead><tbody>\n",
        );
        for key in &self.attention {
            let class = match key.urgency {
                0 => "bad",
                1 => "warn",
                _ => "note",
            };
            let name = if key.name.is_empty() {
                "<span class=\"muted\">(no name)</span>".to_owned()
            } else {
                escape_html(&key.name)
            };
            let _ = writeln!(
                html,
                "<tr class=\"{class}\"><td class=\"who\">{}</td><td class=\"number\">{}</td>\
                 <td class=\"name\">{name}</td><td class=\"problem\">{}</td></tr>",
                escape_html(&key.account),
                key.id,
                escape_html(&key.problem),
            );
        }
        html.push_str("</tbody></table></div>\n");
        if self.attention_not_shown > 0 {
            let _ = writeln!(
                html,
                "<p class=\"muted\">and {} more {} (cometapi-keymon keys list, or the \
                 Grafana dashboard)</p>",
                self.attention_not_shown,
                if self.attention_not_shown == 1 {
                    "key"
                } else {
                    "keys"
                }
            );
        }
        html.push_str("</section>\n");
    }

    fn render_account(&self, html: &mut String, account: &AccountStatus) {
        let view = &account.view;
        let state = match (&view.last_error, view.last_success_at) {
            (None, Some(_)) => ("ok", "up"),
            (Some(_), Some(_)) => ("bad", "last poll failed"),
            (_, None) => ("warn", "not polled yet"),
        };
        let _ = writeln!(
            html,
            "<section class=\"account\"><h3>{} <span class=\"badge {}\">{}</span></h3>",
            escape_html(&view.name),
            state.0,
            state.1
        );
        match &account.keys {
            Some(counts) => {
                let _ = writeln!(
                    html,
                    "<dl class=\"counts\">\
                     <div><dt>keys</dt><dd>{}</dd></div>\
                     <div><dt>usable</dt><dd>{}</dd></div>\
                     <div class=\"{}\"><dt>expiring within 7 days</dt><dd>{}</dd></div>\
                     <div class=\"{}\"><dt>expired but enabled</dt><dd>{}</dd></div>\
                     <div class=\"{}\"><dt>exhausted</dt><dd>{}</dd></div>\
                     <div><dt>disabled</dt><dd>{}</dd></div></dl>",
                    counts.total,
                    counts.usable,
                    if counts.expiring_soon > 0 { "warn" } else { "" },
                    counts.expiring_soon,
                    if counts.expired_but_enabled > 0 {
                        "bad"
                    } else {
                        ""
                    },
                    counts.expired_but_enabled,
                    if counts.exhausted > 0 { "bad" } else { "" },
                    counts.exhausted,
                    counts.disabled,
                );
            }
            None => html.push_str("<p>No complete poll yet.</p>\n"),
        }
        html.push_str("<dl class=\"facts\">\n");
        let mut fact = |label: &str, value: String| {
            let _ = writeln!(html, "<dt>{label}</dt><dd>{value}</dd>");
        };
        // The account's money, read with the keys: a key with quota still fails when the
        // wallet is empty.
        let per_unit = view
            .quota_per_unit
            .or(account.quota_per_unit)
            .filter(|per_unit| *per_unit > 0.0);
        let money = |quota: i64| match per_unit {
            Some(per_unit) => format!(
                "{} <span class=\"muted\">= {quota} quota units</span>",
                escape_html(&quota_text(quota, per_unit))
            ),
            None => format!("{quota} quota units"),
        };
        fact(
            "wallet",
            match &view.wallet {
                Some(wallet) if wallet.quota <= 0 => format!(
                    "<span class=\"bad\">{} left: requests fail whatever the keys hold</span>, {} \
                     used",
                    money(wallet.quota),
                    money(wallet.used_quota)
                ),
                Some(wallet) => format!(
                    "{} left, {} used",
                    money(wallet.quota),
                    money(wallet.used_quota)
                ),
                None if account.keys.is_some() => {
                    "<span class=\"muted\">not read (the server has no wallet route)</span>"
                        .to_owned()
                }
                None => "<span class=\"muted\">not read yet</span>".to_owned(),
            },
        );
        if let Some(spent) = view.spent_today {
            fact("spent today (UTC)", money(spent));
        }
        if let Some(active) = view.active_subscriptions {
            fact("active subscriptions", active.to_string());
        }
        fact(
            "last complete poll",
            view.last_success_at.map_or_else(
                || "never".to_owned(),
                |at| format!("{} ({} ago)", utc_text(at), short_duration(self.now - at)),
            ),
        );
        if view.last_attempt_at != view.last_success_at {
            fact(
                "last attempt",
                view.last_attempt_at.map_or_else(
                    || "never".to_owned(),
                    |at| format!("{} ({} ago)", utc_text(at), short_duration(self.now - at)),
                ),
            );
        }
        if let Some(duration) = view.last_duration {
            fact("poll duration", format!("{:.2} s", duration.as_secs_f64()));
        }
        if let Some(error) = &view.last_error {
            let served = if view.last_success_at.is_some() {
                "still serving the previous complete poll"
            } else {
                "nothing is served for this account yet"
            };
            fact(
                "last error",
                format!(
                    "<span class=\"bad\">{}</span> <span class=\"muted\">({served})</span>",
                    escape_html(error)
                ),
            );
        }
        if let Some(policy) = &view.policy {
            fact("policy", escape_html(&policy_text(policy, self.now)));
        }
        html.push_str("</dl></section>\n");
    }
}

/// What the engine did and holds back, in words: "dry run · this poll: nothing new · held
/// back: 54 keys in cooldown (the first until 02:03 UTC) · last activity: 54 would act at
/// 01:03 UTC".
pub fn policy_text(policy: &PolicyView, now: i64) -> String {
    let mut parts = vec![if policy.dry_run {
        "dry run (nothing is written)".to_owned()
    } else {
        "enforcing".to_owned()
    }];
    if let Some(hold) = &policy.hold {
        parts.push(format!("circuit open, nothing done: {hold}"));
    } else if policy.outcomes.is_empty() {
        parts.push("this poll: nothing new to do".to_owned());
    } else {
        parts.push(format!("this poll: {}", outcomes_text(&policy.outcomes)));
    }
    if policy.in_cooldown > 0 {
        let until = policy
            .cooldown_ends_at
            .map(|at| format!(" (the first until {})", utc_text(at)))
            .unwrap_or_default();
        parts.push(format!(
            "held back: {} in cooldown{until}",
            plural(policy.in_cooldown, "key", "keys")
        ));
    }
    if let Some((at, outcomes)) = &policy.last_activity {
        if policy.outcomes.is_empty() {
            parts.push(format!(
                "last activity: {} at {} ({} ago)",
                outcomes_text(outcomes),
                utc_text(*at),
                short_duration(now - at)
            ));
        }
    }
    if policy.interrupted {
        parts.push("interrupted by shutdown; reconciled at the next start".to_owned());
    }
    parts.join(" · ")
}

fn outcomes_text(outcomes: &std::collections::BTreeMap<String, usize>) -> String {
    outcomes
        .iter()
        .map(|(outcome, count)| {
            let label = match outcome.as_str() {
                "dry_run" => "would act (dry run)",
                "applied" => "applied",
                "skipped_changed" => "skipped (changed since the poll)",
                "suppressed_protected" => "protected",
                "suppressed_limit" => "held by the action limit",
                "rejected" => "rejected by the server",
                "failed" => "failed",
                "verify_failed" => "did not verify",
                other => other,
            };
            format!("{count} {label}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

fn utc_text(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0).map_or_else(
        || at.to_string(),
        |time| time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// `3d 4h`, `5h 12m`, `7m`, `12s`.
fn short_duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3_599 => format!("{}m", seconds / 60),
        3_600..=86_399 => format!("{}h {}m", seconds / 3_600, seconds % 3_600 / 60),
        _ => format!("{}d {}h", seconds / 86_400, seconds % 86_400 / 3_600),
    }
}

/// `1.25M ($2.50)`.
fn quota_text(quota: i64, quota_per_unit: f64) -> String {
    let usd = quota as f64 / quota_per_unit;
    let magnitude = quota.unsigned_abs() as f64;
    let sign = if quota < 0 { "-" } else { "" };
    let units = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")]
        .iter()
        .find(|(scale, _)| magnitude >= *scale)
        .map_or_else(
            || quota.to_string(),
            |(scale, suffix)| format!("{sign}{:.2}{suffix}", magnitude / scale),
        );
    format!("{units} ({sign}${:.2})", usd.abs())
}

pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            // Control characters would be invisible or break the layout.
            character if character.is_control() && character != '\n' => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(character));
            }
            other => escaped.push(other),
        }
    }
    escaped
}

/// Plain, readable on a phone (one column below 40 em), no external fonts or images.
const STYLE: &str = "\
:root{color-scheme:light dark;--bad:#c62828;--warn:#b26a00;--ok:#2e7d32;--muted:#6b7280;\
--line:rgba(127,127,127,.3)}\
body{font:16px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;\
max-width:72rem;padding:1rem}\
h1{font-size:1.5rem;margin:.2rem 0}h1 small{font-weight:normal;color:var(--muted);font-size:1rem}\
h2{font-size:1.2rem;margin:1.5rem 0 .5rem}h3{font-size:1.1rem;margin:0 0 .5rem}\
a{color:inherit}.muted{color:var(--muted)}.bad{color:var(--bad)}.warn{color:var(--warn)}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid var(--line);\
vertical-align:top}td.who,td.number{white-space:nowrap}td.number{text-align:right}\
td.name{overflow-wrap:anywhere}\
tr.bad td:last-child{color:var(--bad)}tr.warn td:last-child{color:var(--warn)}\
.accounts{display:grid;grid-template-columns:repeat(auto-fit,minmax(20rem,1fr));gap:1rem}\
.account{border:1px solid var(--line);border-radius:.5rem;padding:1rem}\
.badge{font-size:.8rem;font-weight:normal;border-radius:1rem;padding:.1rem .6rem;\
border:1px solid currentColor;vertical-align:middle}.badge.ok{color:var(--ok)}\
.counts{display:grid;grid-template-columns:repeat(3,1fr);gap:.5rem;margin:0 0 1rem}\
.counts div{border:1px solid var(--line);border-radius:.4rem;padding:.4rem .5rem}\
.counts dt{font-size:.8rem;color:var(--muted)}.counts dd{margin:0;font-size:1.4rem;\
font-variant-numeric:tabular-nums}.counts .bad dd{color:var(--bad)}.counts .warn dd{color:var(--warn)}\
.facts{display:grid;grid-template-columns:max-content 1fr;gap:.25rem .75rem;margin:0}\
.facts dt{color:var(--muted)}.facts dd{margin:0;overflow-wrap:anywhere}\
@media (max-width:40em){body{padding:.6rem}.counts{grid-template-columns:repeat(2,1fr)}\
.facts{grid-template-columns:1fr}.facts dd{margin-bottom:.4rem}\
.attention thead{display:none}.attention tr{display:grid;grid-template-columns:auto auto 1fr;\
gap:0 .5rem;padding:.4rem 0;border-bottom:1px solid var(--line)}\
.attention td{border:0;padding:0}.attention td.problem{grid-column:1/-1}\
.attention td.number::before{content:'#'}}";

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn key(id: i64, name: &str) -> KeyState {
        KeyState {
            name: name.into(),
            status_code: 1,
            remain_quota: 1_000_000,
            used_quota: 0,
            expired_time: -1,
            ..KeyState::for_tests(id)
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot::new(
            "main",
            vec![
                key(1, "fine"),
                KeyState {
                    expired_time: NOW - 3 * 86_400,
                    accessed_time: NOW - 60,
                    ..key(2, "<script>alert(1)</script>")
                },
                KeyState {
                    remain_quota: -4_200,
                    used_quota: 10_000,
                    ..key(3, "overdrawn")
                },
                KeyState {
                    expired_time: NOW + 3_600,
                    ..key(4, "soon")
                },
                KeyState {
                    expired_time: NOW + 5 * 86_400,
                    ..key(5, "this week")
                },
                KeyState {
                    status_code: 2,
                    expired_time: NOW - 86_400,
                    ..key(6, "disabled on purpose")
                },
                KeyState {
                    remain_quota: 50,
                    used_quota: 950,
                    ..key(7, "almost used")
                },
            ],
            500_000.0,
            NOW,
        )
    }

    #[test]
    fn counts_follow_the_alerts_definitions() {
        let counts = KeyCounts::of(&snapshot(), NOW);
        assert_eq!(
            counts,
            KeyCounts {
                total: 7,
                usable: 4,
                expiring_soon: 2,
                expired_but_enabled: 1,
                exhausted: 1,
                disabled: 1,
            }
        );
    }

    #[test]
    fn attention_lists_the_most_urgent_first_and_never_disabled_keys() {
        let page = StatusPage::build(
            "0.1.0",
            vec![(
                AccountView {
                    name: "main".into(),
                    ..AccountView::default()
                },
                Some(std::sync::Arc::new(snapshot())),
            )],
            NOW,
        );
        let ids: Vec<i64> = page.attention.iter().map(|key| key.id).collect();
        // Failing now (the recently used expired key before the overdrawn one), then within a
        // day, within a week, and almost out of quota.
        assert_eq!(ids, vec![2, 3, 4, 5, 7]);
        assert_eq!(
            page.attention[0].problem,
            "expired 3d 0h ago; the server still lists it as enabled"
        );
        assert_eq!(page.attention[1].problem, "no quota left (-4.20K (-$0.01))");
        assert_eq!(page.attention[2].problem, "expires in 1h 0m");
        assert_eq!(
            page.attention[4].problem,
            "95% of its quota used; 50 ($0.00) left"
        );
    }

    #[test]
    fn the_page_is_self_contained_escaped_and_refreshing() {
        let page = StatusPage::build(
            "0.1.0",
            vec![(
                AccountView {
                    name: "main & <co>".into(),
                    last_success_at: Some(NOW - 30),
                    last_attempt_at: Some(NOW - 30),
                    ..AccountView::default()
                },
                Some(std::sync::Arc::new(snapshot())),
            )],
            NOW,
        )
        .render();
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"30\">"));
        assert!(page.contains("name=\"viewport\""));
        assert!(!page.contains("<script>alert"), "names are escaped");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("main &amp; &lt;co&gt;"));
        for external in ["src=", "<link", "<script", "http://", "https://", "@import"] {
            assert!(
                !page.contains(external),
                "external asset or script: {external}"
            );
        }
    }

    #[test]
    fn an_empty_wallet_is_flagged_and_a_missing_one_said() {
        let page = |wallet: Option<crate::account::Wallet>| {
            StatusPage::build(
                "0.1.0",
                vec![(
                    AccountView {
                        name: "main".into(),
                        wallet,
                        quota_per_unit: Some(500_000.0),
                        last_success_at: Some(NOW),
                        ..AccountView::default()
                    },
                    Some(std::sync::Arc::new(snapshot())),
                )],
                NOW,
            )
            .render()
        };
        let empty = page(Some(crate::account::Wallet {
            user_id: 1,
            group: "default".into(),
            quota: -250_000,
            used_quota: 1_000_000,
            request_count: 3,
        }));
        assert!(
            empty.contains(
                "-250.00K (-$0.50) <span class=\"muted\">= -250000 quota units</span> left: \
                 requests fail whatever the keys hold"
            ),
            "{empty}"
        );
        assert!(page(None).contains("not read (the server has no wallet route)"));
    }

    #[test]
    fn the_policy_says_what_it_holds_back_in_cooldown() {
        let mut outcomes = std::collections::BTreeMap::new();
        outcomes.insert("dry_run".to_owned(), 54);
        let later = PolicyView {
            dry_run: true,
            evaluated_at: NOW,
            in_cooldown: 54,
            cooldown_ends_at: Some(NOW + 3_540),
            last_activity: Some((NOW - 60, outcomes)),
            ..PolicyView::default()
        };
        let text = policy_text(&later, NOW);
        assert!(
            text.contains("held back: 54 keys in cooldown (the first until 2027-01-15"),
            "{text}"
        );
        assert!(
            text.contains("last activity: 54 would act (dry run) at"),
            "{text}"
        );
        assert!(!text.contains("nothing to do;"), "{text}");
    }
}
