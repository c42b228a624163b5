//! The server's Prometheus metrics, served at `GET /metrics` (authenticated,
//! as kube-apiserver serves them) in the OpenMetrics text format, under
//! kube-apiserver's names so existing dashboards and alerts read them:
//! - `apiserver_request_total{verb,group,resource,subresource,code}`;
//! - `apiserver_request_duration_seconds{verb,group,resource,subresource}`
//!   (long-running requests, watches and followed logs, are not timed);
//! - `apiserver_current_inflight_requests{request_kind}` (`readOnly`,
//!   `mutating`: the requests the in-flight limits count);
//! - `apiserver_flowcontrol_current_executing_requests{priority_level}`
//!   (`exempt`, `system`, `workload`: the same requests by the share they
//!   draw on);
//! - `apiserver_flowcontrol_request_wait_duration_seconds{priority_level}`
//!   (time waiting for a slot, whether one came or the answer was 429) and
//!   `apiserver_flowcontrol_request_execution_seconds{priority_level}` (from
//!   the slot to the answer; long-running requests are not timed);
//! - `apiserver_storage_objects{resource}` (objects in the watch cache);
//! - `apiserver_registered_watchers` (watches served from the cache).
//!
//! Every label value is one of a fixed set (verbs, the registry's groups and
//! resources, status codes): a request for a path the server does not know
//! is counted without naming that path, so no client can grow the series.

use std::sync::Arc;

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as MetricsRegistry;

use crate::transport::server::request_info::{RequestInfo, Subresource, Target};

/// The media type of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// kube-apiserver's request duration buckets, in seconds.
const DURATION_BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// A request's verb, as kube-apiserver's metrics name it.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum Verb {
    /// GET of one object, or of a path that is not a resource.
    GET,
    /// GET of a collection.
    LIST,
    /// GET of a collection with `watch=true`.
    WATCH,
    /// POST.
    POST,
    /// PUT.
    PUT,
    /// PATCH (other than server-side apply).
    PATCH,
    /// PATCH with an apply patch.
    APPLY,
    /// DELETE of one object.
    DELETE,
    /// DELETE of a collection.
    DELETECOLLECTION,
    /// GET of a subresource that streams (task logs).
    CONNECT,
    /// Anything else.
    OTHER,
}

/// What a request is about, in label values from a fixed set.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The verb.
    pub verb: Verb,
    /// API group (empty for core and for paths that are not resources).
    pub group: &'static str,
    /// Resource (plural), empty for paths that are not resources.
    pub resource: &'static str,
    /// `status`, `scale`, `binding`, `log`, or empty.
    pub subresource: &'static str,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    verb: Verb,
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LevelLabels {
    priority_level: &'static str,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    request_kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

impl RequestLabels {
    /// The labels of a request.
    pub fn of(info: &RequestInfo) -> RequestLabels {
        let Target::Resource(t) = &info.target else {
            return RequestLabels {
                verb: if info.method == Method::GET {
                    Verb::GET
                } else {
                    Verb::OTHER
                },
                group: "",
                resource: "",
                subresource: "",
            };
        };
        let sub = t.sub;
        let verb = match (&info.method, t.name.is_some()) {
            (&Method::GET, _) if sub == Some(Subresource::Log) => Verb::CONNECT,
            (&Method::GET, true) => Verb::GET,
            (&Method::GET, false) if info.watch => Verb::WATCH,
            (&Method::GET, false) => Verb::LIST,
            (&Method::POST, _) => Verb::POST,
            (&Method::PUT, _) => Verb::PUT,
            (&Method::PATCH, _) if info.apply => Verb::APPLY,
            (&Method::PATCH, _) => Verb::PATCH,
            (&Method::DELETE, true) => Verb::DELETE,
            (&Method::DELETE, false) => Verb::DELETECOLLECTION,
            _ => Verb::OTHER,
        };
        RequestLabels {
            verb,
            group: t.desc.group,
            resource: t.desc.plural,
            subresource: sub.map_or("", Subresource::name),
        }
    }

    fn with_code(self, code: u16) -> CodeLabels {
        CodeLabels {
            verb: self.verb,
            group: self.group,
            resource: self.resource,
            subresource: self.subresource,
            code,
        }
    }
}

/// The server's metrics. Cheap to clone; clones share the series.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<MetricsRegistry>,
    requests: Family<CodeLabels, Counter>,
    durations: Family<RequestLabels, Histogram>,
    inflight: Family<KindLabels, Gauge>,
    executing: Family<LevelLabels, Gauge>,
    waits: Family<LevelLabels, Histogram>,
    executions: Family<LevelLabels, Histogram>,
    objects: Family<ResourceLabels, Gauge>,
    watchers: Gauge,
    connections: Family<ProtocolLabels, Counter>,
    /// Series of components that run in this process (the controllers).
    extra: Vec<ExtraSeries>,
}

