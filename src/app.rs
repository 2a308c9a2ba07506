//! Wires the daemon together and owns its shutdown sequence.
//!
//! `Daemon::bind` claims the listen address (so a port clash fails before anything else
//! starts); `Daemon::run` builds one client and poller per account, the HTTP server and the
//! scheduler, then waits for the shutdown token. Shutdown order: stop ticking, let pollers end
//! (an in-flight poll is cancelled through the same token), drain HTTP — within a few seconds.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ClientBuildError, RequestObserver};
use crate::clock::unix_now;
use crate::config::Config;
use crate::http::{self, HttpSettings};
use crate::metrics::Exporter;
use crate::policy::state::StateError;
use crate::policy::PolicyEngine;
use crate::poller::AccountPoller;
use crate::schedule::{self, PollTarget};

/// How long pollers get to notice shutdown before they are aborted.
const POLLER_SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    #[error("cannot start the poll scheduler: {0}")]
    Scheduler(String),
    /// The policy state directory cannot be used (a configuration problem: exit 2).
    #[error(transparent)]
    PolicyState(#[from] StateError),
}

/// A daemon whose listen socket is bound and which is ready to run.
pub struct Daemon {
    config: Config,
    listener: TcpListener,
    exporter: Arc<Exporter>,
}

impl Daemon {
    pub async fn bind(config: Config) -> Result<Daemon, AppError> {
        let address = config.server.listen;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| AppError::Listen { address, source })?;
        Ok(Daemon {
            exporter: Exporter::new(&config.account_names()),
            config,
            listener,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn exporter(&self) -> Arc<Exporter> {
        Arc::clone(&self.exporter)
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AppError> {
        let Daemon {
            config,
            listener,
            exporter,
        } = self;
        let address = listener
            .local_addr()
            .map(http::display_address)
            .unwrap_or_default();
        let policy = match &config.policy {
            Some(policy_config) => {
                let engine = PolicyEngine::open(
                    policy_config.clone(),
                    &config.account_names(),
                    exporter.registry(),
                )?;
                let hook_engine = Arc::clone(&engine);
                exporter.add_scrape_hook(move || {
                    hook_engine.metrics().refresh_next_runs(unix_now());
                });
                Some(engine)
            }
            None => None,
        };
        // A scheduled rule also ticks the pollers at its times, so it acts on time.
        let mut rule_schedules: Vec<String> = config
            .policy
            .iter()
            .flat_map(|policy| policy.rules.iter())
            .filter_map(|rule| rule.schedule.clone())
            .collect();
        rule_schedules.sort();
        rule_schedules.dedup();
        let mut pollers = JoinSet::new();
        let mut targets = Vec::new();
        for account in &config.accounts {
            let settings = crate::config::client_settings(account, &config.poll);
            let observer: Arc<dyn RequestObserver> = exporter.clone();
            let client = ApiClient::new(settings, observer, shutdown.clone())?;
            let (ticks_sender, ticks) = mpsc::channel(1);
            let poll_running = Arc::new(AtomicBool::new(false));
            targets.push(PollTarget {
                account: account.name.clone(),
                ticks: ticks_sender,
                poll_running: poll_running.clone(),
            });
            let poller = AccountPoller {
                client,
                exporter: exporter.clone(),
                poll_running,
                policy: policy.clone(),
            };
            pollers.spawn(poller.run(ticks, shutdown.clone()));
        }
        let http_settings = HttpSettings {
            header_read_timeout: config.server.header_read_timeout,
            write_timeout: config.server.write_timeout,
            max_connections: config.server.max_connections,
            max_connections_per_peer: config.server.max_connections_per_peer,
            refusal_summary_interval: http::REFUSAL_SUMMARY_INTERVAL,
        };
        let server = tokio::spawn(http::serve(
            listener,
            exporter.clone(),
            http_settings,
            shutdown.clone(),
        ));
        let mut scheduler = match schedule::start(
            &config.poll.schedule,
            &rule_schedules,
            targets,
            exporter.clone(),
        )
        .await
        {
            Ok(scheduler) => scheduler,
            Err(error) => {
                shutdown.cancel();
                return Err(AppError::Scheduler(error.to_string()));
            }
        };
        tracing::info!(%address, accounts = config.accounts.len(), "serving /metrics");

        shutdown.cancelled().await;
        if let Err(error) = scheduler.shutdown().await {
            tracing::warn!(%error, "scheduler did not stop cleanly");
        }
        let pollers_done = async { while pollers.join_next().await.is_some() {} };
        if tokio::time::timeout(POLLER_SHUTDOWN_GRACE, pollers_done)
            .await
            .is_err()
        {
            tracing::warn!("pollers did not stop in time; aborting them");
        }
        if tokio::time::timeout(http::SHUTDOWN_GRACE + Duration::from_secs(1), server)
            .await
            .is_err()
        {
            tracing::warn!("HTTP server did not stop in time");
        }
        tracing::info!("stopped");
        Ok(())
    }
}
