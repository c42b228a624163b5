//! Limits on requests in flight, as kube-apiserver's
//! `--max-requests-inflight` and `--max-mutating-requests-inflight`: past
//! its class's limit a request is answered at once with 429 TooManyRequests
//! and `Retry-After: 1` (clients back off and retry) instead of queueing
//! behind work the server cannot finish. Long-running requests (watches,
//! followed logs) and health probes are not counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

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

/// One class's slots and how many are taken.
#[derive(Debug, Clone, Default)]
struct Class {
    /// `None`: no limit.
    slots: Option<Arc<Semaphore>>,
    taken: Arc<AtomicI64>,
}

/// The slots of both classes. Cheap to clone; clones share the slots.
#[derive(Debug, Clone)]
pub struct InFlight {
    readonly: Class,
    mutating: Class,
}

/// A request's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
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
        let class = |n: usize| Class {
            slots: (n > 0).then(|| Arc::new(Semaphore::new(n))),
            taken: Arc::default(),
        };
        InFlight {
            readonly: class(limits.readonly),
            mutating: class(limits.mutating),
        }
    }

    /// A slot for a request of `class`, or 429 when its class is full.
    pub fn admit(&self, class: RequestClass) -> Result<Slot, ApiError> {
        let class = match class {
            RequestClass::LongRunning => {
                return Ok(Slot {
                    _permit: None,
                    taken: None,
                });
            }
            RequestClass::ReadOnly => &self.readonly,
            RequestClass::Mutating => &self.mutating,
        };
        let permit = match &class.slots {
            None => None,
            Some(s) => Some(
                s.clone()
                    .try_acquire_owned()
                    .map_err(|_| ApiError::TooManyRequests)?,
            ),
        };
        class.taken.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            _permit: permit,
            taken: Some(class.taken.clone()),
        })
    }

    /// Requests in flight now: read-only, mutating.
    pub fn taken(&self) -> (i64, i64) {
        (
            self.readonly.taken.load(Ordering::Relaxed),
            self.mutating.taken.load(Ordering::Relaxed),
        )
    }
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight::new(InFlightLimits::default())
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

    #[test]
    fn each_class_is_limited_on_its_own_and_slots_come_back() {
        let inflight = InFlight::new(InFlightLimits {
            readonly: 2,
            mutating: 1,
        });
        let w = inflight.admit(RequestClass::Mutating).expect("first write");
        assert!(matches!(
            inflight.admit(RequestClass::Mutating),
            Err(ApiError::TooManyRequests)
        ));
        let r1 = inflight
            .admit(RequestClass::ReadOnly)
            .expect("a read beside it");
        let _r2 = inflight
            .admit(RequestClass::ReadOnly)
            .expect("a second read");
        assert!(inflight.admit(RequestClass::ReadOnly).is_err());
        // Long-running requests are never refused.
        for _ in 0..10 {
            inflight.admit(RequestClass::LongRunning).expect("watch");
        }
        assert_eq!(inflight.taken(), (2, 1));
        drop(w);
        drop(r1);
        assert_eq!(inflight.taken(), (1, 0));
        inflight
            .admit(RequestClass::Mutating)
            .expect("a slot came back");
        inflight
            .admit(RequestClass::ReadOnly)
            .expect("a slot came back");
    }

    #[test]
    fn zero_means_no_limit() {
        let inflight = InFlight::new(InFlightLimits {
            readonly: 0,
            mutating: 0,
        });
        let held: Vec<Slot> = (0..1000)
            .map(|_| inflight.admit(RequestClass::Mutating).expect("unlimited"))
            .collect();
        assert_eq!(held.len(), 1000);
    }
}
