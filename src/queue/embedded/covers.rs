//! Cover for absences in the embedded store: the contacts followd made a user follow are read from the
//! `known` table (a scan: covers start and end rarely), running covers live in the `covers` table.

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable};

use super::EmbeddedQueue;
use super::tables::{COVERS, KNOWN, OrQueue, parse_contact_key};
use crate::domain::cover::{Cover, Covering};
use crate::event::{ContactKey, UserId};
use crate::queue::{CoverLog, QueueError, StoredCover};

#[async_trait]
impl CoverLog for EmbeddedQueue {
    async fn followed_by(&self, user: &UserId) -> Result<Vec<ContactKey>, QueueError> {
        let user = user.clone();
        self.blocking(move |db| {
            let tx = db.begin_read().q()?;
            let known = tx.open_table(KNOWN).q()?;
            let mut contacts = Vec::new();
            for entry in known.iter().q()? {
                let (key, followers) = entry.q()?;
                let followers: Vec<UserId> = serde_json::from_slice(followers.value())?;
                if followers.contains(&user) {
                    contacts.push(parse_contact_key(key.value())?);
                }
            }
            Ok(contacts)
        })
        .await
    }

    async fn coverings(&self) -> Result<Vec<StoredCover>, QueueError> {
        self.blocking(|db| {
            let tx = db.begin_read().q()?;
            let table = tx.open_table(COVERS).q()?;
            table.iter().q()?.map(|entry| Ok(serde_json::from_slice(entry.q()?.1.value())?)).collect()
        })
        .await
    }

    async fn set_covering(&self, cover: &Cover, covering: Option<Covering>) -> Result<(), QueueError> {
        let key = StoredCover::key(cover);
        let value = covering
            .map(|covering| {
                serde_json::to_vec(&StoredCover { user: cover.user.clone(), by: cover.by.clone(), covering })
            })
            .transpose()?;
        self.write(move |tx| {
            let mut table = tx.open_table(COVERS).q()?;
            match &value {
                Some(value) => table.insert(key.as_str(), value.as_slice()).q()?,
                None => table.remove(key.as_str()).q()?,
            };
            Ok(())
        })
        .await
    }
}
