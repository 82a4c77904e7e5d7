//! Ctrl-C: the first press cancels the run gracefully, the second exits at once.

use crate::exit;

/// Installs the Ctrl-C handler on the current tokio runtime: the first press calls
/// `cancel` (the run stops its steps and saves its state); the second ends the process
/// with exit code 130.
pub fn install(cancel: impl FnOnce() + Send + 'static) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!(
            "\ninterrupted: cancelling the running steps and saving the run (press Ctrl-C again to exit at once)"
        );
        cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted again: exiting now");
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
    });
}
