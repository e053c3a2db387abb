//! The journal: how an enqueue is durable without a durable redb commit of its own.
//!
//! A durable redb commit rewrites every page on the path to each row it changed, in every table an enqueue
//! touches, and waits for all of it to reach the disk: about 150 KB and 2 ms per batch here, most of the cost
//! of a webhook on the embedded store. So a batch of plain enqueues is committed to redb without waiting
//! (`Durability::None`: it is visible to every later transaction, and lost in a crash) and its enqueues are
//! appended here, a few hundred bytes each, in one write and one `fdatasync`, before any caller is answered.
//! Every [`CHECKPOINT_EVERY`] a durable redb commit makes everything before it durable and moves the journal
//! to a new epoch; its old frames are then covered and are overwritten from the start of the file. The frames
//! are written by their own thread (`commit.rs`) while the committer runs the next batch.
//!
//! At open, the frames of the current epoch are the enqueues acknowledged since the last durable commit: they
//! are applied again, in order, and made durable (see `mod.rs`). Applying one twice does nothing (its event id
//! is remembered), so the frames a durable commit covers without moving the epoch (a write that failed in its
//! batch and ran alone) are harmless.
//!
//! Only what can be applied again from its frame is journaled: enqueues whose operations need no round robin
//! (a turn is taken from standings the crash may have rolled back, so those commit durably as before). Writes
//! a crash may undo without harm (a lease: a restarted process releases every lease anyway) are committed
//! without waiting and without a frame. Everything else commits durably, and checkpoints the journal.
//!
//! A frame is `magic, epoch, length, crc32, payload` (little endian); reading stops at the first frame that is
//! torn, of another epoch, or not a frame at all (the file is never truncated, only overwritten).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::clock::Millis;
use crate::domain::followers::{Action, FollowerOp, Ownership};
use crate::event::{ContactKey, EventId, UserId};
use crate::queue::{EventOps, PlannedOp, QueueError};

/// Longest the journal stands in for durable commits. A checkpoint writes every page changed since the last
/// one, and every write waits meanwhile, so it is kept short: measured at 64 connections, 30 ms holds the p99
/// near 12 ms, 120 ms near 17 ms, for the same throughput (the pages written per second are the same).
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(30);
/// A journal this long is checkpointed whatever the time.
pub(super) const MAX_BYTES: u64 = 64 << 20;
/// Longest frame: a larger enqueue (a reconcile's batch, say) commits durably instead.
const MAX_FRAME: usize = 4 << 20;
const MAGIC: u32 = 0x4C4A_4446; // "FDJL"
const HEADER: usize = 4 + 8 + 4 + 4;
/// The file grows by this much at a time, written with zeros, so that most frames overwrite bytes the file
/// already has and `fdatasync` has no size or extent to record.
const GROW_BY: u64 = 1 << 20;

/// The journal file, written by the committer thread only.
pub(super) struct Journal {
    file: File,
    path: PathBuf,
    epoch: u64,
    /// Where the next frame goes; 0 when the epoch has none.
    end: u64,
    /// How long the file is.
    len: u64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).field("epoch", &self.epoch).field("end", &self.end).finish()
    }
}

impl Journal {
    /// Opens (or creates) the journal at `path` and reads the payloads of the frames of `epoch`, in order;
    /// writing starts at epoch `epoch + 1` (so nothing of `epoch` is ever mistaken for a later frame), which the
    /// caller records in its next durable commit.
    pub(super) fn open(path: &Path, epoch: u64) -> std::io::Result<(Self, Vec<Vec<u8>>)> {
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let payloads = frames(&bytes, epoch).map(<[u8]>::to_vec).collect();
        let len = bytes.len() as u64;
        let journal = Self { file, path: path.to_owned(), epoch: epoch.wrapping_add(1), end: 0, len };
        Ok((journal, payloads))
    }

