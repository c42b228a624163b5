//! Pods run as tasks, against the in-process API server: the pod controller,
//! the allocation loop and an agent's reports written by a stand-in. A Pod
//! gets its task, bound, running and mirrored back (node, address, phase,
//! container state); a Pod that does not fit is Pending with Corral's
//! explanation as a condition and a FailedScheduling Event, said once; a
//! deleted Pod has its task killed and goes once its end is written; a
//! preempted task deletes its Pod; a task that ends by itself leaves its
//! Pod Succeeded or Failed with the exit code.

mod common;

use anyhow::Result;
use common::{eventually, start};
use corral_api::{Task, TaskPhase};
use corral_core::lifecycle::{self, Event};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn pod(name: &str, cpus: &str, labels: serde_json::Value) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "work", "image": "busybox", "command": ["sleep", "60"],
                 "resources": {"requests": {"cpu": cpus, "memory": "256Mi"}}}]}
    }))?)
}

/// What the task's agent would report: `events`, through the state machine.
async fn report(api: &Api<Task>, name: &str, events: &[Event]) -> Result<()> {
    let t = api.get(name).await?;
    let mut status = t.status.clone().unwrap_or_default();
    for e in events {
        lifecycle::apply(&mut status, e, jiff::Timestamp::now(), "agent/n1")
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let patch =
        json!({"metadata": {"resourceVersion": t.metadata.resource_version}, "status": status});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

fn phase_of(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn pods_run_as_tasks_and_mirror_them() -> Result<()> {
    let h = start().await?;
    h.roles(&["batch"]).await?;
    common::node_offering_ports(&h.client, "n1", (31000, 31100), "10.0.0.7").await?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let loops = [
        tokio::spawn(corral_controllers::allocation::run(
            h.client.clone(),
            corral_core::sched::Policy::BinPack,
            stop_rx.clone(),
        )),
        tokio::spawn(corral_controllers::pods::run(h.client.clone(), stop_rx)),
    ];
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    let role = json!({"corral.dev/role": "batch"});

    // Made Pending, with the finalizer and run-once policy.
    let made = pods
        .create(&PostParams::default(), &pod("p1", "1", role.clone())?)
        .await?;
    assert_eq!(phase_of(&made), "Pending");
    assert_eq!(
        made.metadata.finalizers.as_deref(),
        Some(&["corral.dev/task".to_owned()][..])
    );
    assert_eq!(
        made.spec.as_ref().and_then(|s| s.restart_policy.as_deref()),
        Some("Never")
    );
    eventually("p1's task to be bound", || async {
        Ok(tasks
            .get_opt("p1")
            .await?
            .is_some_and(|t| t.spec.node_name.is_some()))
    })
    .await?;
    let t = tasks.get("p1").await?;
    let owner = &t.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), Some(owner.uid.as_str())),
        ("Pod", made.metadata.uid.as_deref())
    );
    report(&tasks, "p1", &[Event::AgentStarting, Event::AgentRunning]).await?;
    eventually("p1 to show Running on n1 at its address", || async {
        let p = pods.get("p1").await?;
        let s = p.status.clone().unwrap_or_default();
        Ok(phase_of(&p) == "Running"
            && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("n1")
            && s.pod_ip.as_deref() == Some("10.0.0.7")
            && s.container_statuses.as_ref().is_some_and(|c| {
                c[0].name == "work"
                    && c[0].ready
                    && c[0].state.as_ref().is_some_and(|s| s.running.is_some())
            }))
    })
    .await?;

    // Ends by itself: Failed with its exit code; the Pod stays.
    report(
        &tasks,
        "p1",
        &[Event::AgentExited {
            code: 3,
            failure: None,
        }],
    )
    .await?;
    eventually("p1 to show Failed with exit code 3", || async {
        let p = pods.get("p1").await?;
        let code = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c[0].state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code);
        Ok(phase_of(&p) == "Failed" && code == Some(3))
    })
    .await?;

    // Too big for the node: Pending, explained once as a condition and an Event.
    pods.create(&PostParams::default(), &pod("big", "64", role.clone())?)
        .await?;
    eventually("big to be explained", || async {
        let p = pods.get("big").await?;
        Ok(p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                        && c.message.as_deref().is_some_and(|m| !m.is_empty())
                })
            }))
    })
    .await?;
    let events: Api<CoreEvent> = Api::namespaced(h.client.clone(), "default");
    let explained = |list: Vec<CoreEvent>| {
        list.into_iter()
            .filter(|e| {
                e.involved_object.name.as_deref() == Some("big")
                    && e.reason.as_deref() == Some("FailedScheduling")
            })
            .count()
    };
    eventually("big's FailedScheduling event", || async {
        Ok(explained(events.list(&ListParams::default()).await?.items) == 1)
    })
    .await?;

    // Deleted while running: its task is killed, its end written, then it goes.
    pods.create(&PostParams::default(), &pod("p2", "1", role.clone())?)
        .await?;
    eventually("p2's task to be bound", || async {
        Ok(tasks
            .get_opt("p2")
            .await?
            .is_some_and(|t| t.spec.node_name.is_some()))
    })
    .await?;
    report(&tasks, "p2", &[Event::AgentStarting, Event::AgentRunning]).await?;
    eventually("p2 running", || async {
        Ok(phase_of(&pods.get("p2").await?) == "Running")
    })
    .await?;
    pods.delete("p2", &DeleteParams::background()).await?;
    eventually("p2's task to be killing", || async {
        Ok(tasks
            .get("p2")
            .await?
            .status
            .is_some_and(|s| s.phase() == TaskPhase::Killing))
    })
    .await?;
    assert!(
        pods.get("p2").await?.metadata.deletion_timestamp.is_some(),
        "held while its task is killed"
    );
    report(&tasks, "p2", &[Event::AgentKilled]).await?;
    eventually("p2 and its task to be gone", || async {
        Ok(pods.get_opt("p2").await?.is_none() && tasks.get_opt("p2").await?.is_none())
    })
    .await?;

    // Preempted: the Pod is deleted (what Kubernetes clients read as not
    // the workload's failure), and goes once its task is killed.
    pods.create(&PostParams::default(), &pod("p3", "1", role)?)
        .await?;
    eventually("p3's task to be bound", || async {
        Ok(tasks
            .get_opt("p3")
            .await?
            .is_some_and(|t| t.spec.node_name.is_some()))
    })
    .await?;
    report(&tasks, "p3", &[Event::AgentStarting, Event::AgentRunning]).await?;
    report(
        &tasks,
        "p3",
        &[Event::Preempted {
            by: "default/prod-0-0".into(),
        }],
    )
    .await?;
    eventually("p3 to be deleted", || async {
        Ok(pods
            .get_opt("p3")
            .await?
            .is_some_and(|p| p.metadata.deletion_timestamp.is_some()))
    })
    .await?;
    report(&tasks, "p3", &[Event::AgentKilled]).await?;
    eventually("p3 to be gone", || async {
        Ok(pods.get_opt("p3").await?.is_none())
    })
    .await?;

    stop.send(true)?;
    for l in loops {
        l.await?;
    }
    Ok(())
}