/// Writes a component's series (OpenMetrics text without `# EOF`) after the
/// server's own.
pub type ExtraSeries = Arc<dyn Fn(&mut String) -> std::fmt::Result + Send + Sync>;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// What the scrape reads from the rest of the server at that moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Requests in flight: read-only, mutating.
    pub inflight: (i64, i64),
    /// Requests in flight per priority level (its name).
    pub by_level: Vec<(&'static str, i64)>,
    /// Objects per resource (`jobs.corral.dev`, `configmaps`…).
    pub objects: Vec<(String, i64)>,
    /// Watches served from the cache.
    pub watchers: i64,
}

impl Metrics {
    /// Empty series, registered under their names.
    pub fn new() -> Self {
        let mut registry = MetricsRegistry::default();
        let requests = Family::<CodeLabels, Counter>::default();
        let durations = Family::<RequestLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
        );
        let inflight = Family::<KindLabels, Gauge>::default();
        let executing = Family::<LevelLabels, Gauge>::default();
        let level_histogram = || {
            Family::<LevelLabels, Histogram>::new_with_constructor(
                (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
            )
        };
        let (waits, executions) = (level_histogram(), level_histogram());
        let objects = Family::<ResourceLabels, Gauge>::default();
        let watchers = Gauge::default();
        let connections = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "apiserver_request",
            "Requests answered, by verb, resource and HTTP code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Time to answer a request (watches and followed logs excluded)",
            durations.clone(),
        );
        registry.register(
            "apiserver_current_inflight_requests",
            "Requests being answered, by the in-flight limit that counts them",
            inflight.clone(),
        );
        registry.register(
            "apiserver_flowcontrol_current_executing_requests",
            "Requests being answered, by the priority level whose slots they hold",
            executing.clone(),
        );
        registry.register(
            "apiserver_flowcontrol_request_wait_duration_seconds",
            "Time requests waited for a slot of their priority level",
            waits.clone(),
        );
        registry.register(
            "apiserver_flowcontrol_request_execution_seconds",
            "Time from a request's slot to its answer, by priority level (watches and followed logs excluded)",
            executions.clone(),
        );
        registry.register(
            "apiserver_storage_objects",
            "Objects stored, per resource",
            objects.clone(),
        );
        registry.register(
            "apiserver_registered_watchers",
            "Watches being served",
            watchers.clone(),
        );
        registry.register(
            "apiserver_tls_connections",
            "TLS connections accepted, by the protocol agreed on (h2, http/1.1)",
            connections.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            requests,
            durations,
            inflight,
            executing,
            waits,
            executions,
            objects,
            watchers,
            connections,
            extra: Vec::new(),
        }
    }

    /// Counts one accepted TLS connection speaking `protocol` (its ALPN
    /// protocol; HTTP/1.1 when none was agreed on).
    pub fn connection(&self, protocol: Option<&[u8]>) {
        let protocol = match protocol {
            Some(b"h2") => "h2",
            _ => "http/1.1",
        };
        self.connections
            .get_or_create(&ProtocolLabels { protocol })
            .inc();
    }

    /// Times one request's wait for a slot of `level`, and its execution
    /// once it had one (`None`: it got none, or runs long).
    pub fn observe_level(&self, level: &'static str, waited: f64, executed: Option<f64>) {
        let labels = LevelLabels {
            priority_level: level,
        };
        self.waits.get_or_create(&labels).observe(waited);
        if let Some(s) = executed {
            self.executions.get_or_create(&labels).observe(s);
        }
    }

    /// Counts an answered request; times it unless it is long-running.
    pub fn observe(&self, labels: RequestLabels, code: u16, seconds: Option<f64>) {
        self.requests.get_or_create(&labels.with_code(code)).inc();
        if let Some(s) = seconds {
            self.durations.get_or_create(&labels).observe(s);
        }
    }

    /// The same series, and `extra`'s after them in each scrape.
    pub fn with_extra(mut self, extra: ExtraSeries) -> Self {
        self.extra.push(extra);
        self
    }

    /// The text to answer a scrape with, `now` holding the moment's gauges.
    pub fn encode(&self, now: &Snapshot) -> Result<String, std::fmt::Error> {
        let kind = |request_kind| KindLabels { request_kind };
        self.inflight
            .get_or_create(&kind("readOnly"))
            .set(now.inflight.0);
        self.inflight
            .get_or_create(&kind("mutating"))
            .set(now.inflight.1);
        for (priority_level, count) in &now.by_level {
            self.executing
                .get_or_create(&LevelLabels { priority_level })
                .set(*count);
        }
        for (resource, count) in &now.objects {
            self.objects
                .get_or_create(&ResourceLabels {
                    resource: resource.clone(),
                })
                .set(*count);
        }
        self.watchers.set(now.watchers);
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)?;
        for extra in &self.extra {
            extra(&mut out)?;
        }
        prometheus_client::encoding::text::encode_eof(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::catalog::Catalog;

    fn labels(method: Method, path: &str, watch: bool, apply: bool) -> RequestLabels {
        let info = RequestInfo::new(
            &Catalog::standard(),
            &method,
            path,
            watch.then_some("watch=true"),
            apply,
        );
        RequestLabels::of(&info)
    }

    fn label_values(
        method: Method,
        path: &str,
        watch: bool,
    ) -> (Verb, &'static str, &'static str, &'static str) {
        let l = labels(method, path, watch, false);
        (l.verb, l.group, l.resource, l.subresource)
    }

    #[test]
    fn requests_are_labelled_by_verb_and_resource() {
        let table = [
            (
                Method::GET,
                "/apis/corral.dev/v1alpha1/namespaces/a/jobs",
                false,
                (Verb::LIST, "corral.dev", "jobs", ""),
            ),
            (
                Method::GET,
                "/apis/corral.dev/v1alpha1/jobs",
                false,
                (Verb::LIST, "corral.dev", "jobs", ""),
            ),
            (
                Method::GET,
                "/apis/corral.dev/v1alpha1/namespaces/a/tasks",
                true,
                (Verb::WATCH, "corral.dev", "tasks", ""),
            ),
            (
                Method::GET,
                "/apis/corral.dev/v1alpha1/namespaces/a/jobs/web",
                false,
                (Verb::GET, "corral.dev", "jobs", ""),
            ),
            (
                Method::PUT,
                "/apis/corral.dev/v1alpha1/namespaces/a/jobs/web/scale",
                false,
                (Verb::PUT, "corral.dev", "jobs", "scale"),
            ),
            (
                Method::PATCH,
                "/apis/corral.dev/v1alpha1/namespaces/a/tasks/t/status",
                false,
                (Verb::PATCH, "corral.dev", "tasks", "status"),
            ),
            (
                Method::GET,
                "/apis/corral.dev/v1alpha1/namespaces/a/tasks/t/log",
                false,
                (Verb::CONNECT, "corral.dev", "tasks", "log"),
            ),
            (
                Method::POST,
                "/api/v1/namespaces",
                false,
                (Verb::POST, "", "namespaces", ""),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a",
                false,
                (Verb::DELETE, "", "namespaces", ""),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/configmaps",
                false,
                (Verb::DELETECOLLECTION, "", "configmaps", ""),
            ),
            (
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/l",
                false,
                (Verb::GET, "coordination.k8s.io", "leases", ""),
            ),
            // Paths that are not resources are never named.
            (
                Method::GET,
                "/apis/corral.dev/v1alpha1",
                false,
                (Verb::GET, "", "", ""),
            ),
            (Method::GET, "/openapi/v3", false, (Verb::GET, "", "", "")),
            (
                Method::GET,
                "/apis/corral.dev/v1alpha1/namespaces/a/made-up-things",
                false,
                (Verb::GET, "", "", ""),
            ),
            (
                Method::POST,
                "/apis/example.com/v1/widgets",
                false,
                (Verb::OTHER, "", "", ""),
            ),
        ];
        for (method, path, watch, want) in table {
            assert_eq!(
                label_values(method.clone(), path, watch),
                want,
                "{method} {path}"
            );
        }
        let apply = labels(
            Method::PATCH,
            "/apis/corral.dev/v1alpha1/namespaces/a/jobs/web",
            false,
            true,
        );
        assert_eq!(apply.verb, Verb::APPLY);
    }

    #[test]
    fn a_scrape_shows_counts_durations_and_gauges() {
        let m = Metrics::new();
        let list = labels(
            Method::GET,
            "/apis/corral.dev/v1alpha1/namespaces/a/jobs",
            false,
            false,
        );
        m.observe(list, 200, Some(0.003));
        m.observe(list, 200, Some(0.03));
        m.observe(list, 429, Some(0.0001));
        m.observe_level("system", 0.0, Some(0.002));
        m.observe_level("workload", 1.0, None);
        let text = m
            .encode(&Snapshot {
                inflight: (3, 1),
                by_level: vec![("exempt", 1), ("system", 2), ("workload", 1)],
                objects: vec![("jobs.corral.dev".into(), 7)],
                watchers: 12,
            })
            .expect("encode");
        for want in [
            r#"apiserver_request_total{verb="LIST",group="corral.dev",resource="jobs",subresource="",code="200"} 2"#,
            r#"apiserver_request_total{verb="LIST",group="corral.dev",resource="jobs",subresource="",code="429"} 1"#,
            r#"apiserver_request_duration_seconds_bucket{le="0.005",verb="LIST",group="corral.dev",resource="jobs",subresource=""} 2"#,
            r#"apiserver_request_duration_seconds_count{verb="LIST",group="corral.dev",resource="jobs",subresource=""} 3"#,
            r#"apiserver_flowcontrol_request_wait_duration_seconds_count{priority_level="workload"} 1"#,
            r#"apiserver_flowcontrol_request_execution_seconds_bucket{le="0.005",priority_level="system"} 1"#,
            r#"apiserver_current_inflight_requests{request_kind="readOnly"} 3"#,
            r#"apiserver_current_inflight_requests{request_kind="mutating"} 1"#,
            r#"apiserver_storage_objects{resource="jobs.corral.dev"} 7"#,
            "apiserver_registered_watchers 12",
            r#"apiserver_flowcontrol_current_executing_requests{priority_level="system"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == want), "{want} not in:\n{text}");
        }
    }
}
