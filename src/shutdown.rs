//! Turns SIGTERM and SIGINT into one `CancellationToken` that every task watches.
//!
//! systemd and Kubernetes stop a service with SIGTERM; an operator at a terminal presses
//! Ctrl-C. Either cancels the token once; a second signal is left to the default handler's
//! absence, so the shutdown sequence in `app` decides how long the process lingers.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Spawns the signal listener; the returned token is cancelled on the first SIGTERM or SIGINT.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
        cancel.cancel();
    });
    Ok(token)
}
