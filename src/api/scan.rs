//! The complete listing of one account: every page of `GET /api/token/`, de-duplicated and
//! checked, or an error. Nothing partial ever leaves this module.
//!
//! The listing is offset-paginated, newest first (`ORDER BY id DESC`), so a key created between
//! two page requests shifts every later key down one place (the next page repeats one) and a
//! deleted key shifts them up (one is skipped). A pass therefore records `total` from the first
//! and the last page, counts distinct ids and duplicates, and the scan is complete only when the
//! totals agree, the distinct ids equal `total` and no id appeared twice. Otherwise the account is
//! listed once more from page 1; a second pass that still does not add up is `Incomplete`.
//!
//! Paging follows the newest server: `p` from 1, `page_size=100` (the server's cap), stop on a
//! short page or once `p * page_size >= total`, never a `p` or `page_size` below 1 (a negative
//! `page_size` makes the server dump every row). Servers older than 2025-06 answer with a bare
//! array and a 0-based `p` and send no `total`: for those the scan starts again at `p=0` and stops
//! at the first short page; without `total` it cannot detect a skipped key. The client remembers
//! the form after the first complete pass, so later polls of a bare-array server start at `p=0`
//! and cost no extra request (and a paginated server's empty bare array is refused as broken).

use std::collections::HashSet;

use crate::api::error::ApiError;
use crate::api::wire::ListData;
use crate::api::{ApiClient, KeyRecord, ListingForm};
use crate::snapshot::KeyState;

/// Keys asked for per page: new-api's maximum.
pub const PAGE_SIZE: i64 = 100;

/// At most this many pages (a million keys; new-api's default cap is 1,000 keys per user) are
/// read in one pass, so a server that never stops answering with full pages cannot exhaust
/// the daemon's memory.
const MAX_PAGES: i64 = 10_000;

/// Pages read beyond what the first page's `total` implies before a pass gives up as changed:
/// a listing that keeps growing while it is read cannot be complete.
const MAX_PAGES_BEYOND_TOTAL: i64 = 5;

/// A complete listing of one account.
#[derive(Debug)]
pub struct AccountListing {
    /// Every key of the account, ascending by id.
    pub keys: Vec<KeyState>,
    pub quota_per_unit: f64,
    /// `enable_data_export` from `/api/status`; `None` when the server does not say.
    pub data_export_enabled: Option<bool>,
    /// HTTP requests that succeeded for this listing (status plus pages of every pass).
    pub requests: u32,
    /// True when the first pass did not add up and the account was listed again.
    pub rescanned: bool,
}

enum PassOutcome {
    Complete { keys: Vec<KeyState>, pages: u32 },
    Changed { detail: String, pages: u32 },
}

/// Lists every key of the account behind `client`, as the module doc describes.
pub async fn scan_account(client: &ApiClient) -> Result<AccountListing, ApiError> {
    let facts = client.server_facts().await?;
    let quota_per_unit = facts.quota_per_unit;
    let mut requests = 1;
    for pass in 1..=2 {
        match scan_pass(client).await? {
            PassOutcome::Complete { mut keys, pages } => {
                keys.sort_unstable_by_key(|key| key.id);
                return Ok(AccountListing {
                    keys,
                    quota_per_unit,
                    data_export_enabled: facts.data_export_enabled,
                    requests: requests + pages,
                    rescanned: pass > 1,
                });
            }
            PassOutcome::Changed { detail, pages } => {
                requests += pages;
                if pass == 2 {
                    return Err(ApiError::Incomplete {
                        detail: format!("{detail} (after one re-scan)"),
                    });
                }
                tracing::info!(account = %client.account(), %detail, "listing changed under the scan; listing again");
            }
        }
    }
    unreachable!("the loop returns on its second pass")
}

