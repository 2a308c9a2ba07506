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

use crate::api::{ApiClient, BudgetPool, ClientBuildError, RequestObserver};
use crate::clock::{unix_now, Clock};
use crate::config::Config;
use crate::http::tls::TlsSetupError;
use crate::http::{self, HttpSettings, WebSecurity};
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
    /// The web config's TLS settings cannot be built (a configuration problem: exit 2).
    #[error("web config: {0}")]
    Tls(#[from] TlsSetupError),
}

/// A daemon whose listen socket is bound and which is ready to run.
pub struct Daemon {
    config: Config,
    listener: TcpListener,
    exporter: Arc<Exporter>,
    security: Arc<WebSecurity>,
    clock: Clock,
}

impl Daemon {
    pub async fn bind(config: Config) -> Result<Daemon, AppError> {
        let security = Arc::new(WebSecurity::from_config(
            config.server.web_config.as_ref(),
            config.server.header_read_timeout,
        )?);
        let address = config.server.listen;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| AppError::Listen { address, source })?;
        Ok(Daemon {
            exporter: Exporter::new(&config.account_names()),
            config,
            listener,
            security,
            clock: Clock::system(),
        })
    }

    /// Polls read this clock instead of the system clock (tests move it across midnight).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn exporter(&self) -> Arc<Exporter> {
        Arc::clone(&self.exporter)
    }

    /// `https` when the web config turns TLS on, else `http`.
    pub fn scheme(&self) -> &'static str {
        self.security.scheme()
    }

    /// What the web config turned on (for tests: the basic-auth check counter).
    pub fn security(&self) -> Arc<WebSecurity> {
        Arc::clone(&self.security)
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AppError> {
        let Daemon {
            config,
            listener,
            exporter,
            security,
            clock,
        } = self;
        let scheme = security.scheme();
        let address = listener
            .local_addr()
            .map(|address| http::display_url(address, scheme))
            .unwrap_or_default();
        let tls = security.tls.is_some();
        let basic_auth = security.basic_auth.is_some();
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
        // Accounts on one server share its request budget (the server limits per client IP).
        let budgets = BudgetPool::for_accounts(
            config
                .accounts
                .iter()
                .map(|account| (account.base_url.as_str(), account.requests_per_minute)),
        );
        for account in &config.accounts {
            let settings = crate::config::client_settings(account, &config.poll);
            let observer: Arc<dyn RequestObserver> = exporter.clone();
            let client = ApiClient::new_in_pool(settings, observer, shutdown.clone(), &budgets)?;
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
                usage: account.usage,
                clock: clock.clone(),
                route_memory: Default::default(),
            };
            pollers.spawn(poller.run(ticks, shutdown.clone()));
        }
        let http_settings = HttpSettings {
            header_read_timeout: config.server.header_read_timeout,
            write_timeout: config.server.write_timeout,
            max_connections: config.server.max_connections,
            max_connections_per_peer: config.server.max_connections_per_peer,
            refusal_summary_interval: http::REFUSAL_SUMMARY_INTERVAL,
            security,
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
        tracing::info!(%address, accounts = config.accounts.len(), tls, basic_auth, "serving /metrics");

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
