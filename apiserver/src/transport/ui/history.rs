//! The last hour of the cluster's figures, for the UI's charts: every
//! [`EVERY`] this server reads its watch cache (Nodes and Tasks, as stored:
//! no decoding into types) and keeps one [`Sample`] — allocatable,
//! allocated and used per resource, nodes and how many are Ready, tasks by
//! phase, what each role's tasks hold — and what each node's tasks hold
//! now. At most [`KEPT`] samples are kept (an hour); a restarted server
//! starts its hour again. Each API server keeps its own.
//!
//! An answer ends with a sample of the moment (at most [`FRESH`] old,
//! taken for the asker if need be), so a page shows the cluster as it is.
//! [`History::answer`] filters for the asker: the cluster's figures and the
//! nodes' only for a user who may list Nodes, the tasks by phase only for
//! one who may list Tasks in every namespace, a role's only for one who may
//! get that Role.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_api::TaskPhase;
use corral_api::resources::Resources;
use serde::Serialize;
use serde_json::Value;

use crate::storage::cache::Entry;
use crate::transport::auth::{Attributes, Authorizer, User};

/// How often a sample is taken.
pub const EVERY: Duration = Duration::from_secs(30);
/// How many samples are kept: an hour's.
pub const KEPT: usize = 120;
/// The oldest the last sample of an answer may be.
pub const FRESH: Duration = Duration::from_secs(5);

/// Amounts per resource, in base units (cores, bytes).
pub type Amounts = BTreeMap<String, f64>;

/// The cluster at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Seconds since the epoch.
    pub time: i64,
    /// What the nodes offer tasks.
    pub allocatable: Amounts,
    /// What tasks holding resources were given.
    pub allocated: Amounts,
    /// What the agents last measured.
    pub used: Amounts,
    /// Nodes.
    pub nodes: u32,
    /// Nodes whose Ready condition is True.
    pub ready: u32,
    /// Tasks by phase.
    pub tasks: BTreeMap<String, u32>,
    /// What each role's tasks hold.
    pub roles: BTreeMap<String, Amounts>,
}

fn amounts(v: &Value) -> Amounts {
    <Resources as serde::Deserialize>::deserialize(v)
        .ok()
        .and_then(|r| r.to_milli().ok())
        .map(|m| {
            m.0.into_iter()
                .map(|(k, v)| (k, v as f64 / 1000.0))
                .collect()
        })
        .unwrap_or_default()
}

fn add(into: &mut Amounts, a: &Amounts) {
    for (k, v) in a {
        *into.entry(k.clone()).or_default() += v;
    }
}

fn phase_of(task: &Value) -> TaskPhase {
    <TaskPhase as serde::Deserialize>::deserialize(&task["status"]["phase"])
        .unwrap_or(TaskPhase::Pending)
}

/// A sample of `nodes` and `tasks` (objects as stored) at `time`, and what
/// each node's tasks hold. The objects are taken one at a time, so a caller
/// may decode each as it goes.
pub fn sample<N, T>(nodes: N, tasks: T, time: i64) -> (Sample, HashMap<String, Amounts>)
where
    N: IntoIterator,
    N::Item: std::borrow::Borrow<Value>,
    T: IntoIterator,
    T::Item: std::borrow::Borrow<Value>,
{
    use std::borrow::Borrow;
    let mut s = Sample {
        time,
        ..Sample::default()
    };
    for n in nodes {
        let n: &Value = n.borrow();
        s.nodes = s.nodes.saturating_add(1);
        let status = &n["status"];
        let allocatable = if status["allocatable"]
            .as_object()
            .is_some_and(|o| !o.is_empty())
        {
            &status["allocatable"]
        } else {
            &status["total"]
        };
        add(&mut s.allocatable, &amounts(allocatable));
        add(&mut s.used, &amounts(&status["usage"]));
        let ready = status["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        s.ready += u32::from(ready);
    }
    let mut by_node: HashMap<String, Amounts> = HashMap::new();
    for t in tasks {
        let t: &Value = t.borrow();
        let phase = phase_of(t);
        *s.tasks.entry(phase.as_str().to_owned()).or_default() += 1;
        if !phase.holds_resources() {
            continue;
        }
        let given = amounts(&t["spec"]["resources"]);
        add(&mut s.allocated, &given);
        if let Some(role) = t["spec"]["role"].as_str() {
            add(s.roles.entry(role.to_owned()).or_default(), &given);
        }
        if let Some(node) = t["spec"]["nodeName"].as_str() {
            add(by_node.entry(node.to_owned()).or_default(), &given);
        }
    }
    (s, by_node)
}

#[derive(Debug, Default)]
struct Kept {
    samples: VecDeque<Sample>,
    /// The newest sample, kept or not.
    latest: Option<Sample>,
    by_node: HashMap<String, Amounts>,
}

/// The samples this server keeps.
#[derive(Debug, Default)]
pub struct History {
    kept: Mutex<Kept>,
}

/// What a user is answered.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    /// Seconds between samples.
    pub interval_seconds: u64,
    /// Oldest first.
    pub samples: Vec<Sample>,
    /// What each node's tasks hold now (for a user who may list Nodes).
    pub node_allocated: BTreeMap<String, Amounts>,
}