    /// The epoch frames are written under now.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Appends one frame per payload, in one write, and waits until they are on the disk.
    pub(super) fn append<'p>(&mut self, payloads: impl Iterator<Item = &'p [u8]>) -> std::io::Result<()> {
        let mut buffer = Vec::new();
        for payload in payloads {
            push_frame(&mut buffer, self.epoch, payload);
        }
        if buffer.is_empty() {
            return Ok(());
        }
        let end = self.end + buffer.len() as u64;
        if end > self.len {
            // Grow the file ahead of the frames, in zeros, so the frames after these overwrite.
            let grown = end.div_ceil(GROW_BY) * GROW_BY;
            buffer.resize((grown - self.end) as usize, 0);
        }
        self.file.seek(SeekFrom::Start(self.end))?;
        self.file.write_all(&buffer)?;
        self.file.sync_data()?;
        self.len = self.len.max(self.end + buffer.len() as u64);
        self.end = end;
        Ok(())
    }

    /// A durable commit recorded `epoch` as the journal's: every frame written so far is covered by it, and
    /// frames start again at the beginning of the file.
    pub(super) fn restart(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.end = 0;
    }
}

fn push_frame(buffer: &mut Vec<u8>, epoch: u64, payload: &[u8]) {
    let len = payload.len() as u32;
    buffer.extend_from_slice(&MAGIC.to_le_bytes());
    buffer.extend_from_slice(&epoch.to_le_bytes());
    buffer.extend_from_slice(&len.to_le_bytes());
    buffer.extend_from_slice(&checksum(epoch, len, payload).to_le_bytes());
    buffer.extend_from_slice(payload);
}

fn checksum(epoch: u64, len: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&epoch.to_le_bytes());
    hasher.update(&len.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The payloads of the frames of `epoch` at the start of `bytes`, up to the first that is not one.
fn frames(bytes: &[u8], epoch: u64) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let header = rest.get(..HEADER)?;
        let word = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        let frame_epoch = u64::from(word(4)) | (u64::from(word(8)) << 32);
        let (len, crc) = (word(12), word(16));
        if word(0) != MAGIC || frame_epoch != epoch || len as usize > MAX_FRAME {
            return None;
        }
        let payload = rest.get(HEADER..HEADER + len as usize)?;
        if checksum(epoch, len, payload) != crc {
            return None;
        }
        rest = &rest[HEADER + len as usize..];
        Some(payload)
    })
}

/// What a frame holds: one enqueue, as [`crate::queue::Queue::enqueue`] was called.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    now: Millis,
    expires: Millis,
    events: Vec<EntryEvent>,
}

#[derive(Debug, Serialize, Deserialize)]
struct EntryEvent {
    event_id: EventId,
    contact: ContactKey,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    background: bool,
    ops: Vec<EntryOp>,
}

#[derive(Debug, Serialize, Deserialize)]
struct EntryOp {
    rule: String,
    op: FollowerOp,
    ownership: Ownership,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lasts: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unless: Vec<UserId>,
}

/// The frame's payload for an enqueue of `batch` at `now`, remembered until `expires`; `None` when it cannot
/// be journaled (a round robin takes a turn, or it is too large) and must commit durably.
pub(super) fn entry(batch: &[EventOps], now: Millis, expires: Millis) -> Option<Vec<u8>> {
    let events = batch
        .iter()
        .map(|event| {
            let ops = event
                .ops
                .iter()
                .map(|planned| {
                    Some(EntryOp {
                        rule: planned.rule.to_string(),
                        op: planned.action.resolve()?,
                        ownership: planned.ownership,
                        lasts: planned.lasts,
                        unless: planned.unless.as_deref().map(<[UserId]>::to_vec).unwrap_or_default(),
                    })
                })
                .collect::<Option<_>>()?;
            Some(EntryEvent {
                event_id: event.event_id.clone(),
                contact: event.contact.clone(),
                background: event.background,
                ops,
            })
        })
        .collect::<Option<_>>()?;
    let payload = serde_json::to_vec(&Entry { now, expires, events }).ok()?;
    (payload.len() <= MAX_FRAME).then_some(payload)
}

/// An enqueue read back from a frame: the batch, its time and its expiry.
pub(super) type Replayed = (Vec<EventOps>, Millis, Millis);

