//! The embedded backend: an MVCC log in SQLite, the single-machine default.
//!
//! Why SQLite (through rusqlite, with SQLite compiled in): the model is the
//! proven one of kine (k3s' etcd shim): one append-only `log` table whose row id
//! is the revision, so history reads, watches from a past revision and
//! compaction are plain indexed SQL; WAL mode with `synchronous=FULL` makes every
//! commit durable; the file can be inspected with the stock `sqlite3` tool.
//!
//! One engine thread owns the connection. It takes whatever requests queued
//! while it was busy, answers the reads, then applies every write of the batch
//! in one transaction (one fsync: group commit) and publishes the changes to
//! watchers. Each write gets its own revision. Watchers replay history from the
//! log, then follow the live feed; one that falls behind re-reads the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::group::{CommitStats, CommitStatsSnapshot};
use crate::{
    Deleted, KeyValue, RangeRequest, RangeResponse, Revision, Store, StoreError, WatchEvent,
    WatchStream, WriteOp, WriteOutcome, prefix_end,
};

/// Most requests the engine takes in one turn (and so most writes per transaction).
const MAX_BATCH: usize = 256;
/// Events read from the log per history page when a watcher catches up.
const HISTORY_PAGE: usize = 1000;
/// Live batches buffered per watcher before it must catch up from the log.
const LIVE_BUFFER: usize = 1024;
/// Largest value accepted, like etcd's request limit.
pub const MAX_VALUE_BYTES: usize = 1_500_000;

/// A [`Store`] in one SQLite database file (or in memory).
#[derive(Clone)]
pub struct EmbeddedStore {
    requests: mpsc::UnboundedSender<Request>,
    live: broadcast::Sender<Arc<Vec<WatchEvent>>>,
    path: Option<PathBuf>,
    stats: Arc<CommitStats>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Request {
    Get(String, Reply<Option<KeyValue>>),
    Range(RangeRequest, Reply<RangeResponse>),
    History {
        prefix: String,
        from: Revision,
        reply: Reply<History>,
    },
    Write(WriteOp, Reply<WriteOutcome>),
    Revision(Reply<Revision>),
    Compact(Revision, Reply<()>),
    /// Report progress to every live watcher.
    Progress(Reply<()>),
}

/// A page of the log for a catching-up watcher.
struct History {
    events: Vec<WatchEvent>,
    /// The engine's revision when the page was read.
    revision: Revision,
    /// True when the page was cut short.
    more: bool,
}

/// Makes `path` (created empty if missing) and the WAL files next to it
/// readable by their owner only: the store holds every Secret. SQLite gives
/// the `-wal` and `-shm` files it creates the database file's mode.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        if std::path::Path::new(&p).exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

impl EmbeddedStore {
    /// Opens (creating if needed, readable by its owner only) the database at `path`. Revisions and data
    /// survive restarts.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        private_file(&path)
            .map_err(|e| StoreError::unavailable(format!("creating {}: {e}", path.display())))?;
        let conn = Connection::open(&path)
            .map_err(|e| StoreError::unavailable(format!("opening {}: {e}", path.display())))?;
        Self::start(conn, Some(path))
    }

    /// A store that lives in memory only, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(sql)?;
        Self::start(conn, None)
    }

    /// How concurrent writes have been coalesced so far.
    pub fn commit_stats(&self) -> CommitStatsSnapshot {
        self.stats.snapshot()
    }

    /// The database file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn start(conn: Connection, path: Option<PathBuf>) -> Result<Self, StoreError> {
        let engine = Engine::new(conn)?;
        let (requests, rx) = mpsc::unbounded_channel();
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let publisher = live.clone();
        let stats = Arc::new(CommitStats::default());
        let engine_stats = stats.clone();
        std::thread::Builder::new()
            .name("corral-embedded-store".into())
            .spawn(move || engine.run(rx, publisher, &engine_stats))
            .map_err(|e| StoreError::unavailable(format!("starting the store thread: {e}")))?;
        Ok(EmbeddedStore {
            requests,
            live,
            path,
            stats,
        })
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(make(tx))
            .map_err(|_| StoreError::unavailable("the embedded store has stopped"))?;
        rx.await
            .map_err(|_| StoreError::unavailable("the embedded store dropped a request"))?
    }
}

mod write;
use write::apply;

