//! Database errors as [`StoreError`]s that say what failed, never with the password.

use deadpool_postgres::PoolError;
use plan_exec::error::{Hint, StoreError};
use tokio_postgres::error::SqlState;

use crate::address::PgAddress;

/// Turns driver errors into store errors for one store: scrubs the password (should a
/// server or a driver ever echo it) and names the server.
#[derive(Clone)]
pub(crate) struct PgErrors {
    password: Option<String>,
    server: String,
}

impl PgErrors {
    pub(crate) fn new(address: &PgAddress) -> Self {
        Self {
            password: address.password().filter(|p| !p.is_empty()),
            server: format!(
                "{} (database `{}`, user `{}`)",
                address.host_port(),
                address.database(),
                address.user()
            ),
        }
    }

    /// `text` without the password.
    pub(crate) fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(p) => text.replace(p.as_str(), "***"),
            None => text.to_owned(),
        }
    }

    /// `what: why` for a failed statement.
    pub(crate) fn store(&self, what: &str, e: &tokio_postgres::Error) -> StoreError {
        let error = StoreError::new(self.scrub(&format!("{what}: {}", describe(e))));
        if crate::outage::is_transient(e) {
            crate::outage::mark_transient(&error.message);
        }
        error
    }

    /// A connection that could not be made or taken from the pool.
    pub(crate) fn connect(&self, e: &PoolError) -> StoreError {
        let why = match e {
            PoolError::Backend(e) => self.connect_reason(e),
            PoolError::Timeout(_) => "timed out waiting for a connection".to_owned(),
            other => other.to_string(),
        };
        let error = StoreError::new(self.scrub(&format!(
            "cannot connect to PostgreSQL at {}: {why}",
            self.server
        )))
        .with_hint(Hint::StorePath);
        if crate::outage::is_transient_pool(e) {
            crate::outage::mark_transient(&error.message);
        }
        error
    }

    /// Why a connection failed, with what to check.
    pub(crate) fn connect_reason(&self, e: &tokio_postgres::Error) -> String {
        let advice = match e.code() {
            Some(c) if *c == SqlState::INVALID_PASSWORD => {
                "check the user and password (in the URL or PGPASSWORD)"
            }
            Some(c) if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
                "check the user, and that the server's pg_hba.conf lets it in from here"
            }
            Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
                "create the database (createdb) or name another one in the URL"
            }
            Some(_) => "check the URL and the server's log",
            None => {
                "check that the server is running and reachable at this host and port, and \
                 the URL's sslmode"
            }
        };
        format!("{}; {advice}", describe(e))
    }
}

/// The error with its causes (tokio-postgres keeps the reason, such as "connection
/// refused", in its source).
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether `e` is a unique-key violation (a second commit of a step's output).
pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}
