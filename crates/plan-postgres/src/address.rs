//! Reading a `postgres://` URL: the connection settings, the TLS mode, and a form that is
//! safe to show (no password).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use plan_exec::error::{Hint, StoreError};
use tokio_postgres::config::{Host, SslMode};

/// Whether `text` is a PostgreSQL URL (`postgres://` or `postgresql://`), as opposed to a
/// SQLite path.
pub fn is_postgres_url(text: &str) -> bool {
    let lower = text.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// `url` with its password (in the user info or a `password=` parameter) replaced by
/// `***`, for messages and logs. Anything that is not a URL is returned as it is.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    // The user info ends at the last `@` of the authority; a `/` after it starts the path.
    let authority_end = before_query
        .rfind('@')
        .map(|at| {
            at + before_query[at..]
                .find('/')
                .unwrap_or(before_query.len() - at)
        })
        .unwrap_or_else(|| before_query.find('/').unwrap_or(before_query.len()));
    let (authority, path) = before_query.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// How the connection is protected, after libpq's `sslmode`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsMode {
    /// `sslmode=disable`: plain TCP.
    Disable,
    /// `sslmode=allow` or `prefer` (the default): TLS when the server offers it, without
    /// checking its certificate, as libpq does.
    Prefer,
    /// `sslmode=require`: TLS or no connection; the certificate is not checked (as in
    /// libpq) unless `sslrootcert` names the CA to check it against.
    Require,
    /// `sslmode=verify-ca` or `verify-full`: TLS, and the server's certificate must chain
    /// to a trusted CA (the system's, or `sslrootcert`) and name the host. `verify-ca`
    /// is checked as strictly as `verify-full`.
    Verify,
}

/// A parsed `postgres://` URL.
#[derive(Clone)]
pub struct PgAddress {
    config: tokio_postgres::Config,
    tls: TlsMode,
    root_cert: Option<PathBuf>,
    redacted: String,
}

impl fmt::Debug for PgAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgAddress")
            .field("url", &self.redacted)
            .field("tls", &self.tls)
            .finish()
    }
}

impl fmt::Display for PgAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// The connection timeout when the URL sets none: a host that drops packets fails in
/// this time rather than hanging.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl PgAddress {
    /// Parses `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?PARAMS]`). Parameters are
    /// libpq's as far as tokio-postgres knows them, plus `sslmode=verify-ca|verify-full`
    /// and `sslrootcert=PATH`. Without a password in the URL, `PGPASSWORD` is used when
    /// set (so the password need not appear on a command line).
    ///
    /// # Errors
    /// [`StoreError`] saying what is wrong with the URL; the message never contains the
    /// password.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        Self::parse_with_env(url, std::env::var("PGPASSWORD").ok())
    }

    fn parse_with_env(url: &str, env_password: Option<String>) -> Result<Self, StoreError> {
        let redacted = redact(url.trim());
        let bad = |why: String| {
            StoreError::new(format!(
                "invalid PostgreSQL URL {redacted}: {why}; expected \
                 postgres://USER@HOST:PORT/DATABASE"
            ))
            .with_hint(Hint::StorePath)
        };
        if !is_postgres_url(url) {
            return Err(bad(
                "it does not start with postgres:// or postgresql://".into()
            ));
        }
        let (base, query) = match url.trim().split_once('?') {
            Some((b, q)) => (b, q),
            None => (url.trim(), ""),
        };
        // Keep what tokio-postgres understands, take out what it does not.
        let mut tls = TlsMode::Prefer;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key {
                "sslmode" => {
                    tls = match percent_decode(value).as_str() {
                        "disable" => TlsMode::Disable,
                        "allow" | "prefer" => TlsMode::Prefer,
                        "require" => TlsMode::Require,
                        "verify-ca" | "verify-full" => TlsMode::Verify,
                        other => {
                            return Err(bad(format!(
                                "unknown sslmode `{other}` (use disable, allow, prefer, require, \
                                 verify-ca or verify-full)"
                            )));
                        }
                    }
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(percent_decode(value))),
                _ => kept.push(param),
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config = tokio_postgres::Config::from_str(&rebuilt).map_err(|e| {
            // tokio-postgres' parse errors name the part that is wrong, never its value.
            bad(e.to_string())
        })?;
        if config.get_hosts().is_empty() {
            return Err(bad("it names no host".into()));
        }
        if config.get_user().is_none() {
            return Err(bad("it names no user".into()));
        }
        if config.get_password().is_none()
            && let Some(password) = env_password.filter(|p| !p.is_empty())
        {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("plan");
        }
        config.ssl_mode(match tls {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::Verify => SslMode::Require,
        });
        Ok(Self {
            config,
            tls,
            root_cert,
            redacted,
        })
    }

    /// The tokio-postgres settings (its `Debug` hides the password).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The TLS mode.
    pub fn tls(&self) -> &TlsMode {
        &self.tls
    }

    /// The CA file given as `sslrootcert`, if any.
    pub fn root_cert(&self) -> Option<&std::path::Path> {
        self.root_cert.as_deref()
    }

    /// The password, when one was given (only to scrub it from messages).
    pub(crate) fn password(&self) -> Option<String> {
        self.config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }

    /// The URL without its password.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// `HOST:PORT` (the first host), for messages.
    pub fn host_port(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    /// The database name (the user name when the URL names none, as in libpq).
    pub fn database(&self) -> String {
        self.config
            .get_dbname()
            .or(self.config.get_user())
            .unwrap_or("postgres")
            .to_owned()
    }

    /// The user name.
    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or("")
    }
}

