//! Group commit: concurrent writes are gathered into batches of distinct keys,
//! and each batch is committed as one transaction.
//!
//! Nothing waits to fill a batch: a batch is whatever queued while earlier
//! batches were committing, so a lone writer pays no latency, and many writers
//! share transactions. A key appears at most once per batch; later writes to
//! it wait for a later batch, in arrival order, so per-key order and each
//! write's own precondition are kept.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};

use crate::{StoreError, WriteOp, WriteOutcome};

/// Limits of one group-committed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// Most writes in one transaction (etcd's default `--max-txn-ops` is 128).
    pub max_batch_ops: usize,
    /// Most key+value bytes in one transaction (etcd's default request limit is 1.5 MiB).
    pub max_batch_bytes: usize,
    /// Transactions committing at once.
    pub max_in_flight: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        GroupCommitConfig {
            max_batch_ops: 64,
            max_batch_bytes: 1024 * 1024,
            max_in_flight: 4,
        }
    }
}

/// Counters of a commit loop: how well concurrent writes were coalesced.
#[derive(Debug, Default)]
pub struct CommitStats {
    batches: AtomicU64,
    writes: AtomicU64,
    largest_batch: AtomicU64,
}

/// A copy of [`CommitStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStatsSnapshot {
    /// Transactions committed.
    pub batches: u64,
    /// Writes committed in them.
    pub writes: u64,
    /// The most writes one transaction held.
    pub largest_batch: u64,
}

impl CommitStats {
    /// Records one committed batch of `writes` writes.
    pub(crate) fn record(&self, writes: usize) {
        let w = u64::try_from(writes).unwrap_or(u64::MAX);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(w, Ordering::Relaxed);
        self.largest_batch.fetch_max(w, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> CommitStatsSnapshot {
        CommitStatsSnapshot {
            batches: self.batches.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
        }
    }
}

/// The reply channel of one queued write.
pub(crate) type Reply = oneshot::Sender<Result<WriteOutcome, StoreError>>;

/// A queued write and where its result goes.
pub(crate) struct Pending<T = Reply> {
    pub(crate) op: WriteOp,
    pub(crate) reply: T,
}

/// Takes the next batch from the front of `queue`: writes in arrival order,
/// distinct keys, within the limits (a single oversized write still forms a
/// batch of its own). Writes to a key already in the batch stay queued, in order.
pub(crate) fn take_batch<T>(
    queue: &mut VecDeque<Pending<T>>,
    config: &GroupCommitConfig,
) -> Vec<Pending<T>> {
    let mut batch = Vec::new();
    let mut keys: HashSet<String> = HashSet::new();
    let mut bytes = 0usize;
    let mut kept = VecDeque::with_capacity(queue.len());
    while let Some(p) = queue.pop_front() {
        let full = batch.len() >= config.max_batch_ops
            || (!batch.is_empty() && bytes + p.op.size() > config.max_batch_bytes);
        if full {
            kept.push_back(p);
            kept.extend(queue.drain(..));
            break;
        }
        if keys.contains(p.op.key()) {
            kept.push_back(p);
            continue;
        }
        keys.insert(p.op.key().to_owned());
        bytes += p.op.size();
        batch.push(p);
    }
    *queue = kept;
    batch
}

/// Starts the group-commit loop. `commit` applies one batch as one transaction
/// and returns one result per write, in order; an `Err` fails the whole batch.
pub(crate) fn spawn<F, Fut>(
    config: GroupCommitConfig,
    stats: Arc<CommitStats>,
    commit: F,
) -> mpsc::UnboundedSender<Pending>
where
    F: Fn(Vec<WriteOp>) -> Fut + Send + 'static,
    Fut:
        Future<Output = Result<Vec<Result<WriteOutcome, StoreError>>, StoreError>> + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
    tokio::spawn(async move {
        let mut queue: VecDeque<Pending> = VecDeque::new();
        let mut in_flight = FuturesUnordered::new();
        let mut open = true;
        loop {
            while in_flight.len() < config.max_in_flight.max(1) && !queue.is_empty() {
                let batch = take_batch(&mut queue, &config);
                let (ops, replies): (Vec<WriteOp>, Vec<Reply>) =
                    batch.into_iter().map(|p| (p.op, p.reply)).unzip();
                stats.record(ops.len());
                let fut = commit(ops);
                in_flight.push(async move { (fut.await, replies) });
            }
            if !open && queue.is_empty() && in_flight.is_empty() {
                return;
            }
            tokio::select! {
                msg = rx.recv(), if open => match msg {
                    Some(p) => {
                        queue.push_back(p);
                        while let Ok(p) = rx.try_recv() {
                            queue.push_back(p);
                        }
                    }
                    None => open = false,
                },
                Some((result, replies)) = in_flight.next(), if !in_flight.is_empty() => {
                    deliver(result, replies);
                }
            }
        }
    });
    tx
}

fn deliver(result: Result<Vec<Result<WriteOutcome, StoreError>>, StoreError>, replies: Vec<Reply>) {
    match result {
        Ok(results) if results.len() == replies.len() => {
            for (r, reply) in results.into_iter().zip(replies) {
                // The caller may have gone away; its write still happened.
                let _ = reply.send(r);
            }
        }
        Ok(results) => {
            let msg = format!(
                "a batch of {} writes returned {} results",
                replies.len(),
                results.len()
            );
            for reply in replies {
                let _ = reply.send(Err(StoreError::unavailable(&msg)));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.for_each_write()));
            }
        }
    }
}

