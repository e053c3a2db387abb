//! Typed identifiers: a contact, a sub-account (location), a user, an event.
//!
//! They are parsed once, where untrusted input enters (`event/` adapters, rule files), so that everything after
//! that point cannot mix a user id up with a contact id. An id is a non-empty string of at most
//! [`MAX_ID_LEN`] bytes without control characters: the CRM's own ids are 20-character alphanumerics or UUIDs,
//! and generic senders may use their own, so the rule is loose on purpose but keeps ids safe to log and to use
//! as storage keys.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest id accepted; longer values are rejected as malformed input rather than stored.
pub const MAX_ID_LEN: usize = 256;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("contains a control character")]
    ControlCharacter,
}

fn check(raw: &str) -> Result<&str, IdError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        Err(IdError::Empty)
    } else if trimmed.len() > MAX_ID_LEN {
        Err(IdError::TooLong)
    } else if trimmed.chars().any(char::is_control) {
        Err(IdError::ControlCharacter)
    } else {
        Ok(trimmed)
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses untrusted input: surrounding white space is trimmed, then the id rules apply.
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                check(raw).map(|id| Self(id.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, IdError> {
                Self::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A CRM contact.
    ContactId
);
id_type!(
    /// A CRM sub-account ("location" in GoHighLevel's API).
    LocationId
);
id_type!(
    /// A CRM user: what the followers endpoints take.
    UserId
);
id_type!(
    /// The de-duplication key of an event: a webhook delivered twice carries the same one.
    EventId
);

/// How the ids of the changes a reconcile queues begin (`reconcile:<run>:<contact>`).
pub const RECONCILE_EVENT_PREFIX: &str = "reconcile:";

impl EventId {
    /// Whether a reconcile queued this change (background work), rather than a webhook.
    pub fn is_reconcile(&self) -> bool {
        self.0.starts_with(RECONCILE_EVENT_PREFIX)
    }
}

/// How the key an opportunity's follower changes are queued under begins (`opportunity:<id>`, in place of a
/// contact id): the queue orders, coalesces, limits and dead-letters them per opportunity as it does per
/// contact, and delivery calls the opportunity's followers endpoints. Contact ids from senders may not begin so.
pub const OPPORTUNITY_PREFIX: &str = "opportunity:";

impl ContactId {
    /// The queue key of opportunity `id`'s followers.
    pub fn opportunity(id: &str) -> Result<Self, IdError> {
        Self::parse(&format!("{OPPORTUNITY_PREFIX}{}", id.trim()))
    }

    /// The opportunity id, when this key is an opportunity's rather than a contact's.
    pub fn as_opportunity(&self) -> Option<&str> {
        self.0.strip_prefix(OPPORTUNITY_PREFIX)
    }
}

/// How a user named by email in the rules is written until delivery looks them up (`email:alice@example.com`,
/// the address in lower case): `[users] alice = "email:alice@example.com"`.
pub const EMAIL_PREFIX: &str = "email:";

impl UserId {
    /// The email address, when this stands for the user with that email rather than being a user id.
    pub fn email(&self) -> Option<&str> {
        self.0.strip_prefix(EMAIL_PREFIX)
    }
}

/// The contact an event or a queue entry is about. A contact id is only unique within its sub-account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContactKey {
    pub location_id: LocationId,
    pub contact_id: ContactId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_trimmed_and_checked() {
        assert_eq!(ContactId::parse("  c-1 ").map(String::from), Ok("c-1".to_owned()));
        assert_eq!(ContactId::parse("   "), Err(IdError::Empty));
        assert_eq!(UserId::parse("a\nb"), Err(IdError::ControlCharacter));
        assert_eq!(EventId::parse(&"x".repeat(MAX_ID_LEN + 1)), Err(IdError::TooLong));
    }

    #[test]
    fn an_opportunity_s_key_says_it_is_one() {
        let key = ContactId::opportunity(" opp-1 ").unwrap();
        assert_eq!((key.as_str(), key.as_opportunity()), ("opportunity:opp-1", Some("opp-1")));
        assert_eq!(ContactId::parse("c-1").unwrap().as_opportunity(), None);
    }
}
