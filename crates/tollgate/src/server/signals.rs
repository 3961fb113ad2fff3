//! Signals of `tollgate serve`: SIGHUP reloads the config, SIGTERM and
//! SIGINT stop the gateway.

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::admin;
use crate::state::AppState;

/// The handlers for SIGTERM and SIGHUP, installed before the gateway says
/// it listens: until a handler is installed a SIGHUP kills the process (its
/// default action), and a supervisor may send one as soon as it sees the
/// banner.
pub(super) struct Signals(Option<(Signal, Signal)>);

impl Signals {
    pub(super) fn install() -> Signals {
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(hup)) => Signals(Some((term, hup))),
            _ => {
                tracing::error!("cannot install signal handlers; stopping on Ctrl-C only");
                Signals(None)
            }
        }
    }
}

/// Returns on SIGTERM or SIGINT; reloads on SIGHUP meanwhile.
pub(super) async fn wait_for_stop(state: &AppState, signals: Signals) {
    let Signals(Some((mut term, mut hup))) = signals else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => {
                let outcome = state.reload();
                if let Err(e) = &outcome {
                    tracing::error!(error = %e, problems = %e.problems(),
                        "reload on SIGHUP rejected; the previous config stays in force");
                }
                admin::audit::reloaded_by_signal(state, outcome.is_ok()).await;
            }
        }
    }
}
