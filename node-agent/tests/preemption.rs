//! Preemption end to end with simulated agents: a preferred service job
//! arrives on a full cluster with a reserved node, a quota-limited service,
//! a job with a host limit and fillers. Exactly the minimum set of victims is
//! preempted, the preemptors run within seconds of their victims' kills, and
//! the victims' replacements wait, explained, without taking the room.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::{eventually, start};
use corral_api::task::TaskConditionType;
use corral_api::{Job, Quota, Reservation, Task, TaskPhase};
use corral_controllers::allocation::Settings;
use corral_core::sched::Policy;
use corral_core::sched::preempt::Rules;
use corral_node_agent::agent::{self, AgentConfig};
use corral_node_agent::runtime::{ContainerRuntime, Simulated};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

async fn job(api: &Api<Job>, name: &str, role: &str, instances: usize, extra: Value) -> Result<()> {
    let mut spec = json!({"role": role, "environment": "prod", "kind": "service", "instances": instances,
        "resources": {"cpus": 1, "memory": "256Mi"}, "container": {"image": "busybox"}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let j: Job =
        serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec}))?;
    api.create(&PostParams::default(), &j).await?;
    Ok(())
}

fn phase(t: &Task) -> TaskPhase {
    t.status.as_ref().map_or(TaskPhase::Pending, |s| s.phase())
}

fn preempted(t: &Task) -> bool {
    t.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == TaskConditionType::Preempted)
    })
}

/// When `t` entered `p` (its last such event).
fn entered(t: &Task, p: TaskPhase) -> Option<jiff::Timestamp> {
    t.status
        .as_ref()?
        .task_events
        .iter()
        .rev()
        .find(|e| e.status == p)
        .map(|e| e.timestamp.0)
}

