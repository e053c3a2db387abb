//! The process's signals: SIGTERM or Ctrl-C to stop, SIGHUP to reload. Each listener logs when it cannot
//! listen, so a missing reload or shutdown path is visible rather than silent.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

/// Runs `reload` after each SIGHUP until `cancel`, one at a time. `what` names what is reloaded, in logs.
/// Several listeners may run at once (the rules, the upstream tokens): each signal reaches every one.
#[cfg(unix)]
pub async fn on_hangup<F, Fut>(what: &'static str, cancel: CancellationToken, mut reload: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::error!(%error, what, "cannot listen for SIGHUP; reload by restarting");
            return;
        }
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            received = hangups.recv() => if received.is_none() { return },
        }
        tracing::info!(what, "SIGHUP received: reloading");
        reload().await;
    }
}
