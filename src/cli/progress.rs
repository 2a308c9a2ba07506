//! Progress of the long one-shot commands (`scan`, `plan`, `keys list`) on stderr, never on
//! stdout. On a terminal: one live line per account (pages and keys read, and the request
//! budget's estimate of the time left), drawn by indicatif and cleared when the listing is
//! done. Elsewhere (a cron job, a pipe to a log): one line per account when its first page
//! shows that the request budget will make the scan wait at least `NOTICE_AFTER`, with that
//! estimate; a quick scan prints nothing.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::report::plural;
use crate::api::{ScanObserver, ScanProgress};

/// A scan the budget holds back for less than this needs no notice off a terminal.
const NOTICE_AFTER: Duration = Duration::from_secs(1);

/// One per command: the bars of every account it scans.
pub struct ScanProgressDisplay {
    bars: Option<MultiProgress>,
}

impl ScanProgressDisplay {
    /// Live bars when stderr is a terminal, the one-line notice otherwise.
    pub fn on_stderr() -> ScanProgressDisplay {
        let terminal = std::io::stderr().is_terminal();
        ScanProgressDisplay {
            bars: terminal.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    /// The observer for one account's scan; the bar goes away when it is dropped.
    pub fn account(&self, account: &str) -> AccountProgress {
        let bar = self.bars.as_ref().map(|bars| {
            let bar = bars.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template("{prefix}: {msg}")
                    .expect("the progress template is valid"),
            );
            bar.set_prefix(account.to_owned());
            bar.set_message("reading the first page");
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        AccountProgress {
            account: account.to_owned(),
            bar,
            noticed: AtomicBool::new(false),
        }
    }
}

pub struct AccountProgress {
    account: String,
    bar: Option<ProgressBar>,
    noticed: AtomicBool,
}

impl ScanObserver for AccountProgress {
    fn page_read(&self, progress: ScanProgress) {
        match &self.bar {
            Some(bar) => bar.set_message(progress_line(&progress)),
            None => {
                let waits = progress.time_left.is_some_and(|left| left >= NOTICE_AFTER);
                if progress.pages == 1 && waits && !self.noticed.swap(true, Ordering::Relaxed) {
                    eprintln!("{}: {}", self.account, start_notice(&progress));
                }
            }
        }
    }
}

impl Drop for AccountProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `page 3 of 100, 300 of 10000 keys, about 2m 10s left`.
pub fn progress_line(progress: &ScanProgress) -> String {
    let mut line = match progress.pages_left {
        Some(left) => format!(
            "page {} of {}",
            progress.pages,
            u64::from(progress.pages) + left
        ),
        None => format!("page {}", progress.pages),
    };
    match progress.total {
        Some(total) => line.push_str(&format!(
            ", {} of {}",
            progress.keys,
            plural(total, "key", "keys")
        )),
        None => line.push_str(&format!(
            ", {}",
            plural(progress.keys as u64, "key", "keys")
        )),
    }
    if let Some(left) = progress.time_left {
        line.push_str(&format!(", about {} left", short_duration(left)));
    }
    if progress.pass > 1 {
        line.push_str(" (reading the listing again: it changed during the first pass)");
    }
    line
}

/// `listing 10000 keys in 100 pages; the request budget needs about 2m 22s`.
pub fn start_notice(progress: &ScanProgress) -> String {
    let pages = progress
        .pages_left
        .map(|left| u64::from(progress.pages) + left);
    let size = match (progress.total, pages) {
        (Some(total), Some(pages)) => format!(
            "listing {} in {}",
            plural(total, "key", "keys"),
            plural(pages, "page", "pages")
        ),
        _ => "listing the keys".to_owned(),
    };
    let left = progress.time_left.unwrap_or_default();
    format!(
        "{size}; the request budget (requests_per_minute) needs about {}",
        short_duration(left)
    )
}

/// `2m 10s`, `45s`, `1h 5m`.
pub fn short_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64().ceil() as u64;
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3_599 => format!("{}m {}s", seconds / 60, seconds % 60),
        _ => format!("{}h {}m", seconds / 3_600, seconds % 3_600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pages: u32, keys: usize, pages_left: u64, seconds: u64) -> ScanProgress {
        ScanProgress {
            pass: 1,
            pages,
            keys,
            total: Some(10_000),
            pages_left: Some(pages_left),
            time_left: Some(Duration::from_secs(seconds)),
        }
    }

    #[test]
    fn the_line_says_pages_keys_and_time_left() {
        assert_eq!(
            progress_line(&at(3, 300, 97, 130)),
            "page 3 of 100, 300 of 10000 keys, about 2m 10s left"
        );
        assert_eq!(
            start_notice(&at(1, 100, 99, 142)),
            "listing 10000 keys in 100 pages; the request budget (requests_per_minute) needs \
             about 2m 22s"
        );
        assert_eq!(short_duration(Duration::from_millis(400)), "1s");
        assert_eq!(short_duration(Duration::from_secs(3_900)), "1h 5m");
    }
}
