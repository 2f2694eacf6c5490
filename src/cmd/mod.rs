pub mod check;
pub mod demo;
pub mod process;
pub mod produce;
pub mod quality;
pub mod schemas;
pub mod simulate;
pub mod sink;

/// SIGTERM or Ctrl-C: every long-running job stops on either.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}
