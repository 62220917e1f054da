//! The async runtime that runs plugin calls with a wall-clock bound.

use super::*;

/// Why [`run_bounded`] gave up on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// The wall-clock limit passed.
    TimedOut,
    /// The caller's cancel flag was raised.
    Cancelled,
}

/// The runtime that drives async plugin calls (hooks, destinations): their
/// HTTP connections and timers live here, apart from the server's runtime.
pub(super) fn plugin_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wasm-plugin-io")
            .enable_all()
            .build()
            .expect("building the plugin I/O runtime")
    })
}

/// Runs `call` (an async plugin call) to completion on the plugin runtime,
/// blocking this thread, but for at most `limit` of wall-clock time and
/// only while `cancel` stays false. Giving up drops the future, which ends
/// the guest wherever it is (in wasm or waiting in the host); its store is
/// then unusable and must be dropped.
///
/// Must not be called from an async task (it blocks); the job threads and
/// `spawn_blocking` closures that call plugins are fine.
pub(crate) fn run_bounded<F: Future>(
    limit: Duration,
    cancel: Option<&AtomicBool>,
    call: F,
) -> Result<F::Output, Stopped> {
    plugin_runtime().block_on(async {
        let cancelled = async {
            match cancel {
                Some(flag) => loop {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                },
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = call => Ok(r),
            () = tokio::time::sleep(limit) => Err(Stopped::TimedOut),
            () = cancelled => Err(Stopped::Cancelled),
        }
    })
}
