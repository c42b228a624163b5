//! Corral's storage: one [`Store`] trait modelled on etcd's MVCC, and its
//! backends.
//!
//! - [`etcd::EtcdStore`]: the HA backend, over etcd 3.4+.
//! - [`embedded::EmbeddedStore`]: the single-machine default, SQLite under
//!   `$CORRAL_HOME` (or in memory for tests).
//!
//! Every write carries its own precondition (create-if-absent, or the
//! `mod_revision` it expects) and gets its own result, even when concurrent
//! writes are committed together in one transaction (group commit). Revisions
//! only grow; a watch replays history from any revision not yet compacted and
//! then follows live changes. Errors are typed ([`StoreError`]); nothing panics.
//!
//! Revision semantics shared by the backends: writes committed in one etcd
//! transaction share one revision (etcd gives a transaction one revision), so
//! a consumer resuming a watch must ask for the revision it last saw again
//! (`start_revision` is inclusive) and tolerate seeing an event twice. A
//! watch stream delivers each revision's changes together (an etcd watch
//! response never splits a revision), so a consumer whose stream broke
//! resumes after the last revision it applied and neither misses nor repeats
//! a change.

pub mod embedded;
pub mod etcd;
mod group;
#[cfg(feature = "testing")]
pub mod testing;

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

pub use group::{CommitStats, CommitStatsSnapshot, GroupCommitConfig};

/// A store revision: a counter that grows with every committed write.
pub type Revision = i64;

/// One key and its value at some revision.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (serialized object).
    pub value: Vec<u8>,
    /// The revision that created the key (stays until the key is deleted).
    pub create_revision: Revision,
    /// The revision of the last write to the key.
    pub mod_revision: Revision,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .finish()
    }
}

/// A page of keys under a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// Keys starting with this prefix.
    pub prefix: String,
    /// Resume after this key (the last key of the previous page).
    pub start_after: Option<String>,
    /// At most this many items; 0 means no limit.
    pub limit: usize,
    /// Read as of this revision; `None` reads the latest.
    pub revision: Option<Revision>,
}

impl RangeRequest {
    /// Every key under `prefix`, latest revision.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        RangeRequest {
            prefix: prefix.into(),
            ..Default::default()
        }
    }

    /// Limits the page size.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Reads at a past revision.
    pub fn at(mut self, revision: Revision) -> Self {
        self.revision = Some(revision);
        self
    }

    /// Continues after `key`.
    pub fn after(mut self, key: impl Into<String>) -> Self {
        self.start_after = Some(key.into());
        self
    }
}

/// The result of [`Store::range`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The keys, in ascending order.
    pub items: Vec<KeyValue>,
    /// The revision the page was read at (use it for the next pages).
    pub revision: Revision,
    /// True when more keys follow the last item.
    pub more: bool,
}

/// What happened to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or updated; `kv.create_revision == kv.mod_revision` on creation.
    Put {
        /// The new state.
        kv: KeyValue,
        /// The state before, when known.
        prev: Option<KeyValue>,
    },
    /// The key was deleted at `revision`; `prev` is its last state.
    Delete {
        /// The state before deletion.
        prev: KeyValue,
        /// The revision of the deletion.
        revision: Revision,
    },
    /// No key: every change under the watched prefix up to `revision` has
    /// been delivered. Sent when asked ([`Store::request_progress`]), so a
    /// watcher learns that the store moved on through changes it does not
    /// watch (keys outside its prefix).
    Progress {
        /// The revision the watch has caught up with.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The revision of the change (or of the progress).
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put { kv, .. } => kv.mod_revision,
            WatchEvent::Delete { revision, .. } | WatchEvent::Progress { revision } => *revision,
        }
    }

    /// The key changed (empty for a progress report).
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put { kv, .. } => &kv.key,
            WatchEvent::Delete { prev, .. } => &prev.key,
            WatchEvent::Progress { .. } => "",
        }
    }
}

/// A stream of changes; it ends with `Err(StoreError::Compacted)` if the
/// watcher falls behind compaction, or `Err(StoreError::Unavailable)` if the
/// backend goes away.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// The result of a successful delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The key's last state.
    pub prev: KeyValue,
    /// The revision of the deletion.
    pub revision: Revision,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist.
    #[error("key {key:?} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// Create-if-absent found the key present.
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The key's mod revision is not the one the write expected.
    #[error("key {key:?} was modified: expected revision {expected}, found {}", current.mod_revision)]
    Conflict {
        /// The key.
        key: String,
        /// The revision the write expected.
        expected: Revision,
        /// The key's current state.
        current: Box<KeyValue>,
    },
    /// The revision asked for was compacted away (the API server's 410 Gone).
    #[error("revision {requested} has been compacted (oldest available: {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The compaction revision: the oldest revision still readable.
        compacted: Revision,
    },
    /// The revision asked for is newer than the store's.
    #[error("revision {requested} is in the future (current: {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// The value is larger than the backend accepts.
    #[error("value for {key:?} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The key.
        key: String,
        /// The value's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The backend is out of space: its disk is full, or etcd's space quota
    /// is reached (its NOSPACE alarm). Writes fail until space is freed;
    /// reads still work.
    #[error("out of space: {message}")]
    NoSpace {
        /// What the backend said.
        message: String,
    },
    /// The backend cannot be reached or failed; the operation may be retried.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What went wrong.
        message: String,
    },
}