fn may(
    authz: &dyn Authorizer,
    user: &User,
    verb: &str,
    resource: &str,
    name: Option<&str>,
) -> bool {
    authz.allows(
        user,
        &Attributes {
            verb: verb.into(),
            group: "corral.dev".into(),
            resource: resource.into(),
            name: name.map(str::to_owned),
            ..Attributes::default()
        },
    )
}

impl History {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `s` (and what each node holds), the oldest going past [`KEPT`].
    pub fn keep(&self, s: Sample, by_node: HashMap<String, Amounts>) {
        let mut k = self.kept();
        k.latest = Some(s.clone());
        k.samples.push_back(s);
        while k.samples.len() > KEPT {
            k.samples.pop_front();
        }
        k.by_node = by_node;
    }

    /// Makes sure the newest sample is at most [`FRESH`] old, sampling
    /// `api` if it is not (the sample is kept in the hour only when the
    /// hour has none yet).
    pub async fn refresh(&self, api: &crate::storage::registry::Api) {
        let now = jiff::Timestamp::now().as_second();
        let fresh = i64::try_from(FRESH.as_secs()).unwrap_or(5);
        if self
            .kept()
            .latest
            .as_ref()
            .is_some_and(|l| now - l.time < fresh)
        {
            return;
        }
        if let Some((s, by_node)) = Self::read(api).await {
            let mut k = self.kept();
            // The hour's first sample need not wait for the next tick.
            if k.samples.is_empty() && s.nodes > 0 {
                k.samples.push_back(s.clone());
            }
            k.latest = Some(s);
            k.by_node = by_node;
        }
    }

    /// Samples `api`'s watch cache now, and keeps the sample (not while
    /// the cluster has no node yet: there is nothing to chart).
    pub async fn take(&self, api: &crate::storage::registry::Api) {
        if let Some((s, by_node)) = Self::read(api).await
            && s.nodes > 0
        {
            self.keep(s, by_node);
        }
    }

    /// A sample of `api`'s watch cache now.
    async fn read(
        api: &crate::storage::registry::Api,
    ) -> Option<(Sample, HashMap<String, Amounts>)> {
        let list = |plural: &'static str| async move {
            let desc = api.registry.find("corral.dev", "v1alpha1", plural)?;
            let l = api
                .list(&desc, None, &crate::storage::registry::ListQuery::default())
                .await
                .ok()?;
            Some(l.items)
        };
        // The cache's own objects, read in place.
        let (nodes, tasks) = (list("nodes").await?, list("tasks").await?);
        // Decoded one at a time: the whole cluster is never decoded at once.
        fn values(all: &[Arc<Entry>]) -> impl Iterator<Item = Value> + '_ {
            all.iter().filter_map(|e| e.value().ok())
        }
        Some(sample(
            values(&nodes),
            values(&tasks),
            jiff::Timestamp::now().as_second(),
        ))
    }

    /// The history as `user` may see it.
    pub fn answer(&self, user: &User, authz: &dyn Authorizer) -> Answer {
        let cluster = may(authz, user, "list", "nodes", None);
        let tasks = may(authz, user, "list", "tasks", None);
        let k = self.kept();
        let mut roles: HashMap<String, bool> = HashMap::new();
        let newest_kept = k.samples.back().map(|s| s.time);
        let latest = k
            .latest
            .as_ref()
            .filter(|l| newest_kept.is_none_or(|t| l.time > t));
        let samples = k
            .samples
            .iter()
            .chain(latest)
            .map(|s| {
                let mut out = Sample {
                    time: s.time,
                    ..Sample::default()
                };
                if cluster {
                    out.allocatable = s.allocatable.clone();
                    out.allocated = s.allocated.clone();
                    out.used = s.used.clone();
                    out.nodes = s.nodes;
                    out.ready = s.ready;
                }
                if tasks {
                    out.tasks = s.tasks.clone();
                }
                for (role, a) in &s.roles {
                    let allowed = *roles
                        .entry(role.clone())
                        .or_insert_with(|| may(authz, user, "get", "roles", Some(role)));
                    if allowed {
                        out.roles.insert(role.clone(), a.clone());
                    }
                }
                out
            })
            .collect();
        Answer {
            interval_seconds: EVERY.as_secs(),
            samples,
            node_allocated: if cluster {
                k.by_node
                    .iter()
                    .map(|(n, a)| (n.clone(), a.clone()))
                    .collect()
            } else {
                BTreeMap::new()
            },
        }
    }
}