/// Decodes `%XX` escapes (for parameter values such as a file path).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_postgres_url("postgres://u@h/db"));
        assert!(is_postgres_url("postgresql://u@h/db"));
        assert!(is_postgres_url("POSTGRES://u@h/db"));
        assert!(!is_postgres_url("runs.sqlite"));
        assert!(!is_postgres_url("/tmp/postgres/runs.sqlite"));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://alice:s3cr%40t@db.example.com:5433/plan?sslmode=require"),
            "postgres://alice:***@db.example.com:5433/plan?sslmode=require"
        );
        assert_eq!(
            redact("postgresql://alice@db/plan?password=hunter2&sslmode=disable"),
            "postgresql://alice@db/plan?password=***&sslmode=disable"
        );
        assert_eq!(redact("postgres://db/plan"), "postgres://db/plan");
        assert_eq!(redact("runs.sqlite"), "runs.sqlite");
        // An `@` in the password (badly encoded) still hides all of it.
        assert_eq!(
            redact("postgres://bob:p@ss@host/db"),
            "postgres://bob:***@host/db"
        );
    }

    #[test]
    fn a_url_parses_into_settings_and_shows_no_password() {
        let a = PgAddress::parse_with_env(
            "postgres://alice:hunter2@db.example.com:5433/runs?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
            None,
        )
        .unwrap();
        assert_eq!(a.host_port(), "db.example.com:5433");
        assert_eq!(a.database(), "runs");
        assert_eq!(a.user(), "alice");
        assert_eq!(a.tls(), &TlsMode::Verify);
        assert_eq!(a.root_cert(), Some(std::path::Path::new("/etc/ca.pem")));
        assert_eq!(a.password().as_deref(), Some("hunter2"));
        for shown in [
            format!("{a}"),
            format!("{a:?}"),
            format!("{:?}", a.config()),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn the_environment_password_is_used_only_when_the_url_has_none() {
        let env = Some("from-env".to_owned());
        let a = PgAddress::parse_with_env("postgres://u@h/db", env.clone()).unwrap();
        assert_eq!(a.password().as_deref(), Some("from-env"));
        let a = PgAddress::parse_with_env("postgres://u:in-url@h/db", env).unwrap();
        assert_eq!(a.password().as_deref(), Some("in-url"));
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_the_password() {
        let err = PgAddress::parse_with_env("postgres://u:hunter2@h/db?sslmode=sometimes", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown sslmode `sometimes`"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = PgAddress::parse_with_env("postgres://u:hunter2@h/db?colour=blue", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = PgAddress::parse_with_env("postgres:///db", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no host"), "{err}");
        assert!(PgAddress::parse_with_env("runs.sqlite", None).is_err());
    }
}
