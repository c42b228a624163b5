//! The etcd backend (etcd 3.4+), Corral's HA store.
//!
//! Each write is a transaction comparing the key's revision (create-if-absent:
//! `create_revision == 0`; compare-and-swap: `mod_revision == expected`) and
//! reading the key back when the comparison fails, so a conflict carries the
//! current state. Concurrent writes are group-committed: one outer transaction
//! with no comparison holds one nested transaction per write (etcd ≥ 3.3), so
//! every write keeps its own precondition and result while the batch costs one
//! raft round and one fsync. Writes in one batch share the batch's revision.
//!
//! The client spreads requests over every endpoint it is given and fails
//! over between them; every request and watch requires a leader, so a member
//! cut off from its quorum answers at once instead of stalling; with
//! [`EtcdTls`] it speaks TLS and presents a client certificate.

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions,
    GetOptions, Identity, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
    WatchOptions,
};
use futures::StreamExt;
use tokio::sync::mpsc;

use std::sync::Arc;

use crate::group::{self, CommitStats, CommitStatsSnapshot, GroupCommitConfig, Pending};
use crate::{
    Deleted, KeyValue, RangeRequest, RangeResponse, Revision, Store, StoreError, WatchEvent,
    WatchStream, WriteOp, WriteOutcome, prefix_end,
};

/// etcd's default `--max-request-bytes` (1.5 MiB), less room for the request envelope.
pub const MAX_VALUE_BYTES: usize = 1_500_000;

/// A [`Store`] over an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    commits: mpsc::UnboundedSender<Pending>,
    stats: Arc<CommitStats>,
    /// Counts requests for progress; every open watch follows it.
    progress: Arc<tokio::sync::watch::Sender<u64>>,
    /// Whether the server answers progress requests in order with the
    /// changes (see [`progress_is_ordered`]); else none are made.
    ordered_progress: bool,
}

