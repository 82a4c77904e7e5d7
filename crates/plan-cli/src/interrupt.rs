//! Ctrl-C: the first press cancels the run gracefully, the second exits at once.

use plan_exec::context::CancelToken;

use crate::exit;

/// Installs the Ctrl-C handler on the current tokio runtime and returns the token it
/// cancels at the first press (the run stops its steps and saves its state). The second
/// press ends the process with exit code 130.
pub fn install() -> CancelToken {
    let token = CancelToken::new();
    let first = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!(
            "\ninterrupted: cancelling the running steps and saving the run (press Ctrl-C again to exit at once)"
        );
        first.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted again: exiting now");
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
    });
    token
}