async fn scan_pass(client: &ApiClient) -> Result<PassOutcome, ApiError> {
    let own_user_id = client.user_id();
    let mut keys = Vec::new();
    let mut ids_seen = HashSet::new();
    let mut duplicates = 0usize;
    let mut first_total = None;
    let mut last_total;
    // A server already known to answer with a bare array is read from `p=0` at once; the first
    // poll of an account learns the form on page 1.
    let known_bare = client.listing_form() == ListingForm::BareZeroBased;
    let mut zero_based = known_bare;
    let mut largest_bare_page = 0usize;
    let mut pages = 0u32;
    let mut page = if known_bare { 0 } else { 1 };
    loop {
        let data = client.list_page(page, PAGE_SIZE).await?;
        pages += 1;
        let (items, total, page_size) = match data {
            ListData::Page(info) if !zero_based => {
                let page_size = if (1..=PAGE_SIZE).contains(&info.page_size) {
                    info.page_size
                } else {
                    PAGE_SIZE
                };
                (info.items, Some(info.total), Some(page_size))
            }
            ListData::Page(_) if known_bare && page == 0 && pages == 1 => {
                // The server was upgraded to the paginated listing (whose `p=0` is page 1):
                // forget the old form and read it from page 1 like any new server.
                tracing::info!(account = %client.account(), "the server now answers the listing with pages; reading it from page 1");
                client.forget_listing_form();
                zero_based = false;
                page = 1;
                continue;
            }
            ListData::Bare(_)
                if !zero_based && page == 1 && client.listing_form() == ListingForm::Unknown =>
            {
                // An older server: its `p` is 0-based, so what we got was its second page.
                zero_based = true;
                page = 0;
                continue;
            }
            ListData::Bare(items) if zero_based => (items, None, None),
            _ => return Err(listing_format_switched()),
        };
        if first_total.is_none() && !zero_based {
            first_total = total;
        }
        last_total = total;
        let items_on_page = items.len();
        for item in items {
            if !ids_seen.insert(item.id) {
                duplicates += 1;
                continue;
            }
            let foreign =
                matches!((own_user_id, item.user_id), (Some(own), Some(owner)) if own != owner);
            if !foreign {
                keys.push(KeyState::from(item));
            }
        }
        let last_page = match page_size {
            Some(page_size) => {
                (items_on_page as i64) < page_size
                    || total.is_some_and(|total| page.saturating_mul(page_size) >= total)
            }
            None => {
                largest_bare_page = largest_bare_page.max(items_on_page);
                items_on_page == 0 || items_on_page < largest_bare_page
            }
        };
        if last_page {
            break;
        }
        page += 1;
        if page > MAX_PAGES {
            return Err(ApiError::Incomplete {
                detail: format!("still full pages after {MAX_PAGES} pages"),
            });
        }
        if let (Some(first), Some(page_size)) = (first_total, page_size) {
            if page > first.max(0) / page_size + 1 + MAX_PAGES_BEYOND_TOTAL {
                let detail =
                    format!("the listing kept growing past its total of {first} while it was read");
                return Ok(PassOutcome::Changed { detail, pages });
            }
        }
    }
    if let (Some(first), Some(last)) = (first_total, last_total) {
        if first != last {
            let detail = format!("total changed from {first} to {last} during the scan");
            return Ok(PassOutcome::Changed { detail, pages });
        }
        if ids_seen.len() as i64 != last {
            let detail = format!(
                "{} distinct keys listed but the server reports a total of {last}",
                ids_seen.len()
            );
            return Ok(PassOutcome::Changed { detail, pages });
        }
    }
    if duplicates > 0 {
        let detail = format!("{duplicates} keys appeared on two pages");
        return Ok(PassOutcome::Changed { detail, pages });
    }
    client.remember_listing_form(if zero_based {
        ListingForm::BareZeroBased
    } else {
        ListingForm::Paginated
    });
    Ok(PassOutcome::Complete { keys, pages })
}

fn listing_format_switched() -> ApiError {
    ApiError::Decode {
        endpoint: crate::api::Endpoint::List,
        detail: "the listing switched between the paginated and the bare-array format mid-scan"
            .into(),
    }
}

/// The first page of the listing — the newest keys, since the server lists `ORDER BY id DESC` —
/// whichever form the server lists in (the paginated envelope, or a bare array whose `p` is
/// 0-based), without the keys of other users on a root token with `user_id` set. `keys create`
/// finds the key it made here; the wire format stays inside `api`.
pub async fn newest_keys(client: &ApiClient) -> Result<Vec<KeyRecord>, ApiError> {
    let first_page = if client.listing_form() == ListingForm::BareZeroBased {
        0
    } else {
        1
    };
    let items = match client.list_page(first_page, PAGE_SIZE).await? {
        ListData::Page(page) => page.items,
        ListData::Bare(items) if first_page == 0 => items,
        ListData::Bare(_) => match client.list_page(0, PAGE_SIZE).await? {
            ListData::Page(page) => page.items,
            ListData::Bare(items) => items,
        },
    };
    let own_user = client.user_id();
    Ok(items
        .into_iter()
        .filter(|record| {
            own_user.is_none() || record.user_id.is_none() || record.user_id == own_user
        })
        .collect())
}
