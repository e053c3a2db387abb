//! Users named by email in the rules (`[users] alice = "email:alice@example.com"`): each location's users by
//! email address, from `GET /users/?locationId=` (scope `users.readonly`), cached like the pipelines. A
//! deleted user's address finds nobody.

use std::collections::HashMap;
use std::sync::Arc;

use super::Upstream;
use super::cached::PerLocation;
use crate::event::{LocationId, UserId};

/// What an email address is in one location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(UserId),
    /// No user of the location has it (or theirs was deleted).
    Unknown,
    /// The location's users cannot be read now (a dry run, or the CRM failed lately).
    Unreadable,
}

/// The per-location cache of users by email.
pub struct UserDirectory {
    upstream: Arc<Upstream>,
    cache: PerLocation<HashMap<String, UserId>>,
}

impl UserDirectory {
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Self { upstream, cache: PerLocation::default() }
    }

    /// The user of `location` whose email is `email` (compared in lower case).
    pub async fn find(&self, location: &LocationId, email: &str) -> Lookup {
        let read = async {
            let users = self.upstream.users(location).await?;
            Ok(users.map(|users| {
                let live = users.into_iter().filter(|user| !user.deleted);
                let by_email =
                    live.filter_map(|user| Some((user.email?.trim().to_lowercase(), UserId::parse(&user.id).ok()?)));
                by_email.collect()
            }))
        };
        match self.cache.get(location, "users; email aliases unresolved", read, |_| {}).await {
            None => Lookup::Unreadable,
            Some(emails) => emails.get(&email.to_lowercase()).cloned().map_or(Lookup::Unknown, Lookup::Found),
        }
    }
}