fn sql(e: rusqlite::Error) -> StoreError {
    let full = matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull));
    let message = format!("sqlite: {e}");
    if full {
        StoreError::NoSpace { message }
    } else {
        StoreError::unavailable(message)
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    revision        INTEGER PRIMARY KEY AUTOINCREMENT,
    key             TEXT    NOT NULL,
    deleted         INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision   INTEGER NOT NULL,
    value           BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_revision ON log (key, revision);
CREATE TABLE IF NOT EXISTS live (
    key      TEXT PRIMARY KEY,
    revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

/// The thread-owned half: the connection and the revision counters.
struct Engine {
    conn: Connection,
    revision: Revision,
    compacted: Revision,
}

/// A log row.
struct Row {
    revision: Revision,
    key: String,
    deleted: bool,
    create_revision: Revision,
    prev_revision: Revision,
    value: Vec<u8>,
}

impl Row {
    fn kv(&self) -> KeyValue {
        KeyValue {
            key: self.key.clone(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.revision,
        }
    }

    fn from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        Ok(Row {
            revision: r.get(0)?,
            key: r.get(1)?,
            deleted: r.get::<_, i64>(2)? != 0,
            create_revision: r.get(3)?,
            prev_revision: r.get(4)?,
            value: r.get(5)?,
        })
    }
}

const ROW: &str = "l.revision, l.key, l.deleted, l.create_revision, l.prev_revision, l.value";

impl Engine {
    fn new(conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        // Every statement is prepared once and cached. Without the query
        // planner stability guarantee, SQLite re-prepares (parses and plans
        // again) a cached statement whenever a newly bound key could change
        // the plan, which it considers for every lookup by key: that was a
        // sixth of the engine's time. The plans here do not depend on values.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        let revision: Revision = conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'log'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?
            .unwrap_or(0);
        let compacted: Revision = conn
            .query_row("SELECT value FROM meta WHERE name = 'compacted'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql)?
            .unwrap_or(0);
        Ok(Engine {
            conn,
            revision,
            compacted,
        })
    }

    fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Request>,
        live: broadcast::Sender<Arc<Vec<WatchEvent>>>,
        stats: &CommitStats,
    ) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let mut writes = Vec::new();
            for req in batch {
                match req {
                    Request::Get(key, reply) => {
                        let _ = reply.send(self.get(&key));
                    }
                    Request::Range(r, reply) => {
                        let _ = reply.send(self.range(&r));
                    }
                    Request::History {
                        prefix,
                        from,
                        reply,
                    } => {
                        let _ = reply.send(self.history(&prefix, from));
                    }
                    Request::Revision(reply) => {
                        let _ = reply.send(Ok(self.revision));
                    }
                    Request::Compact(rev, reply) => {
                        let _ = reply.send(self.compact(rev));
                    }
                    Request::Progress(reply) => {
                        // Every change up to this revision is already on the
                        // feed, ahead of this report. No watcher is fine.
                        let _ = live.send(Arc::new(vec![WatchEvent::Progress {
                            revision: self.revision,
                        }]));
                        let _ = reply.send(Ok(()));
                    }
                    Request::Write(op, reply) => writes.push((op, reply)),
                }
            }
            if !writes.is_empty() {
                stats.record(writes.len());
                self.commit(writes, &live);
            }
        }
    }

    /// Applies every write in one transaction; each keeps its own result.
    fn commit(
        &mut self,
        writes: Vec<(WriteOp, Reply<WriteOutcome>)>,
        live: &broadcast::Sender<Arc<Vec<WatchEvent>>>,
    ) {
        let start_revision = self.revision;
        let mut results = Vec::with_capacity(writes.len());
        let mut events = Vec::new();
        let outcome = (|| -> Result<(), StoreError> {
            let tx = self.conn.transaction().map_err(sql)?;
            let mut revision = start_revision;
            for (op, _) in &writes {
                let r = apply(&tx, op, &mut revision)?;
                if let Ok((_, ev)) = &r {
                    events.push(ev.clone());
                }
                results.push(r.map(|(o, _)| o));
            }
            tx.commit().map_err(sql)?;
            self.revision = revision;
            Ok(())
        })();
        match outcome {
            Ok(()) => {
                for ((_, reply), r) in writes.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
                if !events.is_empty() {
                    // No receivers is fine: nobody watches.
                    let _ = live.send(Arc::new(events));
                }
            }
            Err(e) => {
                self.revision = start_revision;
                for (_, reply) in writes {
                    let _ = reply.send(Err(e.for_each_write()));
                }
            }
        }
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {ROW} FROM live c JOIN log l ON l.revision = c.revision WHERE c.key = ?1"
            ))
            .map_err(sql)?
            .query_row([key], Row::from_sql)
            .optional()
            .map_err(sql)
            .map(|r| r.map(|r| r.kv()))
    }

    fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        let at = req.revision.unwrap_or(self.revision);
        if at > self.revision {
            return Err(StoreError::FutureRevision {
                requested: at,
                current: self.revision,
            });
        }
        if req.revision.is_some() && at < self.compacted {
            return Err(StoreError::Compacted {
                requested: at,
                compacted: self.compacted,
            });
        }
        let end = prefix_end(&req.prefix);
        let end = if end.is_empty() { vec![0xff; 8] } else { end };
        let after = match &req.start_after {
            Some(k) if k.as_str() >= req.prefix.as_str() => k.as_bytes().to_vec(),
            _ => Vec::new(),
        };
        // Fetch one more than asked to learn whether more follow.
        let fetch = if req.limit == 0 {
            -1
        } else {
            i64::try_from(req.limit).unwrap_or(i64::MAX - 1) + 1
        };
        let mut rows: Vec<Row> = if at == self.revision {
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {ROW} FROM live c JOIN log l ON l.revision = c.revision
                     WHERE c.key >= ?1 AND CAST(c.key AS BLOB) < ?2 AND CAST(c.key AS BLOB) > ?3
                     ORDER BY c.key LIMIT ?4"
                ))
                .map_err(sql)?;
            stmt.query_map(params![req.prefix, end, after, fetch], Row::from_sql)
                .map_err(sql)?
                .collect::<Result<_, _>>()
                .map_err(sql)?
        } else {
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {ROW} FROM log l JOIN (
                         SELECT key, MAX(revision) AS r FROM log
                         WHERE key >= ?1 AND CAST(key AS BLOB) < ?2 AND CAST(key AS BLOB) > ?3 AND revision <= ?4
                         GROUP BY key) m ON l.revision = m.r
                     WHERE l.deleted = 0 ORDER BY l.key LIMIT ?5"
                ))
                .map_err(sql)?;
            stmt.query_map(params![req.prefix, end, after, at, fetch], Row::from_sql)
                .map_err(sql)?
                .collect::<Result<_, _>>()
                .map_err(sql)?
        };
        let more = req.limit > 0 && rows.len() > req.limit;
        rows.truncate(if req.limit == 0 {
            rows.len()
        } else {
            req.limit
        });
        Ok(RangeResponse {
            items: rows.iter().map(Row::kv).collect(),
            revision: at,
            more,
        })
    }

    fn history(&self, prefix: &str, from: Revision) -> Result<History, StoreError> {
        if from < self.compacted {
            return Err(StoreError::Compacted {
                requested: from,
                compacted: self.compacted,
            });
        }
        let end = prefix_end(prefix);
        let end = if end.is_empty() { vec![0xff; 8] } else { end };
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {ROW} FROM log l WHERE l.revision >= ?1 AND l.key >= ?2 AND CAST(l.key AS BLOB) < ?3
                 ORDER BY l.revision LIMIT ?4"
            ))
            .map_err(sql)?;
        let limit = i64::try_from(HISTORY_PAGE).unwrap_or(1000) + 1;
        let mut rows: Vec<Row> = stmt
            .query_map(params![from, prefix, end, limit], Row::from_sql)
            .map_err(sql)?
            .collect::<Result<_, _>>()
            .map_err(sql)?;
        let more = rows.len() > HISTORY_PAGE;
        rows.truncate(HISTORY_PAGE);
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let prev = if row.prev_revision > 0 {
                self.row_at(row.prev_revision)?.map(|r| r.kv())
            } else {
                None
            };
            events.push(to_event(&row, prev));
        }
        Ok(History {
            events,
            revision: self.revision,
            more,
        })
    }

    fn row_at(&self, revision: Revision) -> Result<Option<Row>, StoreError> {
        self.conn
            .prepare_cached(&format!("SELECT {ROW} FROM log l WHERE l.revision = ?1"))
            .map_err(sql)?
            .query_row([revision], Row::from_sql)
            .optional()
            .map_err(sql)
    }

    /// Drops every row no read at `revision` or later can see.
    fn compact(&mut self, revision: Revision) -> Result<(), StoreError> {
        if revision > self.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        if revision <= self.compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted: self.compacted,
            });
        }
        let tx = self.conn.transaction().map_err(sql)?;
        // A row is invisible at `revision` when a newer row of its key is at or
        // before `revision`; a deletion at or before `revision` hides itself too.
        tx.execute(
            "DELETE FROM log WHERE revision < ?1 AND (
                 (deleted = 1) OR EXISTS (
                     SELECT 1 FROM log n WHERE n.key = log.key AND n.revision > log.revision AND n.revision <= ?1))",
            [revision],
        )
        .map_err(sql)?;
        tx.execute(
            "INSERT INTO meta (name, value) VALUES ('compacted', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [revision],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        self.compacted = revision;
        Ok(())
    }
}

