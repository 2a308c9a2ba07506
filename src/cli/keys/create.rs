//! `keys create`: the server does not return the new key's id, so it is learned from the
//! newest page of the listing read before and after the create — the one key newer than every
//! key seen before whose fields are the ones asked for. A tie, or no match, is an error naming
//! the candidates, never a guess.

use super::output::{json_text, record_json};
use super::{Context, KeysError, STATUS_ENABLED};
use crate::api::scan::PAGE_SIZE;
use crate::api::{self, editable_changes, KeyEdit, KeyRecord};
use crate::cli::report;
use crate::cli::shared::OutputFormat;

pub(super) async fn create(
    context: &Context,
    edit: &KeyEdit,
    output: OutputFormat,
    now: i64,
) -> Result<String, KeysError> {
    // Zero values the server would otherwise default differently: `expired_time` 0 means
    // "never" on create but "expired" everywhere else, so never is sent as -1 explicitly.
    let base = KeyRecord {
        status: STATUS_ENABLED,
        expired_time: -1,
        allow_ips: Some(String::new()),
        ..KeyRecord::default()
    };
    let intended = edit.apply(&base);
    if !intended.unlimited_quota && intended.remain_quota < 0 {
        return Err(KeysError::Usage(
            "--remaining-quota must be 0 or more for a limited key".into(),
        ));
    }
    if intended.cross_group_retry && intended.group != "auto" {
        return Err(KeysError::Usage(
            "--cross-group-retry true applies only with --group auto".into(),
        ));
    }
    let before = newest_keys(context).await?;
    let newest_id_before = before.iter().map(|record| record.id).max().unwrap_or(0);
    context
        .writer
        .create_key(&intended)
        .await
        .map_err(context.api_error(None))?;
    let after = newest_keys(context).await?;
    let created = pick_created(newest_id_before, &intended, &after).map_err(|reason| {
        KeysError::CreatedButUnidentified {
            account: context.account.clone(),
            reason,
        }
    })?;
    Ok(match output {
        OutputFormat::Table => format!(
            "created key {} ({}) in account {}\n",
            created.id,
            report::table_name(&created.name),
            context.account
        ),
        OutputFormat::Json => json_text(&record_json(&context.account, &created, now)),
    })
}

/// The first page of the listing, newest first. Servers older than 2025-06 answer with a bare
/// array and count pages from 0, so their first page is `p=0`.
async fn newest_keys(context: &Context) -> Result<Vec<KeyRecord>, KeysError> {
    api::newest_keys(&context.reader)
        .await
        .map_err(context.api_error(None))
}

/// The key `create` made: newer than every key seen before, with the requested name and
/// fields. The server may store `cross_group_retry` as false and adds `auto_groups`.
pub fn pick_created(
    newest_id_before: i64,
    intended: &KeyRecord,
    newest_after: &[KeyRecord],
) -> Result<KeyRecord, String> {
    let ignored = ["status", "cross_group_retry", "auto_groups"];
    let mut candidates: Vec<&KeyRecord> = newest_after
        .iter()
        .filter(|record| record.id > newest_id_before)
        .filter(|record| {
            editable_changes(intended, record)
                .iter()
                .all(|change| ignored.contains(&change.field))
        })
        .collect();
    candidates.sort_by_key(|record| record.id);
    match candidates.as_slice() {
        [created] => Ok((*created).clone()),
        [] => Err(format!(
            "the key {:?} was created, but no new key with its name and fields is on the first \
             page of the listing (more than {PAGE_SIZE} keys created at once?); find it with \
             `keys list`",
            intended.name
        )),
        several => Err(format!(
            "the key {:?} was created, but {} new keys match it (ids {}): another client \
             created one with the same name and fields at the same time; check with `keys get`",
            intended.name,
            several.len(),
            several
                .iter()
                .map(|record| record.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: i64, name: &str) -> KeyRecord {
        KeyRecord {
            id,
            status: 1,
            name: name.into(),
            expired_time: -1,
            remain_quota: 1_000,
            allow_ips: Some(String::new()),
            ..KeyRecord::default()
        }
    }

    #[test]
    fn the_created_key_is_the_one_newer_key_with_the_requested_fields() {
        let intended = record(0, "ci");
        let older_same_name = record(10, "ci");
        let other = record(12, "other");
        let created = record(11, "ci");
        let found = pick_created(10, &intended, &[other.clone(), created, older_same_name]);
        assert_eq!(found.map(|record| record.id), Ok(11));

        let different_quota = KeyRecord {
            remain_quota: 5,
            ..record(13, "ci")
        };
        let error = pick_created(12, &intended, &[different_quota, other]).unwrap_err();
        assert!(
            error.contains("was created") && error.contains("keys list"),
            "{error}"
        );

        let error = pick_created(10, &intended, &[record(11, "ci"), record(14, "ci")]).unwrap_err();
        assert!(error.contains("ids 11, 14"), "{error}");
    }
}
