//! Limits on requests in flight, as kube-apiserver's
//! `--max-requests-inflight` and `--max-mutating-requests-inflight`, shared
//! out by priority level in the spirit of API Priority and Fairness:
//! `system:masters` is exempt; nodes and Corral's scheduler and controllers
//! have a quarter of each limit to themselves, so node leases and status
//! reports get through whatever other users do; everyone else shares the
//! rest, each user at most a quarter of it at once. A request waits in line
//! for a slot (first come, first served; a user past their share in a line
//! of their own) for at most [`QUEUE_WAIT`], then is answered 429
//! TooManyRequests with `Retry-After: 1`. The slot is taken once the
//! request's body has arrived, so a slow upload holds none. Long-running
//! requests (watches, followed logs) and health probes are not counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use http::Method;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The limits; 0 means no limit, as in kube-apiserver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlightLimits {
    /// Reads (GET, HEAD, OPTIONS) in flight at once.
    pub readonly: usize,
    /// Writes (POST, PUT, PATCH, DELETE) in flight at once.
    pub mutating: usize,
}

impl Default for InFlightLimits {
    /// kube-apiserver's defaults: 400 reads, 200 writes.
    fn default() -> Self {
        InFlightLimits {
            readonly: 400,
            mutating: 200,
        }
    }
}

/// Which limit a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    /// Not counted: watches, followed logs, health probes.
    LongRunning,
    /// A read.
    ReadOnly,
    /// A write.
    Mutating,
}

impl RequestClass {
    /// The class of a request.
    pub fn of(info: &super::request_info::RequestInfo) -> RequestClass {
        if info.long_running() {
            return RequestClass::LongRunning;
        }
        match info.method {
            Method::GET | Method::HEAD | Method::OPTIONS => RequestClass::ReadOnly,
            _ => RequestClass::Mutating,
        }
    }
}

/// Which share of the server a request draws on: API Priority and
/// Fairness's levels, reduced to what Corral needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PriorityLevel {
    /// `system:masters`: never limited (kube-apiserver's `exempt`).
    Exempt,
    /// Nodes (their leases and status reports) and Corral's scheduler and
    /// controllers: slots of their own that no other user can take (kube's
    /// `system`, `leader-election` and `workload-high`).
    System,
    /// Everyone else: the rest of the slots, each user at most a quarter of
    /// them at once (kube's `workload-low` and `global-default`).
    Workload,
}

/// Users whose requests keep the cluster alive, besides nodes.
const SYSTEM_USERS: &[&str] = &[
    crate::transport::rbac::bootstrap::SCHEDULER,
    crate::transport::rbac::bootstrap::CONTROLLER_MANAGER,
];

impl PriorityLevel {
    /// The level of a request by `user` in `groups`.
    pub fn of(user: &str, groups: &[String]) -> PriorityLevel {
        if groups.iter().any(|g| g == "system:masters") {
            PriorityLevel::Exempt
        } else if groups.iter().any(|g| g == "system:nodes") || SYSTEM_USERS.contains(&user) {
            PriorityLevel::System
        } else {
            PriorityLevel::Workload
        }
    }

    /// Its name in metrics (kube-apiserver's names where they match).
    pub fn name(self) -> &'static str {
        match self {
            PriorityLevel::Exempt => "exempt",
            PriorityLevel::System => "system",
            PriorityLevel::Workload => "workload",
        }
    }
}

/// How long a request waits for a slot before it is answered 429.
pub const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Users a workload pool remembers before it forgets the idle ones.
const USERS_KEPT: usize = 1024;

/// Each user's own slots in a pool.
type UserSlots = Arc<Mutex<HashMap<String, Arc<Semaphore>>>>;

/// One level's slots of one class, and how many are taken.
#[derive(Debug, Clone, Default)]
struct Pool {
    /// `None`: no limit.
    slots: Option<Arc<Semaphore>>,
    /// With a per-user share: each user's own slots (`share` of them).
    users: Option<UserSlots>,
    share: usize,
    taken: Arc<AtomicI64>,
}

impl Pool {
    fn new(size: Option<usize>, per_user: bool) -> Pool {
        Pool {
            slots: size.map(|n| Arc::new(Semaphore::new(n))),
            users: (per_user && size.is_some()).then(Arc::default),
            share: size.map_or(0, |n| (n / 4).max(1)),
            taken: Arc::default(),
        }
    }

