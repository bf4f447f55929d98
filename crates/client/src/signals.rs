//! Signals that end a session the way `/quit` does: Ctrl-C (SIGINT), the terminal closing
//! (SIGHUP) and a polite kill (SIGTERM). Each one makes the client send `leave`, so that its
//! name is free again at once instead of after the server's idle timeout.

use tokio::sync::mpsc;

/// A channel that yields once for every SIGINT, SIGTERM or SIGHUP. Must be called inside the
/// runtime. A signal that cannot be watched is logged and simply not watched: the session
/// still works, it just cannot leave on that signal.
pub fn leave_signals() -> mpsc::Receiver<()> {
    let (sender, receiver) = mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        for kind in [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
        ] {
            match signal(kind) {
                Ok(mut stream) => {
                    let sender = sender.clone();
                    tokio::spawn(async move {
                        while stream.recv().await.is_some() {
                            // A full channel already carries a request to leave.
                            let _ = sender.try_send(());
                        }
                    });
                }
                Err(error) => tracing::warn!(%error, ?kind, "cannot watch a signal"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                let _ = sender.try_send(());
            }
        });
    }
    receiver
}
