//! Applying one write inside the engine's transaction: the precondition
//! against the key's live row, then the log row that gets the next revision
//! and the live index that points at it. Every write gets its own outcome;
//! only a database failure fails the whole batch.

use super::*;

/// The live row of `key` inside a transaction.
fn live_row(tx: &Transaction<'_>, key: &str) -> Result<Option<Row>, StoreError> {
    tx.prepare_cached(&format!(
        "SELECT {ROW} FROM live c JOIN log l ON l.revision = c.revision WHERE c.key = ?1"
    ))
    .map_err(sql)?
    .query_row([key], Row::from_sql)
    .optional()
    .map_err(sql)
}

/// Applies one write. The outer `Result` is a database failure (the whole batch
/// fails); the inner one is this write's own outcome.
#[allow(clippy::type_complexity)]
pub(super) fn apply(
    tx: &Transaction<'_>,
    op: &WriteOp,
    revision: &mut Revision,
) -> Result<Result<(WriteOutcome, WatchEvent), StoreError>, StoreError> {
    let key = op.key();
    if let WriteOp::Create { value, .. } | WriteOp::Update { value, .. } = op
        && value.len() > MAX_VALUE_BYTES
    {
        return Ok(Err(StoreError::TooLarge {
            key: key.to_owned(),
            size: value.len(),
            limit: MAX_VALUE_BYTES,
        }));
    }
    let current = live_row(tx, key)?;
    let next = *revision + 1;
    let insert =
        |deleted: bool, create_revision: Revision, prev_revision: Revision, value: &[u8]| {
            tx.prepare_cached(
                "INSERT INTO log (revision, key, deleted, create_revision, prev_revision, value)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    next,
                    key,
                    i64::from(deleted),
                    create_revision,
                    prev_revision,
                    value
                ])
            })
            .map_err(sql)
        };
    let set_live = || {
        tx.prepare_cached(
            "INSERT INTO live (key, revision) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET revision = excluded.revision",
        )
        .and_then(|mut s| s.execute(params![key, next]))
        .map_err(sql)
    };
    let result = match (op, current) {
        (WriteOp::Create { value, .. }, None) => {
            insert(false, next, 0, value)?;
            set_live()?;
            let kv = KeyValue {
                key: key.to_owned(),
                value: value.clone(),
                create_revision: next,
                mod_revision: next,
            };
            (
                WriteOutcome::Written(kv.clone()),
                WatchEvent::Put { kv, prev: None },
            )
        }
        (WriteOp::Create { .. }, Some(_)) => {
            return Ok(Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            }));
        }
        (WriteOp::Update { .. } | WriteOp::Delete { .. }, None) => {
            return Ok(Err(StoreError::NotFound {
                key: key.to_owned(),
            }));
        }
        (WriteOp::Update { expected, .. }, Some(cur))
        | (
            WriteOp::Delete {
                expected: Some(expected),
                ..
            },
            Some(cur),
        ) if cur.revision != *expected => {
            return Ok(Err(StoreError::Conflict {
                key: key.to_owned(),
                expected: *expected,
                current: Box::new(cur.kv()),
            }));
        }
        (WriteOp::Update { value, .. }, Some(cur)) => {
            insert(false, cur.create_revision, cur.revision, value)?;
            set_live()?;
            let kv = KeyValue {
                key: key.to_owned(),
                value: value.clone(),
                create_revision: cur.create_revision,
                mod_revision: next,
            };
            (
                WriteOutcome::Written(kv.clone()),
                WatchEvent::Put {
                    kv,
                    prev: Some(cur.kv()),
                },
            )
        }
        (WriteOp::Delete { .. }, Some(cur)) => {
            insert(true, cur.create_revision, cur.revision, &cur.value)?;
            tx.prepare_cached("DELETE FROM live WHERE key = ?1")
                .and_then(|mut s| s.execute([key]))
                .map_err(sql)?;
            let prev = cur.kv();
            (
                WriteOutcome::Deleted(Deleted {
                    prev: prev.clone(),
                    revision: next,
                }),
                WatchEvent::Delete {
                    prev,
                    revision: next,
                },
            )
        }
    };
    *revision = next;
    Ok(Ok(result))
}