/// Whether an etcd server of `version` answers a progress request only once
/// a watch has delivered every change up to the revision it reports. Older
/// servers answer at once with the store's revision, ahead of changes still
/// on their way to the watch (fixed in 3.4.31 and 3.5.13, the versions
/// Kubernetes requires before it trusts these reports).
fn progress_is_ordered(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    match (major, minor) {
        (3, 4) => patch >= 31,
        (3, 5) => patch >= 13,
        (3, m) => m > 5,
        (m, _) => m > 3,
    }
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

/// Client TLS for etcd: the CA that signed etcd's serving certificate, and
/// this client's certificate and key (PEM; empty: no client certificate).
#[derive(Clone)]
pub struct EtcdTls {
    /// The CA certificate(s).
    pub ca_pem: Vec<u8>,
    /// The client certificate.
    pub cert_pem: Vec<u8>,
    /// The client key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("EtcdTls").finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to `endpoints` (`http://127.0.0.1:2379`) with default group commit.
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        Self::connect_with(endpoints, GroupCommitConfig::default()).await
    }

    /// Connects with explicit group-commit limits.
    pub async fn connect_with(
        endpoints: &[String],
        config: GroupCommitConfig,
    ) -> Result<Self, StoreError> {
        Self::open(endpoints, None, config).await
    }

    /// Connects over TLS (`https://` endpoints) with a client certificate,
    /// as kube-apiserver's `--etcd-cafile`, `--etcd-certfile` and
    /// `--etcd-keyfile`.
    pub async fn connect_tls(endpoints: &[String], tls: &EtcdTls) -> Result<Self, StoreError> {
        Self::open(endpoints, Some(tls), GroupCommitConfig::default()).await
    }

    /// Connects to every endpoint (requests fail over between them), each
    /// request and watch requiring a leader: a member cut off from its
    /// quorum answers with an error at once instead of stalling a watch.
    async fn open(
        endpoints: &[String],
        tls: Option<&EtcdTls>,
        config: GroupCommitConfig,
    ) -> Result<Self, StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(1))
            .with_keep_alive(
                std::time::Duration::from_secs(10),
                std::time::Duration::from_secs(5),
            )
            .with_require_leader(true);
        if let Some(tls) = tls {
            let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if !tls.cert_pem.is_empty() {
                config = config.identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
            }
            options = options.with_tls(config);
        }
        let mut client = Client::connect(endpoints, Some(options))
            .await
            .map_err(map_err)?;
        let ordered_progress = match client.status().await {
            Ok(s) => progress_is_ordered(s.version()),
            Err(e) => {
                tracing::warn!(error = %e, "reading etcd's version; not asking it for progress");
                false
            }
        };
        let committer = client.clone();
        let stats = Arc::new(CommitStats::default());
        let commits = group::spawn(config, stats.clone(), move |ops| {
            let client = committer.clone();
            async move { commit_batch(client, ops).await }
        });
        Ok(EtcdStore {
            client,
            commits,
            stats,
            progress: Arc::new(tokio::sync::watch::channel(0).0),
            ordered_progress,
        })
    }

    /// How concurrent writes have been coalesced so far.
    pub fn commit_stats(&self) -> CommitStatsSnapshot {
        self.stats.snapshot()
    }

    /// The underlying client (for tools and benchmarks).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// etcd's compaction revision, found after a read at `requested` was
    /// refused as compacted (a refused read does not say it; a watch from
    /// that revision does, at once); 0 when it cannot be learnt.
    async fn compaction_revision(&self, requested: Revision) -> Revision {
        let opts = WatchOptions::new().with_start_revision(requested);
        let mut watches = watch_client(&self.client);
        let probe = async {
            let (_requests, mut responses) = watches
                .watch(COMPACTION_PROBE, Some(opts))
                .await
                .ok()?
                .split();
            while let Some(resp) = responses.next().await {
                let resp = resp.ok()?;
                if resp.compact_revision() > 0 {
                    return Some(resp.compact_revision());
                }
                if resp.canceled() {
                    return None;
                }
            }
            None
        };
        tokio::time::timeout(std::time::Duration::from_secs(2), probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// A watch of the keys under `prefix`, with each change's previous
    /// state when `prev` (etcd's `prev_kv`).
    async fn watch_with(
        &self,
        prefix: &str,
        start_revision: Revision,
        prev: bool,
    ) -> Result<WatchStream, StoreError> {
        let end = prefix_end(prefix);
        let mut opts = WatchOptions::new()
            .with_range(if end.is_empty() { vec![0] } else { end })
            .with_progress_notify();
        if prev {
            opts = opts.with_prev_key();
        }
        if start_revision > 0 {
            opts = opts.with_start_revision(start_revision);
        }
        let (mut requests, mut responses) = unsent_retried(|| {
            let (mut watches, opts) = (watch_client(&self.client), opts.clone());
            async move { watches.watch(prefix, Some(opts)).await }
        })
        .await
        .map_err(map_err)?
        .split();
        let requested = start_revision;
        let mut asked = self.progress.subscribe();
        let (tx, rx) = mpsc::channel::<Result<WatchEvent, StoreError>>(256);
        // One task per watch: it passes on etcd's responses and asks etcd for
        // progress when the store is asked to; it ends with the stream's
        // reader, or after the first error.
        tokio::spawn(async move {
            let mut asking = true;
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    changed = asked.changed(), if asking => {
                        // A stream etcd already ended reports that itself.
                        asking = changed.is_ok() && requests.request_progress().await.is_ok();
                    }
                    item = responses.next() => {
                        let Some(item) = item else { return };
                        for ev in watch_response(item, requested) {
                            let failed = ev.is_err();
                            if tx.send(ev).await.is_err() || failed {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// The largest response Corral accepts from etcd. gRPC's default of 4 MiB
/// is less than one page of a list (up to 1,000 objects, each up to etcd's
/// 1.5 MiB request limit) or one watch response carrying a transaction's
/// changes; like kube-apiserver, Corral lets the page size bound it.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// A KV client that accepts responses of any size a page can have.
fn kv_client(client: &Client) -> etcd_client::KvClient {
    client
        .kv_client()
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// A watch client that accepts responses of any size.
fn watch_client(client: &Client) -> etcd_client::WatchClient {
    client
        .watch_client()
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// A key no program writes, watched only to learn the compaction revision.
const COMPACTION_PROBE: &str = "/corral-compaction-probe";

/// How many times a request that never reached etcd is sent again.
const UNSENT_RETRIES: u32 = 8;

/// True when `e` says the request never left this process: no connection
/// to the member the client picked could be made (it is down), so sending
/// it again, likely to another member, cannot apply it twice. The client
/// spreads requests over every endpoint and keeps picking a dead one now
/// and then.
fn never_sent(e: &etcd_client::Error) -> bool {
    let text = e.to_string();
    text.contains("tcp connect error") || text.contains("Connection refused")
}

/// Runs `op` again (after a short pause) while it fails without having
/// reached etcd, at most [`UNSENT_RETRIES`] times.
async fn unsent_retried<T, F, Fut>(mut op: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut tries = 0;
    loop {
        match op().await {
            Err(e) if tries < UNSENT_RETRIES && never_sent(&e) => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5 * u64::from(tries))).await;
            }
            done => return done,
        }
    }
}

fn map_err(e: etcd_client::Error) -> StoreError {
    let message = e.to_string();
    // etcd's words once its backend reached the space quota (NOSPACE alarm).
    if message.contains("database space exceeded") {
        StoreError::NoSpace { message }
    } else {
        StoreError::unavailable(message)
    }
}

/// Maps errors of reads at a revision, where etcd reports compaction and
/// future revisions as gRPC errors.
fn map_read_err(
    e: etcd_client::Error,
    requested: Option<Revision>,
    current: Revision,
) -> StoreError {
    let text = e.to_string();
    if let Some(r) = requested {
        if text.contains("required revision has been compacted") {
            return StoreError::Compacted {
                requested: r,
                compacted: 0,
            };
        }
        if text.contains("required revision is a future revision") {
            return StoreError::FutureRevision {
                requested: r,
                current,
            };
        }
    }
    StoreError::unavailable(text)
}

fn to_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: kv.key_str().map_err(map_err)?.to_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn header_revision(resp: &TxnResponse) -> Revision {
    resp.header().map(|h| h.revision()).unwrap_or(0)
}

/// The transaction applying one write: its comparison, the write on success,
/// a read of the key on failure.
fn txn_for(op: &WriteOp) -> Txn {
    match op {
        WriteOp::Create { key, value } => Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), value.clone(), None)])
            .or_else([TxnOp::get(key.as_str(), None)]),
        WriteOp::Update {
            key,
            value,
            expected,
        } => Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                *expected,
            )])
            .and_then([TxnOp::put(
                key.as_str(),
                value.clone(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]),
        WriteOp::Delete { key, expected } => {
            // Without a precondition, "exists" is the comparison.
            let cmp = match expected {
                Some(rev) => Compare::mod_revision(key.as_str(), CompareOp::Equal, *rev),
                None => Compare::create_revision(key.as_str(), CompareOp::Greater, 0),
            };
            Txn::new()
                .when([cmp])
                .and_then([TxnOp::delete(
                    key.as_str(),
                    Some(DeleteOptions::new().with_prev_key()),
                )])
                .or_else([TxnOp::get(key.as_str(), None)])
        }
    }
}

/// Reads one write's result out of its transaction response.
fn outcome_of(
    op: &WriteOp,
    resp: &TxnResponse,
    revision: Revision,
) -> Result<WriteOutcome, StoreError> {
    let responses = resp.op_responses();
    let first = responses
        .first()
        .ok_or_else(|| StoreError::unavailable("etcd returned an empty transaction response"))?;
    if resp.succeeded() {
        return match (op, first) {
            (WriteOp::Create { key, value }, TxnOpResponse::Put(_)) => {
                Ok(WriteOutcome::Written(KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: revision,
                    mod_revision: revision,
                }))
            }
            (WriteOp::Update { key, value, .. }, TxnOpResponse::Put(put)) => {
                let create_revision = put
                    .prev_key()
                    .map(|p| p.create_revision())
                    .unwrap_or(revision);
                Ok(WriteOutcome::Written(KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision,
                    mod_revision: revision,
                }))
            }
            (WriteOp::Delete { key, .. }, TxnOpResponse::Delete(del)) => {
                let prev = del
                    .prev_kvs()
                    .first()
                    .ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
                Ok(WriteOutcome::Deleted(Deleted {
                    prev: to_kv(prev)?,
                    revision,
                }))
            }
            _ => Err(StoreError::unavailable(
                "etcd answered a write with an unexpected response",
            )),
        };
    }
    let current = match first {
        TxnOpResponse::Get(get) => get.kvs().first().map(to_kv).transpose()?,
        _ => {
            return Err(StoreError::unavailable(
                "etcd answered a failed comparison unexpectedly",
            ));
        }
    };
    let key = op.key().to_owned();
    Err(match (op, current) {
        (WriteOp::Create { .. }, _) => StoreError::AlreadyExists { key },
        (_, None) => StoreError::NotFound { key },
        (WriteOp::Update { expected, .. }, Some(cur))
        | (
            WriteOp::Delete {
                expected: Some(expected),
                ..
            },
            Some(cur),
        ) => StoreError::Conflict {
            key,
            expected: *expected,
            current: Box::new(cur),
        },
        (WriteOp::Delete { expected: None, .. }, Some(_)) => {
            StoreError::unavailable("etcd reported a present key as absent")
        }
    })
}

