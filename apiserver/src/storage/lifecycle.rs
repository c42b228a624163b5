//! Keeping the store bounded over the long run: periodic compaction and
//! Event expiry, on either store.
//!
//! - **Compaction** (kube-apiserver's `--etcd-compaction-interval`, 5
//!   minutes by default): every interval the store is compacted to the
//!   revision it had one interval earlier, so a watch or paginated list
//!   always has at least one interval of history to resume from (older ones
//!   get 410 Gone and relist, as they would against kube-apiserver), and
//!   every lease renewal, status report and deleted object older than that
//!   is dropped. etcd frees the space for reuse by its own compaction; the
//!   embedded store deletes the rows, and SQLite reuses their pages.
//! - **Event expiry** (`--event-ttl`, 1 hour by default): an Event not
//!   written for longer than the TTL is deleted, conditionally on the
//!   revision it was read at, so one updated meanwhile stays. An Event never
//!   updated was written at its `creationTimestamp` (set by the server); for
//!   one updated since, the sweeper counts from when it first saw that
//!   version (after a restart, from the first sweep). Times the Event's
//!   writer claims (`lastTimestamp`, `eventTime`) decide nothing, so no
//!   writer can keep an Event forever.
//!
//! Several servers over one etcd may all run this; a compaction another
//! one already made is not an error.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use corral_store::{RangeRequest, Revision, Store, StoreError};

/// kube-apiserver's default compaction interval.
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(300);
/// kube-apiserver's default Event TTL.
pub const DEFAULT_EVENT_TTL: Duration = Duration::from_secs(3600);
/// Where core/v1 Events (and so events.k8s.io/v1 ones) are stored.
const EVENTS_PREFIX: &str = "/registry/core/events/";
/// Events read per page while looking for expired ones.
const PAGE: usize = 500;

/// How the store is kept bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    /// How often the store is compacted (`None`: never, as with
    /// kube-apiserver's `--etcd-compaction-interval=0`).
    pub compaction_interval: Option<Duration>,
    /// How long an Event lives after its last write.
    pub event_ttl: Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            compaction_interval: Some(DEFAULT_COMPACTION_INTERVAL),
            event_ttl: DEFAULT_EVENT_TTL,
        }
    }
}

/// Runs compaction and Event expiry over `store` until `stop` turns true.
pub async fn run(
    store: Arc<dyn Store>,
    settings: Lifecycle,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let compaction = async {
        let Some(every) = settings.compaction_interval.filter(|d| !d.is_zero()) else {
            return std::future::pending().await;
        };
        let mut tick = tokio::time::interval(every);
        let mut previous = None;
        loop {
            tick.tick().await;
            previous = compact_step(&*store, previous).await;
        }
    };
    let expiry = async {
        // Often enough that an Event outlives its TTL by a quarter at most.
        let every =
            (settings.event_ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(300));
        let mut tick = tokio::time::interval(every);
        let mut events = EventExpiry::default();
        loop {
            tick.tick().await;
            match events
                .sweep(&*store, settings.event_ttl, jiff::Timestamp::now())
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::debug!(expired = n, "expired events deleted"),
                Err(e) => tracing::debug!(error = %e, "expiring events failed; next round retries"),
            }
        }
    };
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        () = compaction => {}
        () = expiry => {}
    }
}

/// One compaction round: compacts to `previous` (the revision the last
/// round saw) and returns the revision this round saw, for the next.
pub async fn compact_step(store: &dyn Store, previous: Option<Revision>) -> Option<Revision> {
    let current = match store.current_revision().await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "reading the store's revision failed; compaction waits");
            return previous;
        }
    };
    if let Some(target) = previous.filter(|p| *p > 0 && *p <= current) {
        match store.compact(target).await {
            Ok(()) => tracing::debug!(revision = target, "store compacted"),
            // Another server (or an earlier round) got there first.
            Err(StoreError::Compacted { .. }) => {}
            Err(e) => {
                tracing::warn!(error = %e, revision = target, "compacting the store failed");
                return previous;
            }
        }
    }
    Some(current)
}

/// The Events the sweeper saw updated, and when it first saw each version.
#[derive(Debug, Default)]
pub struct EventExpiry {
    updated: HashMap<String, (Revision, jiff::Timestamp)>,
}

impl EventExpiry {
    /// Deletes every Event last written more than `ttl` before `now`;
    /// returns how many went.
    pub async fn sweep(
        &mut self,
        store: &dyn Store,
        ttl: Duration,
        now: jiff::Timestamp,
    ) -> Result<usize, StoreError> {
        let cutoff = now - jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX);
        let mut expired = 0;
        let mut present = HashSet::new();
        let mut after = None;
        loop {
            let mut request = RangeRequest::prefix(EVENTS_PREFIX).limit(PAGE);
            request.start_after = after.take();
            let page = store.range(request).await?;
            for kv in &page.items {
                present.insert(kv.key.clone());
                let written = if kv.mod_revision == kv.create_revision {
                    created_at(&kv.value)
                } else {
                    let seen = self
                        .updated
                        .entry(kv.key.clone())
                        .or_insert((kv.mod_revision, now));
                    if seen.0 != kv.mod_revision {
                        *seen = (kv.mod_revision, now);
                    }
                    Some(seen.1)
                };
                if written.is_some_and(|at| at < cutoff) {
                    match store.delete(&kv.key, Some(kv.mod_revision)).await {
                        Ok(_) => expired += 1,
                        // Updated or deleted meanwhile: not expired after all.
                        Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            match (page.more, page.items.last()) {
                (true, Some(last)) => after = Some(last.key.clone()),
                _ => break,
            }
        }
        self.updated.retain(|k, _| present.contains(k));
        Ok(expired)
    }
}

/// When the server created a stored Event.
fn created_at(value: &[u8]) -> Option<jiff::Timestamp> {
    let event: serde_json::Value = serde_json::from_slice(value).ok()?;
    event
        .pointer("/metadata/creationTimestamp")?
        .as_str()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_was_created_when_the_server_says() {
        for (event, want) in [
            (
                r#"{"metadata":{"creationTimestamp":"2026-12-06T10:00:00Z"},"lastTimestamp":"2036-12-06T11:00:00Z"}"#,
                Some("2026-12-06T10:00:00Z"),
            ),
            (r#"{"metadata":{}}"#, None),
            ("not json", None),
        ] {
            assert_eq!(
                created_at(event.as_bytes()),
                want.map(|w| w.parse::<jiff::Timestamp>().expect("time")),
                "{event}"
            );
        }
    }
}