    /// `user`'s own semaphore in this pool, when users have shares.
    fn user_slots(&self, user: &str) -> Option<Arc<Semaphore>> {
        let users = self.users.as_ref()?;
        let mut users = users.lock().unwrap_or_else(|e| e.into_inner());
        if users.len() >= USERS_KEPT {
            let share = self.share;
            users.retain(|_, s| s.available_permits() < share);
        }
        Some(
            users
                .entry(user.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.share)))
                .clone(),
        )
    }

    /// A slot, waiting at most [`QUEUE_WAIT`] in line (first come, first
    /// served; a user past their share waits in a line of their own).
    async fn admit(&self, user: &str) -> Result<Slot, ApiError> {
        let deadline = tokio::time::Instant::now() + QUEUE_WAIT;
        let wait = |sem: Arc<Semaphore>| async move {
            match tokio::time::timeout_at(deadline, sem.acquire_owned()).await {
                Ok(Ok(permit)) => Ok(permit),
                _ => Err(ApiError::TooManyRequests),
            }
        };
        let own = match self.user_slots(user) {
            Some(sem) => Some(wait(sem).await?),
            None => None,
        };
        let shared = match &self.slots {
            Some(sem) => Some(wait(sem.clone()).await?),
            None => None,
        };
        self.taken.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            _permits: [own, shared],
            taken: Some(self.taken.clone()),
        })
    }
}

/// The slots of one class at every level.
#[derive(Debug, Clone, Default)]
struct Levels {
    exempt: Arc<AtomicI64>,
    system: Pool,
    workload: Pool,
}

impl Levels {
    /// A quarter of `limit` (at least one) for the system level, the rest
    /// (at least one) for everyone else; 0: no limit.
    fn new(limit: usize) -> Levels {
        let system = (limit > 0).then(|| (limit / 4).max(1));
        let workload = (limit > 0).then(|| (limit - limit / 4).max(1));
        Levels {
            exempt: Arc::default(),
            system: Pool::new(system, false),
            workload: Pool::new(workload, true),
        }
    }