fn check_size(op: &WriteOp) -> Result<(), StoreError> {
    match op {
        WriteOp::Create { key, value } | WriteOp::Update { key, value, .. }
            if value.len() > MAX_VALUE_BYTES =>
        {
            Err(StoreError::TooLarge {
                key: key.clone(),
                size: value.len(),
                limit: MAX_VALUE_BYTES,
            })
        }
        _ => Ok(()),
    }
}

/// Commits a batch: one transaction for one write, nested transactions for more.
async fn commit_batch(
    client: Client,
    ops: Vec<WriteOp>,
) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError> {
    if let [op] = ops.as_slice() {
        let resp = unsent_retried(|| {
            let mut kv = kv_client(&client);
            async move { kv.txn(txn_for(op)).await }
        })
        .await
        .map_err(map_err)?;
        let rev = header_revision(&resp);
        return Ok(vec![outcome_of(op, &resp, rev)]);
    }
    let resp = unsent_retried(|| {
        let mut kv = kv_client(&client);
        let nested: Vec<TxnOp> = ops.iter().map(|op| TxnOp::txn(txn_for(op))).collect();
        async move { kv.txn(Txn::new().and_then(nested)).await }
    })
    .await
    .map_err(map_err)?;
    let rev = header_revision(&resp);
    let inner = resp.op_responses();
    if inner.len() != ops.len() {
        return Err(StoreError::unavailable(format!(
            "etcd returned {} results for a batch of {}",
            inner.len(),
            ops.len()
        )));
    }
    Ok(ops
        .iter()
        .zip(inner.iter())
        .map(|(op, r)| match r {
            TxnOpResponse::Txn(t) => outcome_of(op, t, rev),
            _ => Err(StoreError::unavailable(
                "etcd returned a non-transaction result in a batch",
            )),
        })
        .collect())
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let resp = unsent_retried(|| {
            let mut kv = kv_client(&self.client);
            async move { kv.get(key, None).await }
        })
        .await
        .map_err(map_err)?;
        resp.kvs().first().map(to_kv).transpose()
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        let end = prefix_end(&request.prefix);
        let start: Vec<u8> = match &request.start_after {
            Some(k) if k.as_str() >= request.prefix.as_str() => {
                let mut s = k.as_bytes().to_vec();
                s.push(0);
                s
            }
            _ => request.prefix.as_bytes().to_vec(),
        };
        let mut opts = GetOptions::new().with_range(if end.is_empty() { vec![0] } else { end });
        if request.limit > 0 {
            opts = opts.with_limit(i64::try_from(request.limit).unwrap_or(i64::MAX));
        }
        if let Some(rev) = request.revision {
            opts = opts.with_revision(rev);
        }
        let resp = match unsent_retried(|| {
            let (mut kv, start, opts) = (kv_client(&self.client), start.clone(), opts.clone());
            async move { kv.get(start, Some(opts)).await }
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                let current = self.current_revision().await.unwrap_or(0);
                return Err(match map_read_err(e, request.revision, current) {
                    StoreError::Compacted { requested, .. } => StoreError::Compacted {
                        requested,
                        compacted: self.compaction_revision(requested).await,
                    },
                    other => other,
                });
            }
        };
        let items = resp
            .kvs()
            .iter()
            .map(to_kv)
            .collect::<Result<Vec<_>, _>>()?;
        let revision = request
            .revision
            .unwrap_or_else(|| resp.header().map(|h| h.revision()).unwrap_or(0));
        Ok(RangeResponse {
            items,
            revision,
            more: resp.more(),
        })
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        check_size(&op)?;
        group::submit(&self.commits, op).await
    }

    async fn watch(
        &self,
        prefix: &str,
        start_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        self.watch_with(prefix, start_revision, true).await
    }

    async fn watch_current(
        &self,
        prefix: &str,
        start_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        // etcd would read every change's previous revision from its backend
        // and send it along: a second value per event that this watcher
        // does not read.
        self.watch_with(prefix, start_revision, false).await
    }

    async fn request_progress(&self) -> Result<(), StoreError> {
        if self.ordered_progress {
            self.progress
                .send_modify(|asked| *asked = asked.wrapping_add(1));
        }
        Ok(())
    }

    fn reports_progress(&self) -> bool {
        self.ordered_progress
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let resp = unsent_retried(|| {
            let mut kv = kv_client(&self.client);
            async move {
                kv.get(vec![0], Some(GetOptions::new().with_count_only()))
                    .await
            }
        })
        .await
        .map_err(map_err)?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        match unsent_retried(|| {
            let mut kv = kv_client(&self.client);
            async move {
                kv.compact(revision, Some(CompactionOptions::new().with_physical()))
                    .await
            }
        })
        .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let text = e.to_string();
                if text.contains("required revision has been compacted") {
                    Err(StoreError::Compacted {
                        requested: revision,
                        compacted: 0,
                    })
                } else if text.contains("required revision is a future revision") {
                    Err(StoreError::FutureRevision {
                        requested: revision,
                        current: self.current_revision().await.unwrap_or(0),
                    })
                } else {
                    Err(StoreError::unavailable(text))
                }
            }
        }
    }
}