/// Sends one write through the loop and waits for its result.
pub(crate) async fn submit(
    tx: &mpsc::UnboundedSender<Pending>,
    op: WriteOp,
) -> Result<WriteOutcome, StoreError> {
    let (reply, rx) = oneshot::channel();
    tx.send(Pending { op, reply })
        .map_err(|_| StoreError::unavailable("the store's commit loop has stopped"))?;
    rx.await
        .map_err(|_| StoreError::unavailable("the store's commit loop dropped a write"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn put(key: &str, len: usize) -> Pending<usize> {
        Pending {
            op: WriteOp::Create {
                key: key.to_owned(),
                value: vec![0; len],
            },
            reply: 0,
        }
    }

    #[test]
    fn a_batch_holds_each_key_once_and_keeps_later_writes_queued_in_order() {
        let mut q: VecDeque<_> = ["a", "b", "a", "c", "a"]
            .iter()
            .enumerate()
            .map(|(i, k)| Pending {
                reply: i,
                ..put(k, 1)
            })
            .collect();
        let cfg = GroupCommitConfig::default();
        let b: Vec<usize> = take_batch(&mut q, &cfg)
            .into_iter()
            .map(|p| p.reply)
            .collect();
        assert_eq!(b, vec![0, 1, 3]);
        let b: Vec<usize> = take_batch(&mut q, &cfg)
            .into_iter()
            .map(|p| p.reply)
            .collect();
        assert_eq!(b, vec![2]);
        let b: Vec<usize> = take_batch(&mut q, &cfg)
            .into_iter()
            .map(|p| p.reply)
            .collect();
        assert_eq!(b, vec![4]);
        assert!(q.is_empty());
    }

    #[test]
    fn batches_respect_op_and_byte_limits_but_an_oversized_write_still_goes() {
        let cfg = GroupCommitConfig {
            max_batch_ops: 2,
            max_batch_bytes: 10,
            max_in_flight: 1,
        };
        let mut q: VecDeque<_> = vec![put("a", 50), put("b", 1), put("c", 1), put("d", 1)].into();
        assert_eq!(take_batch(&mut q, &cfg).len(), 1);
        assert_eq!(take_batch(&mut q, &cfg).len(), 2);
        assert_eq!(take_batch(&mut q, &cfg).len(), 1);
    }

    proptest! {
        #[test]
        fn batching_loses_nothing_and_keeps_per_key_order(keys in proptest::collection::vec(0u8..6, 0..60), max_ops in 1usize..8) {
            let cfg = GroupCommitConfig { max_batch_ops: max_ops, max_batch_bytes: 1 << 20, max_in_flight: 1 };
            let mut q: VecDeque<_> = keys.iter().enumerate().map(|(i, k)| Pending { reply: i, ..put(&k.to_string(), 1) }).collect();
            let mut order = Vec::new();
            while !q.is_empty() {
                let batch = take_batch(&mut q, &cfg);
                prop_assert!(!batch.is_empty() && batch.len() <= max_ops);
                let distinct: HashSet<_> = batch.iter().map(|p| p.op.key().to_owned()).collect();
                prop_assert_eq!(distinct.len(), batch.len());
                order.extend(batch.into_iter().map(|p| p.reply));
            }
            let mut sorted = order.clone();
            sorted.sort();
            prop_assert_eq!(sorted, (0..keys.len()).collect::<Vec<_>>());
            for k in 0u8..6 {
                let seq: Vec<usize> = order.iter().copied().filter(|i| keys[*i] == k).collect();
                let mut s = seq.clone();
                s.sort();
                prop_assert_eq!(seq, s);
            }
        }
    }
}