/// Reads back the enqueue a frame's payload holds.
pub(super) fn replayed(payload: &[u8]) -> Result<Replayed, QueueError> {
    let entry: Entry = serde_json::from_slice(payload)?;
    let events = entry
        .events
        .into_iter()
        .map(|event| EventOps {
            event_id: event.event_id,
            contact: event.contact,
            background: event.background,
            ops: event
                .ops
                .into_iter()
                .map(|op| PlannedOp {
                    rule: Arc::from(op.rule),
                    action: Action::from_op(op.op),
                    ownership: op.ownership,
                    lasts: op.lasts,
                    unless: (!op.unless.is_empty()).then(|| Arc::from(op.unless)),
                })
                .collect(),
        })
        .collect();
    Ok((events, entry.now, entry.expires))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event with every field a frame holds set away from its default.
    fn event(id: &str, action: Action) -> EventOps {
        let mut event = super::super::tests::event(id, "c-1", action, Some(5_000));
        event.background = true;
        event.ops[0].ownership = Ownership::Managed;
        event.ops[0].unless = Some(Arc::from(vec![UserId::parse("usr_t").unwrap()]));
        event
    }

    #[test]
    fn an_enqueue_reads_back_as_it_was_asked() {
        let batch = vec![
            event("e1", Action::Add(UserId::parse("usr_a").unwrap())),
            event("e2", Action::Remove(UserId::parse("usr_b").unwrap())),
            event("e3", Action::RemoveAll),
        ];
        let payload = entry(&batch, 10, 20).unwrap();
        assert_eq!(replayed(&payload).unwrap(), (batch, 10, 20));
    }

    #[test]
    fn a_round_robin_is_not_journaled() {
        use crate::domain::pick::{Caps, Member};
        let rotation = crate::domain::rotation::Rotation {
            rule: Arc::from("leads"),
            members: vec![Member { user: UserId::parse("usr_a").unwrap(), weight: 1 }],
            availability: Arc::default(),
            catch_up: false,
            caps: Caps::default(),
            overflow: None,
        };
        let batch = vec![
            event("e1", Action::Add(UserId::parse("usr_a").unwrap())),
            event("e2", Action::RoundRobin(Arc::new(rotation))),
        ];
        assert!(entry(&batch, 10, 20).is_none());
    }

    #[test]
    fn frames_are_read_back_in_order_up_to_a_torn_one_or_one_of_another_epoch() {
        let mut bytes = Vec::new();
        for payload in [&b"one"[..], b"two", b"three"] {
            push_frame(&mut bytes, 7, payload);
        }
        let read = |bytes: &[u8], epoch| frames(bytes, epoch).map(<[u8]>::to_vec).collect::<Vec<_>>();
        assert_eq!(read(&bytes, 7), [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        assert!(read(&bytes, 6).is_empty(), "another epoch's frames are covered");
        // Torn: the last frame cut short, or one byte of it changed.
        assert_eq!(read(&bytes[..bytes.len() - 1], 7).len(), 2);
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(read(&flipped, 7).len(), 2);
        // An older epoch's frame after this epoch's ends the read, and so do zeros.
        let mut mixed = bytes[..HEADER + 3].to_vec();
        push_frame(&mut mixed, 6, b"old");
        assert_eq!(read(&mixed, 7), [b"one".to_vec()]);
        mixed.truncate(HEADER + 3);
        mixed.extend_from_slice(&[0; 64]);
        assert_eq!(read(&mixed, 7), [b"one".to_vec()]);
    }

    #[test]
    fn a_journal_reopened_reads_what_its_epoch_appended_and_writes_the_next_epoch_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut journal, read) = Journal::open(&path, 0).unwrap();
        assert!(read.is_empty());
        assert_eq!(journal.epoch(), 1);
        journal.append([&b"a"[..], b"b"].into_iter()).unwrap();
        journal.append(std::iter::once(&b"c"[..])).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), GROW_BY, "grown ahead, in zeros");
        drop(journal);
        let (mut journal, read) = Journal::open(&path, 1).unwrap();
        assert_eq!(read, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        journal.append(std::iter::once(&b"d"[..])).unwrap();
        drop(journal);
        // Epoch 2 wrote over the start; epoch 1's later frames are still in the file but not read as 2's.
        let (_, read) = Journal::open(&path, 2).unwrap();
        assert_eq!(read, [b"d".to_vec()]);
        let (_, read) = Journal::open(&path, 1).unwrap();
        assert!(read.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn reading_any_bytes_never_panics(bytes: Vec<u8>, epoch in 0u64..3) {
            let _ = frames(&bytes, epoch).count();
        }
    }
}
