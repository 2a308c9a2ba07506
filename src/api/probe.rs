//! What `check-config --online` asks a server, beyond a poll's requests: one list page read for
//! its form (paginated envelope or bare array, masked keys, `total`), and whether a GET route
//! exists at all (the wallet, usage and subscription routes that only some server generations
//! have). Both go through the client's budget, retries and error diagnosis like any request.

use reqwest::Method;

use crate::api::error::ApiError;
use crate::api::scan::PAGE_SIZE;
use crate::api::wire::ListingShape;
use crate::api::{ApiClient, Endpoint};

/// The first list page, as far as it tells what the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingProbe {
    /// The paginated envelope (new-api ≥ 2025-06-12) rather than a bare array (one-api and
    /// older new-api).
    pub paginated: bool,
    /// The server's key count (paginated listings only).
    pub total: Option<i64>,
    pub keys_on_page: usize,
    /// Whether the keys came masked; `None` when the page held no key value to look at.
    pub keys_masked: Option<bool>,
}

/// Whether a GET route exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAnswer {
    /// The server answered with its JSON envelope (`success` true or false).
    Exists,
    /// 404, or something that is not the API's JSON (a web UI's catch-all page).
    Missing,
    /// No telling: the request failed for another reason (what it was).
    Unknown(String),
}

impl ApiClient {
    /// One `GET /api/token/?p=1&page_size=100` (on a bare-array server, whose `p` is 0-based,
    /// that is its second page: enough to see the form).
    pub async fn probe_listing(&self) -> Result<ListingProbe, ApiError> {
        let path = format!("/api/token/?p=1&page_size={PAGE_SIZE}&size={PAGE_SIZE}");
        let shape: ListingShape = self
            .request_data(Endpoint::List, Method::GET, &path, None)
            .await?;
        let (paginated, total, items) = match shape {
            ListingShape::Page { total, items } => (true, Some(total), items),
            ListingShape::Bare(items) => (false, None, items),
        };
        let flags: Vec<bool> = items.iter().filter_map(|item| item.masked).collect();
        Ok(ListingProbe {
            paginated,
            total,
            keys_on_page: items.len(),
            keys_masked: (!flags.is_empty()).then(|| flags.iter().all(|masked| *masked)),
        })
    }

    /// One GET of `path` (with its query), asking only whether the route exists.
    pub async fn route_exists(&self, path: &str) -> RouteAnswer {
        match self
            .execute(Endpoint::Status, Method::GET, path, None)
            .await
        {
            Ok(bytes) => {
                match self.decode_envelope::<serde_json::Value>(Endpoint::Status, &bytes) {
                    Ok(_) | Err(ApiError::Refused { .. } | ApiError::Unauthorized { .. }) => {
                        RouteAnswer::Exists
                    }
                    Err(_) => RouteAnswer::Missing,
                }
            }
            Err(ApiError::Http { status: 404, .. }) => RouteAnswer::Missing,
            Err(ApiError::Http { status, .. }) => RouteAnswer::Unknown(format!("HTTP {status}")),
            Err(error) => RouteAnswer::Unknown(error.reason().unwrap_or("cancelled").to_owned()),
        }
    }
}