/// What one etcd watch response means: its changes; a progress report when
/// it carries none (etcd answers a progress request, or notifies progress,
/// with an empty response at the revision the watch has caught up with); or
/// the error that ends the watch.
fn watch_response(
    item: Result<etcd_client::WatchResponse, etcd_client::Error>,
    requested: Revision,
) -> Vec<Result<WatchEvent, StoreError>> {
    let resp = match item {
        Ok(r) => r,
        Err(e) => return vec![Err(map_err(e))],
    };
    if resp.compact_revision() > 0 {
        return vec![Err(StoreError::Compacted {
            requested,
            compacted: resp.compact_revision(),
        })];
    }
    if resp.canceled() {
        return vec![Err(StoreError::unavailable(format!(
            "etcd cancelled the watch: {}",
            resp.cancel_reason()
        )))];
    }
    if resp.events().is_empty() {
        return match resp.header() {
            Some(h) if !resp.created() => vec![Ok(WatchEvent::Progress {
                revision: h.revision(),
            })],
            _ => Vec::new(),
        };
    }
    resp.events().iter().map(convert_event).collect()
}

fn convert_event(ev: &etcd_client::Event) -> Result<WatchEvent, StoreError> {
    let kv = ev
        .kv()
        .ok_or_else(|| StoreError::unavailable("etcd sent a watch event without a key"))?;
    let prev = ev.prev_kv().map(to_kv).transpose()?;
    match ev.event_type() {
        etcd_client::EventType::Put => Ok(WatchEvent::Put {
            kv: to_kv(kv)?,
            prev,
        }),
        etcd_client::EventType::Delete => {
            let revision = kv.mod_revision();
            let prev = match prev {
                Some(p) => p,
                // etcd omits prev_kv when it was compacted; keep the key at least.
                None => KeyValue {
                    key: kv.key_str().map_err(map_err)?.to_owned(),
                    value: Vec::new(),
                    create_revision: 0,
                    mod_revision: 0,
                },
            };
            Ok(WatchEvent::Delete { prev, revision })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::progress_is_ordered;

    #[test]
    fn progress_is_trusted_from_the_fixed_etcd_versions_on() {
        for (version, ordered) in [
            ("3.4.23", false),
            ("3.4.31", true),
            ("3.5.12", false),
            ("3.5.13", true),
            ("3.6.0", true),
            ("4.0.0", true),
            ("3.3.27", false),
            ("garbage", false),
        ] {
            assert_eq!(progress_is_ordered(version), ordered, "{version}");
        }
    }
}