/// `nodes` simulated 4-CPU nodes; the first reserved for `analytics`.
async fn scenario(nodes: usize) -> Result<()> {
    let h = start().await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let names: Vec<String> = (0..nodes).map(|i| format!("sim-{i}")).collect();
    let cfg = AgentConfig {
        lease_seconds: 40,
        renew_every: Duration::from_secs(10),
        reconcile_every: Duration::from_millis(500),
        log_endpoint: None,
        ..AgentConfig::new(
            names,
            corral_node_agent::flags::resources("cpus=4,memory=8Gi")?,
        )
    };
    let runtimes: Vec<Arc<dyn ContainerRuntime>> = vec![Arc::new(Simulated::default())];
    let agent = tokio::spawn(agent::run(h.client.clone(), cfg, runtimes, stop_rx.clone()));
    let settings = Settings {
        policy: Policy::BinPack,
        // The fillers have just started; the rule under test is not the minimum runtime.
        preemption: Rules {
            min_runtime_seconds: 0,
            ..Rules::default()
        },
    };
    let reservations: Api<Reservation> = Api::all(h.client.clone());
    reservations
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Reservation",
                "metadata": {"name": "analytics-sim-0"},
                "spec": {"node": "sim-0", "role": "analytics", "resources": {"cpus": 4, "memory": "4Gi"}}}))?,
        )
        .await?;
    let quotas: Api<Quota> = Api::all(h.client.clone());
    quotas
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Quota",
                "metadata": {"name": "web"}, "spec": {"role": "web", "limit": {"cpus": 2}}}))?,
        )
        .await?;
    // The scheduler starts knowing the reservation and the quota: one that
    // came after the tasks would find the reserved node's room taken by
    // anyone (the reservation's watch and the tasks' are not ordered).
    let alloc = tokio::spawn(corral_controllers::allocation::run_with(
        h.client.clone(),
        settings,
        stop_rx.clone(),
    ));
    let jobs_loop = tokio::spawn(corral_controllers::jobs::run(h.client.clone(), stop_rx));
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    // Every CPU in use: the reserved node by its role, the rest by a
    // quota-limited service, a job with a host limit and fillers.
    let fillers = 4 * (nodes - 1) - 4;
    job(&jobs, "analytics", "analytics", 4, json!({})).await?;
    job(&jobs, "web", "web", 2, json!({})).await?;
    job(
        &jobs,
        "small",
        "batch",
        2,
        json!({"constraints": {"hostLimit": 1}}),
    )
    .await?;
    job(&jobs, "filler", "batch", fillers, json!({})).await?;
    let all = 4 * nodes;
    eventually("every CPU of the cluster to be in use", || async {
        let list = tasks.list(&ListParams::default()).await?.items;
        Ok(list
            .iter()
            .filter(|t| phase(t) == TaskPhase::Running)
            .count()
            == all)
    })
    .await?;

    // The preferred tier runs only on a role granted a Quota.
    quotas
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "prod"}, "spec": {"role": "prod"}}),
            )?,
        )
        .await?;
    job(
        &jobs,
        "prod",
        "prod",
        2,
        json!({"tier": "preferred", "priority": 10, "resources": {"cpus": 2, "memory": "256Mi"}}),
    )
    .await?;
    // When every victim was first seen KILLED.
    let victims_killed: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    eventually("both preferred tasks to run", || {
        let (tasks, victims_killed) = (tasks.clone(), victims_killed.clone());
        async move {
            let list = tasks.list(&ListParams::default()).await?.items;
            let victims: Vec<&Task> = list.iter().filter(|t| preempted(t)).collect();
            if !victims.is_empty() && victims.iter().all(|t| phase(t) == TaskPhase::Killed) {
                let mut seen = victims_killed
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?;
                seen.get_or_insert_with(Instant::now);
            }
            let prod = list.iter().filter(|t| t.spec.job == "prod");
            Ok(prod.filter(|t| phase(t) == TaskPhase::Running).count() == 2)
        }
    })
    .await?;
    let list = tasks.list(&ListParams::default()).await?.items;
    let victims: Vec<&Task> = list.iter().filter(|t| preempted(t)).collect();
    // Two 2-CPU tasks on 4-CPU nodes full of 1-CPU tasks: two victims each,
    // never on the reserved node (that room is analytics' alone).
    assert_eq!(
        victims.len(),
        4,
        "victims: {:?}",
        victims.iter().map(|t| &t.metadata.name).collect::<Vec<_>>()
    );
    for v in &victims {
        assert_ne!(v.spec.node_name.as_deref(), Some("sim-0"));
        assert_ne!(v.spec.job, "prod");
        assert_eq!(phase(v), TaskPhase::Killed);
    }
    // Bound in the first cycles after their victims stopped: within seconds
    // (the hold lasts two minutes), by the tasks' own event times.
    let last_kill = victims
        .iter()
        .filter_map(|t| entered(t, TaskPhase::Killed))
        .max()
        .context("victims' kill times")?;
    for p in list.iter().filter(|t| t.spec.job == "prod") {
        let assigned = entered(p, TaskPhase::Assigned).context("assigned")?;
        let waited = assigned.duration_since(last_kill).as_secs_f64();
        assert!(
            waited < 5.0,
            "{:?} assigned {waited:.1}s after its victims were killed",
            p.metadata.name
        );
    }
    let seen = *victims_killed
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    if let Some(at) = seen {
        assert!(at.elapsed() < Duration::from_secs(10), "{:?}", at.elapsed());
    }
    // Each victim's replacement waits, explained, without taking the room.
    eventually("the victims' replacements to be explained", || async {
        let list = tasks.list(&ListParams::default()).await?.items;
        let pending: Vec<&Task> = list
            .iter()
            .filter(|t| phase(t) == TaskPhase::Pending)
            .collect();
        Ok(pending.len() == 4
            && pending.iter().all(|t| {
                t.spec.node_name.is_none()
                    && t.status
                        .as_ref()
                        .and_then(|s| s.explanation.as_ref())
                        .is_some_and(|e| {
                            e.summary
                                .starts_with(&format!("pending: 0/{nodes} nodes fit"))
                        })
            }))
    })
    .await?;
    let list = tasks.list(&ListParams::default()).await?.items;
    assert_eq!(
        list.iter().filter(|t| preempted(t)).count(),
        4,
        "nobody else was preempted meanwhile"
    );
    stop_tx.send(true)?;
    alloc.await?;
    jobs_loop.await?;
    agent.await??;
    Ok(())
}

#[tokio::test]
async fn three_nodes_a_preferred_service_preempts_the_minimum_and_runs_at_once() -> Result<()> {
    scenario(3).await
}

#[tokio::test]
async fn six_nodes_a_preferred_service_preempts_the_minimum_and_runs_at_once() -> Result<()> {
    scenario(6).await
}
