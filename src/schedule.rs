//! The tokio-cron-scheduler adapter: turns `[poll] interval` or `cron` into ticks.
//!
//! Its only job is to send a tick to each account's poller (on the poll schedule, and at the
//! scheduled times of policy rules). A tick that finds the account's
//! previous poll still running is skipped and counted (`cometapi_poll_skipped_total`), never
//! queued, so polls of one account never overlap and never pile up. `cron` runs as a cron job
//! (6 fields, seconds first, UTC). An `interval` runs as a job firing every second that ticks an
//! account once its interval has passed: the scheduler's own fixed-interval jobs can stop firing
//! for good when a tick falls into the past (tokio-cron-scheduler issue #113).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::config::PollSchedule;
use crate::metrics::Exporter;

/// The scheduler wakes about every 500 ms; a due time within this much is treated as now, so an
/// interval of N seconds fires every N seconds rather than every N+1.
const DUE_TOLERANCE: Duration = Duration::from_millis(600);

/// Where one account's ticks go.
#[derive(Clone)]
pub struct PollTarget {
    pub account: String,
    pub ticks: mpsc::Sender<()>,
    pub poll_running: Arc<AtomicBool>,
}

impl PollTarget {
    /// Starts a poll unless one is running, in which case the tick is skipped and counted.
    pub fn tick(&self, exporter: &Exporter) {
        if self
            .poll_running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            tracing::debug!(account = %self.account, "previous poll still running; tick skipped");
            exporter.count_skipped_tick(&self.account);
            return;
        }
        if self.ticks.try_send(()).is_err() {
            self.poll_running.store(false, Ordering::SeqCst);
        }
    }
}

/// Ticks every target once now (the first poll runs at start), then starts the scheduler.
/// `extra_cron` are more 6-field expressions that tick every target (the schedules of policy
/// rules, so a nightly restore polls and acts at midnight rather than at the next interval).
pub async fn start(
    schedule: &PollSchedule,
    extra_cron: &[String],
    targets: Vec<PollTarget>,
    exporter: Arc<Exporter>,
) -> Result<JobScheduler, JobSchedulerError> {
    for target in &targets {
        target.tick(&exporter);
    }
    let scheduler = JobScheduler::new().await?;
    for expression in extra_cron {
        scheduler
            .add(cron_job(
                expression,
                targets.clone(),
                Arc::clone(&exporter),
            )?)
            .await?;
    }
    let job = match schedule {
        PollSchedule::Cron(expression) => cron_job(expression, targets, exporter)?,
        PollSchedule::Interval(interval) => {
            let interval = *interval;
            let due_times = Mutex::new(vec![Instant::now() + interval; targets.len()]);
            Job::new_async("* * * * * *", move |_, _| {
                let now = Instant::now();
                let mut due_times = due_times
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                for (target, due) in targets.iter().zip(due_times.iter_mut()) {
                    if now + DUE_TOLERANCE >= *due {
                        *due += interval;
                        if *due + DUE_TOLERANCE < now {
                            *due = now + interval;
                        }
                        target.tick(&exporter);
                    }
                }
                Box::pin(async {})
            })?
        }
    };
    scheduler.add(job).await?;
    scheduler.start().await?;
    Ok(scheduler)
}

/// A cron job (6 fields, UTC) that ticks every target.
fn cron_job(
    expression: &str,
    targets: Vec<PollTarget>,
    exporter: Arc<Exporter>,
) -> Result<Job, JobSchedulerError> {
    Job::new_async(expression, move |_, _| {
        for target in &targets {
            target.tick(&exporter);
        }
        Box::pin(async {})
    })
}