    fn taken(&self) -> [(PriorityLevel, i64); 3] {
        [
            (PriorityLevel::Exempt, self.exempt.load(Ordering::Relaxed)),
            (
                PriorityLevel::System,
                self.system.taken.load(Ordering::Relaxed),
            ),
            (
                PriorityLevel::Workload,
                self.workload.taken.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// The slots of both classes. Cheap to clone; clones share the slots.
#[derive(Debug, Clone)]
pub struct InFlight {
    readonly: Levels,
    mutating: Levels,
}

/// A request's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permits: [Option<OwnedSemaphorePermit>; 2],
    taken: Option<Arc<AtomicI64>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(t) = &self.taken {
            t.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl InFlight {
    /// Slots for `limits`.
    pub fn new(limits: InFlightLimits) -> Self {
        InFlight {
            readonly: Levels::new(limits.readonly),
            mutating: Levels::new(limits.mutating),
        }
    }

    /// A slot for a request of `class` by `user` at `level`, or 429 when
    /// none frees up within [`QUEUE_WAIT`].
    pub async fn admit(
        &self,
        class: RequestClass,
        level: PriorityLevel,
        user: &str,
    ) -> Result<Slot, ApiError> {
        let levels = match class {
            RequestClass::LongRunning => {
                return Ok(Slot {
                    _permits: [None, None],
                    taken: None,
                });
            }
            RequestClass::ReadOnly => &self.readonly,
            RequestClass::Mutating => &self.mutating,
        };
        match level {
            PriorityLevel::Exempt => {
                levels.exempt.fetch_add(1, Ordering::Relaxed);
                Ok(Slot {
                    _permits: [None, None],
                    taken: Some(levels.exempt.clone()),
                })
            }
            PriorityLevel::System => levels.system.admit(user).await,
            PriorityLevel::Workload => levels.workload.admit(user).await,
        }
    }

    /// Requests in flight now: read-only, mutating.
    pub fn taken(&self) -> (i64, i64) {
        let sum = |l: &Levels| l.taken().iter().map(|(_, n)| n).sum();
        (sum(&self.readonly), sum(&self.mutating))
    }

    /// Requests in flight now per level: read-only and mutating together.
    pub fn taken_by_level(&self) -> Vec<(PriorityLevel, i64)> {
        self.readonly
            .taken()
            .iter()
            .zip(self.mutating.taken())
            .map(|((level, r), (_, m))| (*level, r + m))
            .collect()
    }
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight::new(InFlightLimits::default())
    }
}

/// How many watches and followed logs one user may hold open at once, by
/// default (`--max-watches-per-user`).
pub const DEFAULT_WATCHES_PER_USER: usize = 256;

/// The long-running requests (watches, followed logs) each user holds open.
/// Users at the workload level are limited (0: no limit); the exempt and
/// system levels are not. Cheap to clone; clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct OpenStreams {
    per_user: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream, counted until dropped.
#[derive(Debug)]
pub struct StreamTicket {
    open: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl Drop for StreamTicket {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

impl OpenStreams {
    /// At most `per_user` streams per workload user (0: no limit).
    pub fn new(per_user: usize) -> Self {
        OpenStreams {
            per_user,
            open: Arc::default(),
        }
    }

    /// Counts one more stream for `user` (none is counted for the levels
    /// that are not limited), or 429 when they hold their limit already.
    pub fn open(&self, level: PriorityLevel, user: &str) -> Result<Option<StreamTicket>, ApiError> {
        if self.per_user == 0 || level != PriorityLevel::Workload {
            return Ok(None);
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(user.to_owned()).or_default();
        if *n >= self.per_user {
            return Err(ApiError::TooManyRequests);
        }
        *n += 1;
        Ok(Some(StreamTicket {
            open: self.open.clone(),
            user: user.to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classed_as_kube_apiserver_does() {
        let table = [
            (
                Method::GET,
                "/apis/corral.dev/v1alpha1/tasks",
                false,
                RequestClass::ReadOnly,
            ),
            (
                Method::GET,
                "/apis/corral.dev/v1alpha1/tasks",
                true,
                RequestClass::LongRunning,
            ),
            (
                Method::GET,
                "/api/v1/namespaces",
                true,
                RequestClass::LongRunning,
            ),
            (
                Method::GET,
                "/api/v1/namespaces",
                false,
                RequestClass::ReadOnly,
            ),
            (
                Method::GET,
                "/apis/corral.dev/v1alpha1/namespaces/a/tasks/t/log",
                false,
                RequestClass::LongRunning,
            ),
            (Method::GET, "/healthz", false, RequestClass::LongRunning),
            (Method::GET, "/version", false, RequestClass::ReadOnly),
            (
                Method::POST,
                "/api/v1/namespaces",
                false,
                RequestClass::Mutating,
            ),
            (
                Method::POST,
                "/api/v1/namespaces",
                true,
                RequestClass::Mutating,
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/a",
                false,
                RequestClass::Mutating,
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a",
                false,
                RequestClass::Mutating,
            ),
        ];
        for (method, path, watch, want) in table {
            let info = super::super::request_info::RequestInfo::new(
                &crate::kinds::catalog::Catalog::standard(),
                &method,
                path,
                watch.then_some("watch=true"),
                false,
            );
            assert_eq!(
                RequestClass::of(&info),
                want,
                "{method} {path} watch={watch}"
            );
        }
    }

    fn limits(readonly: usize, mutating: usize) -> InFlight {
        InFlight::new(InFlightLimits { readonly, mutating })
    }

    const W: PriorityLevel = PriorityLevel::Workload;
    const S: PriorityLevel = PriorityLevel::System;

    #[test]
    fn levels_follow_who_asks() {
        let groups = |g: &[&str]| g.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            PriorityLevel::of("admin", &groups(&["system:masters"])),
            PriorityLevel::Exempt
        );
        assert_eq!(
            PriorityLevel::of("system:node:n1", &groups(&["system:nodes"])),
            S
        );
        assert_eq!(PriorityLevel::of("system:corral-scheduler", &[]), S);
        assert_eq!(
            PriorityLevel::of("system:corral-controller-manager", &[]),
            S
        );
        assert_eq!(
            PriorityLevel::of("alice", &groups(&["system:authenticated"])),
            W
        );
        // A name alone is not a node.
        assert_eq!(PriorityLevel::of("system:node:n1", &[]), W);
    }

    #[tokio::test(start_paused = true)]
    async fn each_class_is_limited_on_its_own_and_slots_come_back() -> Result<(), ApiError> {
        // Mutating: 1 for the system level, 3 for everyone else (a share of 1 each).
        let inflight = limits(8, 4);
        let w = inflight.admit(RequestClass::Mutating, W, "alice").await?;
        let started = tokio::time::Instant::now();
        assert!(matches!(
            inflight.admit(RequestClass::Mutating, W, "alice").await,
            Err(ApiError::TooManyRequests)
        ));
        assert_eq!(started.elapsed(), QUEUE_WAIT, "it waited in line first");
        // Others still get in, reads beside writes.
        let _b = inflight.admit(RequestClass::Mutating, W, "bob").await?;
        let r = inflight.admit(RequestClass::ReadOnly, W, "alice").await?;
        // Long-running requests are never refused.
        for _ in 0..10 {
            inflight
                .admit(RequestClass::LongRunning, W, "alice")
                .await?;
        }
        assert_eq!(inflight.taken(), (1, 2));
        drop(w);
        drop(r);
        assert_eq!(inflight.taken(), (0, 1));
        inflight.admit(RequestClass::Mutating, W, "alice").await?;
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_given_back_goes_to_whoever_waits() -> Result<(), ApiError> {
        let inflight = limits(4, 4);
        let first = inflight.admit(RequestClass::Mutating, W, "alice").await?;
        let waiting = tokio::spawn({
            let inflight = inflight.clone();
            async move {
                inflight
                    .admit(RequestClass::Mutating, W, "alice")
                    .await
                    .map(|_| ())
            }
        });
        tokio::time::sleep(QUEUE_WAIT / 2).await;
        drop(first);
        waiting
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn nodes_and_controllers_get_slots_no_one_else_can_take() -> Result<(), ApiError> {
        // Mutating: 2 for the system level, 6 for everyone else (1 each).
        let inflight = limits(8, 8);
        let mut held = Vec::new();
        for user in ["a", "b", "c", "d", "e", "f"] {
            held.push(inflight.admit(RequestClass::Mutating, W, user).await?);
        }
        assert!(
            inflight
                .admit(RequestClass::Mutating, W, "g")
                .await
                .is_err(),
            "everyone else's slots are all taken"
        );
        // A node's lease renewal and the scheduler still get in at once.
        let started = tokio::time::Instant::now();
        let _node = inflight
            .admit(RequestClass::Mutating, S, "system:node:n1")
            .await?;
        let _sched = inflight
            .admit(RequestClass::Mutating, S, "system:corral-scheduler")
            .await?;
        assert_eq!(started.elapsed(), std::time::Duration::ZERO);
        // The administrator is never held up.
        for _ in 0..100 {
            held.push(
                inflight
                    .admit(RequestClass::Mutating, PriorityLevel::Exempt, "admin")
                    .await?,
            );
        }
        let by_level = inflight.taken_by_level();
        assert_eq!(by_level, vec![(PriorityLevel::Exempt, 100), (S, 2), (W, 6)]);
        Ok(())
    }

    #[test]
    fn each_user_holds_a_bounded_number_of_streams() -> Result<(), ApiError> {
        let streams = OpenStreams::new(2);
        let a = streams.open(W, "alice")?;
        let _b = streams.open(W, "alice")?;
        assert!(matches!(
            streams.open(W, "alice"),
            Err(ApiError::TooManyRequests)
        ));
        // Others, and the system level, are not held back by her.
        let _c = streams.open(W, "bob")?;
        for _ in 0..10 {
            assert!(streams.open(S, "system:node:n1")?.is_none());
        }
        drop(a);
        let _d = streams.open(W, "alice")?;
        assert!(OpenStreams::new(0).open(W, "alice")?.is_none());
        Ok(())
    }

    #[tokio::test]
    async fn zero_means_no_limit() -> Result<(), ApiError> {
        let inflight = limits(0, 0);
        let mut held = Vec::new();
        for _ in 0..1000 {
            held.push(inflight.admit(RequestClass::Mutating, W, "alice").await?);
        }
        assert_eq!(held.len(), 1000);
        Ok(())
    }
}
