//! [`ApiKey`]: a secret that never prints.

use std::fmt;

/// An API key. `Debug` and `Display` print `[redacted]`; only
/// [`expose_secret`](Self::expose_secret) gives the key, for the request header.
///
/// ```
/// use plan_llm::ApiKey;
/// let key = ApiKey::new("sk-live-123456");
/// assert_eq!(format!("{key} {key:?}"), "[redacted] ApiKey([redacted])");
/// assert_eq!(key.expose_secret(), "sk-live-123456");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key (surrounding whitespace, e.g. from a file, is removed).
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into().trim().to_owned())
    }

    /// The key itself: put it in a request header, never in a message.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
