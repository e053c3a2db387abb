//! The Redis URL. It may hold a password, so it only displays with the password masked.

use serde::Deserialize;

/// A Redis URL. It may hold a password, so it only displays with the password masked.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The full URL, password included: for the Redis client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("****"));
                write!(f, "{url}")
            }
            Ok(url) => write!(f, "{url}"),
            Err(_) => f.write_str("[unparseable redis url]"),
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

impl RedisUrl {
    /// A URL from a string (tests, tools); configuration deserializes it.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_password_is_masked() {
        let url = RedisUrl("redis://user:hunter2@localhost:6379/0".into());
        assert!(!url.to_string().contains("hunter2"));
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}
