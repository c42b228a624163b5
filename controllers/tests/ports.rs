//! Named ports through the job controller and the allocation loop, against
//! the in-process API server: assigned per node with no port given twice,
//! fixed ports that are taken explained, the assignment and the node's
//! address written with the binding and kept from every other write.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use common::{eventually, start};
use corral_api::task::PendingReasonKind;
use corral_api::{Job, Task};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn tasks_of(api: &Api<Task>, job: &str) -> Result<Vec<Task>> {
    Ok(api
        .list(&ListParams::default().labels(&format!("corral.dev/job={job}")))
        .await?
        .items)
}

fn explanation_of(t: &Task) -> Option<&corral_api::task::PendingExplanation> {
    t.status.as_ref()?.explanation.as_ref()
}

#[tokio::test]
async fn instances_on_one_node_get_their_own_ports_and_a_taken_one_is_explained() -> Result<()> {
    let h = start().await?;
    h.roles(&["web"]).await?;
    common::node_offering_ports(&h.client, "n1", (31000, 31001), "10.0.0.7").await?;
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    for (name, instances, ports) in [
        ("web", 3, json!([{"name": "http"}])),
        ("admin", 2, json!([{"name": "admin", "port": 9090}])),
    ] {
        let job = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": name},
            "spec": {"role": "web", "environment": "prod", "kind": "service", "instances": instances,
                     "resources": {"cpus": 1, "memory": "256Mi"}, "container": {"image": "busybox"}, "ports": ports}});
        jobs.create(&PostParams::default(), &serde_json::from_value(job)?)
            .await?;
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let alloc = tokio::spawn(corral_controllers::allocation::run(
        h.client.clone(),
        corral_core::sched::Policy::BinPack,
        stop_rx.clone(),
    ));
    let job_loop = tokio::spawn(corral_controllers::jobs::run(h.client.clone(), stop_rx));

    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    eventually("two of each job bound and the rest explained", || async {
        let all = tasks.list(&ListParams::default()).await?.items;
        let bound = all.iter().filter(|t| t.spec.node_name.is_some()).count();
        let explained = all
            .iter()
            .filter(|t| t.spec.node_name.is_none() && explanation_of(t).is_some())
            .count();
        Ok(all.len() == 5 && bound == 3 && explained == 2)
    })
    .await?;

    // web: two instances on n1, each with its own port from the range.
    let web = tasks_of(&tasks, "web").await?;
    let mut given = BTreeSet::new();
    for t in web.iter().filter(|t| t.spec.node_name.is_some()) {
        let st = t.status.as_ref().context("a status")?;
        assert_eq!(st.host_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(st.ports.len(), 1);
        assert_eq!(st.ports[0].name, "http");
        assert!(
            (31000..=31001).contains(&st.ports[0].port),
            "{:?}",
            st.ports
        );
        assert!(
            given.insert(st.ports[0].port),
            "port given twice: {:?}",
            st.ports
        );
    }
    assert_eq!(given.len(), 2);
    let waiting = web
        .iter()
        .find(|t| t.spec.node_name.is_none())
        .context("a web task waits")?;
    let e = explanation_of(waiting).context("explained")?;
    assert!(
        e.reasons
            .iter()
            .any(|r| r.kind == PendingReasonKind::InsufficientResources
                && r.resource.as_deref() == Some("ports")),
        "{e:?}"
    );
    assert!(e.summary.contains("free port"), "{}", e.summary);

    // admin: 9090 once; the other instance waits, told the port is taken.
    let admin = tasks_of(&tasks, "admin").await?;
    let running = admin
        .iter()
        .find(|t| t.spec.node_name.is_some())
        .context("one admin task bound")?;
    let st = running.status.as_ref().context("a status")?;
    assert_eq!(
        (st.ports[0].name.as_str(), st.ports[0].port),
        ("admin", 9090)
    );
    let waiting = admin
        .iter()
        .find(|t| t.spec.node_name.is_none())
        .context("an admin task waits")?;
    let e = explanation_of(waiting).context("explained")?;
    assert!(
        e.reasons.iter().any(|r| r.subject.as_deref() == Some("9090")
            && r.resource.as_deref() == Some("ports")),
        "{e:?}"
    );

    // No write but a binding moves a task's ports or address.
    let name = running.metadata.name.clone().context("named")?;
    for patch in [
        json!({"status": {"ports": [{"name": "admin", "port": 9091}]}}),
        json!({"status": {"hostIP": "10.9.9.9"}}),
    ] {
        let err = tasks
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect_err("refused");
        match err {
            kube::Error::Api(e) => assert_eq!(e.code, 422, "{e:?}"),
            other => anyhow::bail!("unexpected {other}"),
        }
    }

    stop.send(true)?;
    alloc.await?;
    tokio::time::timeout(Duration::from_secs(10), job_loop).await??;
    Ok(())
}