impl StoreError {
    pub(crate) fn unavailable(message: impl fmt::Display) -> Self {
        StoreError::Unavailable {
            message: message.to_string(),
        }
    }

    /// The error each write of a failed batch gets: the same when it says
    /// the store is out of space, else the store was unavailable for it.
    pub(crate) fn for_each_write(&self) -> Self {
        match self {
            StoreError::NoSpace { message } => StoreError::NoSpace {
                message: message.clone(),
            },
            other => StoreError::unavailable(other),
        }
    }
}

/// A write with its precondition.
#[derive(Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Create the key; fails with `AlreadyExists` if present.
    Create {
        /// The key.
        key: String,
        /// Its value.
        value: Vec<u8>,
    },
    /// Replace the value if the key's mod revision is `expected`.
    Update {
        /// The key.
        key: String,
        /// The new value.
        value: Vec<u8>,
        /// The mod revision the caller read.
        expected: Revision,
    },
    /// Delete the key, if its mod revision is `expected` when given.
    Delete {
        /// The key.
        key: String,
        /// The mod revision the caller read, if any.
        expected: Option<Revision>,
    },
}

impl WriteOp {
    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            WriteOp::Create { key, .. }
            | WriteOp::Update { key, .. }
            | WriteOp::Delete { key, .. } => key,
        }
    }

    /// Bytes the op adds to a transaction (key + value).
    pub(crate) fn size(&self) -> usize {
        match self {
            WriteOp::Create { key, value } | WriteOp::Update { key, value, .. } => {
                key.len() + value.len()
            }
            WriteOp::Delete { key, .. } => key.len(),
        }
    }
}

impl fmt::Debug for WriteOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteOp::Create { key, value } => write!(f, "Create({key:?}, {} bytes)", value.len()),
            WriteOp::Update {
                key,
                value,
                expected,
            } => {
                write!(
                    f,
                    "Update({key:?}, {} bytes, expected {expected})",
                    value.len()
                )
            }
            WriteOp::Delete { key, expected } => {
                write!(f, "Delete({key:?}, expected {expected:?})")
            }
        }
    }
}

/// The result of one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The key's new state (create, update).
    Written(KeyValue),
    /// The key was deleted.
    Deleted(Deleted),
}

/// Storage with etcd's MVCC semantics. See the crate docs.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// The latest value of `key`, if present.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// A page of the keys under a prefix, at one revision.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError>;

    /// Applies one write. Concurrent calls are committed together (group commit),
    /// each with its own precondition and result.
    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError>;

    /// Changes under `prefix` from `start_revision` (inclusive) on; 0 means
    /// "from now".
    async fn watch(
        &self,
        prefix: &str,
        start_revision: Revision,
    ) -> Result<WatchStream, StoreError>;

    /// As [`Store::watch`], for a watcher that keeps every key's last state
    /// itself (the API server's watch cache): a `Put` may come without its
    /// `prev`, and a `Delete`'s `prev` may hold the key alone (an empty
    /// value), so the backend need not read and send each change's
    /// previous state. By default, [`Store::watch`].
    async fn watch_current(
        &self,
        prefix: &str,
        start_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        self.watch(prefix, start_revision).await
    }

    /// The store's current revision.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// Asks every open watch of this store to report its progress soon, as
    /// a [`WatchEvent::Progress`] at the revision it has caught up with (a
    /// watch that is replaying history reports once it has caught up). A
    /// backend that cannot does nothing; its watchers then learn of the
    /// store's revision only from changes they watch.
    async fn request_progress(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether [`Store::request_progress`] makes watches report progress.
    /// A report is then never ahead of a change the watch has yet to
    /// deliver, so a reader may trust it to say it has seen everything up
    /// to its revision.
    fn reports_progress(&self) -> bool {
        false
    }

    /// Drops history older than `revision`; reads and watches before it then
    /// fail with `Compacted`.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// Creates `key` if absent.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        expect_written(
            self.write(WriteOp::Create {
                key: key.to_owned(),
                value,
            })
            .await?,
        )
    }

    /// Replaces `key` if its mod revision is `expected` (compare-and-swap).
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        expect_written(
            self.write(WriteOp::Update {
                key: key.to_owned(),
                value,
                expected,
            })
            .await?,
        )
    }

    /// Deletes `key`, if its mod revision is `expected` when given.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted, StoreError> {
        match self
            .write(WriteOp::Delete {
                key: key.to_owned(),
                expected,
            })
            .await?
        {
            WriteOutcome::Deleted(d) => Ok(d),
            WriteOutcome::Written(kv) => Err(StoreError::unavailable(format!(
                "backend answered a delete of {:?} with a write",
                kv.key
            ))),
        }
    }
}

fn expect_written(outcome: WriteOutcome) -> Result<KeyValue, StoreError> {
    match outcome {
        WriteOutcome::Written(kv) => Ok(kv),
        WriteOutcome::Deleted(d) => Err(StoreError::unavailable(format!(
            "backend answered a write of {:?} with a delete",
            d.prev.key
        ))),
    }
}

/// The first key after every key starting with `prefix` (etcd's range end).
/// An empty result means "no upper bound".
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}
