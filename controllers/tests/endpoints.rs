//! Discovery against the in-process API server: the job controller, the
//! allocation loop and the endpoints controller, with the agent's reports
//! written by the test. A service job's tasks appear in EndpointSlices
//! with their node's address and their ports, ready only while running,
//! terminating while killed, gone once ended; a kube-rs watcher sees each
//! change, and a slice edited by hand is put back.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::{eventually, start};
use corral_api::{Job, Task, TaskPhase};
use corral_core::lifecycle::{self, Event};
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

/// What the task's agent would report: `event`, through the state machine.
async fn report(api: &Api<Task>, name: &str, event: Event) -> Result<()> {
    let t = api.get(name).await?;
    let mut status = t.status.clone().unwrap_or_default();
    lifecycle::apply(&mut status, &event, jiff::Timestamp::now(), "agent/n1")
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let patch =
        json!({"metadata": {"resourceVersion": t.metadata.resource_version}, "status": status});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// The endpoints of job `job`'s slices: (task, address, port, ready, terminating).
async fn endpoints_of(
    api: &Api<EndpointSlice>,
    job: &str,
) -> Result<Vec<(String, String, i32, bool, bool)>> {
    let slices = api
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={job}")))
        .await?
        .items;
    let mut out = Vec::new();
    for s in slices {
        let port = s
            .ports
            .as_ref()
            .and_then(|p| p.first())
            .and_then(|p| p.port)
            .unwrap_or(0);
        for e in s.endpoints {
            let c = e.conditions.clone().unwrap_or_default();
            out.push((
                e.target_ref.and_then(|r| r.name).unwrap_or_default(),
                e.addresses.first().cloned().unwrap_or_default(),
                port,
                c.ready == Some(true),
                c.terminating == Some(true),
            ));
        }
    }
    out.sort();
    Ok(out)
}

#[tokio::test]
async fn a_service_jobs_instances_are_listed_ready_only_while_running() -> Result<()> {
    let h = start().await?;
    h.roles(&["web"]).await?;
    common::node_offering_ports(&h.client, "n1", (31000, 31100), "10.0.0.7").await?;
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    for (name, kind) in [("web", "service"), ("batch", "adhoc")] {
        let job = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": name},
            "spec": {"role": "web", "environment": "prod", "kind": kind, "instances": 2,
                     "resources": {"cpus": 1, "memory": "256Mi"}, "container": {"image": "busybox"},
                     "ports": [{"name": "http"}]}});
        jobs.create(&PostParams::default(), &serde_json::from_value(job)?)
            .await?;
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let loops = [
        tokio::spawn(corral_controllers::allocation::run(
            h.client.clone(),
            corral_core::sched::Policy::BinPack,
            stop_rx.clone(),
        )),
        tokio::spawn(corral_controllers::jobs::run(
            h.client.clone(),
            stop_rx.clone(),
        )),
        tokio::spawn(corral_controllers::endpoints::run(
            h.client.clone(),
            stop_rx,
        )),
    ];
    let slices: Api<EndpointSlice> = Api::namespaced(h.client.clone(), "default");
    // A stock watcher, as a proxy's discovery would run it.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn({
        let slices = slices.clone();
        async move {
            let mut stream = watcher(
                slices,
                watcher::Config::default().labels("kubernetes.io/service-name=web"),
            )
            .applied_objects()
            .boxed();
            while let Some(Ok(s)) = stream.next().await {
                let ready = s
                    .endpoints
                    .iter()
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                    .count();
                let _ = seen_tx.send(ready);
            }
        }
    });

    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    let web = |list: Vec<Task>| -> Vec<Task> {
        list.into_iter().filter(|t| t.spec.job == "web").collect()
    };
    eventually("both web instances bound", || async {
        let all = web(tasks.list(&ListParams::default()).await?.items);
        Ok(all.len() == 2 && all.iter().all(|t| t.spec.node_name.is_some()))
    })
    .await?;
    let all = web(tasks.list(&ListParams::default()).await?.items);
    let names: Vec<String> = all.iter().filter_map(|t| t.metadata.name.clone()).collect();
    let port_of = |t: &Task| {
        t.status
            .as_ref()
            .and_then(|s| s.ports.first())
            .map(|p| i32::from(p.port))
            .unwrap_or(0)
    };
    let mut expected: Vec<(String, i32)> = all
        .iter()
        .map(|t| (t.metadata.name.clone().unwrap_or_default(), port_of(t)))
        .collect();
    expected.sort();

    // Bound, not started: listed, not ready.
    eventually("both listed, neither ready", || async {
        let e = endpoints_of(&slices, "web").await?;
        Ok(e.len() == 2
            && e.iter()
                .all(|(_, addr, _, ready, _)| addr == "10.0.0.7" && !ready))
    })
    .await?;
    for n in &names {
        report(&tasks, n, Event::AgentStarting).await?;
        report(&tasks, n, Event::AgentRunning).await?;
    }
    eventually("both ready, each with its own port", || async {
        let e = endpoints_of(&slices, "web").await?;
        let got: Vec<(String, i32)> = e.iter().map(|(t, _, p, _, _)| (t.clone(), *p)).collect();
        Ok(e.iter().all(|(_, _, _, ready, _)| *ready) && got == expected)
    })
    .await?;
    // The watcher saw both become ready (one slice per port).
    let mut ready_seen = 0;
    tokio::time::timeout(Duration::from_secs(20), async {
        while ready_seen < 2 {
            ready_seen += seen.recv().await.unwrap_or(0);
        }
    })
    .await
    .context("the watcher saw the endpoints become ready")?;

    // A slice edited by hand is put back.
    let one = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await?
        .items
        .into_iter()
        .next()
        .context("a slice")?;
    let slice_name = one.metadata.name.clone().context("named")?;
    slices
        .patch(
            &slice_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [{"addresses": ["10.9.9.9"]}]})),
        )
        .await?;
    eventually("the edited slice put back", || async {
        let s = slices.get(&slice_name).await?;
        Ok(s.endpoints.first().map(|e| e.addresses.clone()) == Some(vec!["10.0.0.7".into()]))
    })
    .await?;

    // Killing: terminating and not ready; once ended, gone.
    let victim = &names[0];
    report(&tasks, victim, Event::KillRequested).await?;
    eventually("the killed instance terminating", || async {
        let e = endpoints_of(&slices, "web").await?;
        Ok(e.iter()
            .any(|(t, _, _, ready, term)| t == victim && !ready && *term))
    })
    .await?;
    report(&tasks, victim, Event::AgentKilled).await?;
    eventually("the ended instance gone from the slices", || async {
        let e = endpoints_of(&slices, "web").await?;
        Ok(!e.iter().any(|(t, _, _, _, _)| t == victim))
    })
    .await?;
    let t = tasks.get(victim).await?;
    assert_eq!(t.status.map(|s| s.phase()), Some(TaskPhase::Killed));
    // Ad-hoc jobs have no endpoints.
    assert!(endpoints_of(&slices, "batch").await?.is_empty());

    stop.send(true)?;
    watch.abort();
    for l in loops {
        tokio::time::timeout(Duration::from_secs(10), l).await??;
    }
    Ok(())
}