fn to_event(row: &Row, prev: Option<KeyValue>) -> WatchEvent {
    if row.deleted {
        WatchEvent::Delete {
            prev: KeyValue {
                key: row.key.clone(),
                value: row.value.clone(),
                create_revision: row.create_revision,
                mod_revision: row.prev_revision,
            },
            revision: row.revision,
        }
    } else {
        WatchEvent::Put { kv: row.kv(), prev }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_owned();
        self.ask(|r| Request::Get(key, r)).await
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.ask(|r| Request::Range(request, r)).await
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.ask(|r| Request::Write(op, r)).await
    }

    async fn watch(
        &self,
        prefix: &str,
        start_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        // Subscribe before reading history so nothing falls between the two.
        let mut live = self.live.subscribe();
        let from = if start_revision > 0 {
            start_revision
        } else {
            self.current_revision().await? + 1
        };
        // Fail fast (before any stream exists) when history is gone.
        let prefix = prefix.to_owned();
        let first = {
            let prefix = prefix.clone();
            self.ask(|reply| Request::History {
                prefix,
                from,
                reply,
            })
            .await?
        };
        let (tx, rx) = mpsc::channel::<Result<WatchEvent, StoreError>>(256);
        let store = self.clone();
        tokio::spawn(async move {
            let mut page = first;
            let mut next = from;
            // Catch up from the log, page by page.
            loop {
                for ev in page.events {
                    next = ev.revision() + 1;
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                if !page.more {
                    next = next.max(page.revision + 1);
                    break;
                }
                let prefix = prefix.clone();
                page = match store
                    .ask(|reply| Request::History {
                        prefix,
                        from: next,
                        reply,
                    })
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
            }
            // Follow the live feed; re-read the log if we fell behind it.
            loop {
                match live.recv().await {
                    Ok(batch) => {
                        for ev in batch.iter() {
                            if let WatchEvent::Progress { revision } = ev {
                                // Everything before `next` was delivered or
                                // is outside the prefix (catching up from
                                // the log may have passed the marker's
                                // revision already).
                                let caught_up = (*revision).max(next - 1);
                                next = caught_up + 1;
                                let report = WatchEvent::Progress {
                                    revision: caught_up,
                                };
                                if tx.send(Ok(report)).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                            if ev.revision() < next || !ev.key().starts_with(prefix.as_str()) {
                                continue;
                            }
                            next = ev.revision() + 1;
                            if tx.send(Ok(ev.clone())).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => loop {
                        let prefix = prefix.clone();
                        let page = match store
                            .ask(|reply| Request::History {
                                prefix,
                                from: next,
                                reply,
                            })
                            .await
                        {
                            Ok(p) => p,
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        };
                        for ev in page.events {
                            next = ev.revision() + 1;
                            if tx.send(Ok(ev)).await.is_err() {
                                return;
                            }
                        }
                        if !page.more {
                            next = next.max(page.revision + 1);
                            break;
                        }
                    },
                    Err(broadcast::error::RecvError::Closed) => {
                        let _ = tx
                            .send(Err(StoreError::unavailable(
                                "the embedded store has stopped",
                            )))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.ask(Request::Revision).await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.ask(|r| Request::Compact(revision, r)).await
    }

    async fn request_progress(&self) -> Result<(), StoreError> {
        self.ask(Request::Progress).await
    }

    fn reports_progress(&self) -> bool {
        true
    }
}