/// Samples `api` every [`EVERY`] into `history` until `stop` turns true.
pub async fn run(
    api: crate::storage::registry::Api,
    history: Arc<History>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => history.take(&api).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug)]
    struct OnlyRole(&'static str);

    impl Authorizer for OnlyRole {
        fn allows(&self, _user: &User, a: &Attributes) -> bool {
            a.resource == "roles" && a.name.as_deref() == Some(self.0)
        }

        fn rules(&self, _user: &User, _namespace: &str) -> Option<crate::transport::auth::Rules> {
            None
        }
    }

    fn task(role: &str, node: Option<&str>, phase: &str, cpus: &str) -> Value {
        json!({"spec": {"role": role, "nodeName": node, "resources": {"cpus": cpus, "memory": "1Gi"}},
               "status": {"phase": phase}})
    }

    #[test]
    fn a_sample_adds_up_nodes_and_the_tasks_holding_resources() {
        let nodes = [
            json!({"metadata": {"name": "a"}, "status": {"allocatable": {"cpus": 4, "memory": "8Gi"},
                   "usage": {"cpus": "500m"}, "conditions": [{"type": "Ready", "status": "True"}]}}),
            json!({"metadata": {"name": "b"}, "status": {"total": {"cpus": 2}}}),
        ];
        let tasks = [
            task("web", Some("a"), "RUNNING", "1"),
            task("web", Some("a"), "FINISHED", "1"),
            task("batch", None, "PENDING", "2"),
        ];
        let (s, by_node) = sample(&nodes, &tasks, 7);
        assert_eq!(s.allocatable["cpus"], 6.0);
        assert_eq!(s.allocatable["memory"], 8.0 * 1024.0 * 1024.0 * 1024.0);
        assert_eq!(s.used["cpus"], 0.5);
        assert_eq!(s.allocated["cpus"], 1.0);
        assert_eq!((s.nodes, s.ready), (2, 1));
        assert_eq!(s.tasks["PENDING"], 1);
        assert_eq!(s.roles["web"]["cpus"], 1.0);
        assert!(!s.roles.contains_key("batch"));
        assert_eq!(by_node["a"]["cpus"], 1.0);
    }

    #[test]
    fn a_user_sees_only_what_they_may_read_and_an_hour_at_most() {
        let h = History::default();
        for i in 0..(KEPT as i64 + 5) {
            let node = json!({"status": {"allocatable": {"cpus": 4}}});
            let (web, ops) = (
                task("web", Some("a"), "RUNNING", "1"),
                task("ops", Some("a"), "RUNNING", "1"),
            );
            let (s, by_node) = sample([&node], [&web, &ops], i);
            h.keep(s, by_node);
        }
        let user = User {
            name: "alice".into(),
            groups: vec![],
            method: crate::transport::auth::AuthMethod::Token,
        };
        let a = h.answer(&user, &OnlyRole("web"));
        assert_eq!(a.samples.len(), KEPT);
        assert_eq!(a.samples[0].time, 5);
        let last = &a.samples[KEPT - 1];
        assert!(last.allocatable.is_empty() && last.tasks.is_empty());
        assert_eq!(last.roles.keys().collect::<Vec<_>>(), ["web"]);
        assert!(a.node_allocated.is_empty());
    }
}
