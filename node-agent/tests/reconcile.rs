//! State reconciliation and fencing, with real network partitions: the
//! agent of node `a` reaches the in-process API server through a TCP relay
//! that the tests cut and heal. The controllers and the agent of node `b`
//! talk to the server directly. Tasks run in the simulated runtime, whose
//! handle the tests keep to see what really runs on `a`.

mod common;

use anyhow::{Context, Result, anyhow};
use common::{Agent, Controllers, Harness, eventually, phase, running_on, service, start};
use corral_api::{Task, TaskPhase};
use corral_apiserver::testing::Relay;
use corral_node_agent::runtime::{ContainerRuntime, Simulated};
use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{Api, DeleteParams, ListParams};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A relay to the API server for agent `a` that the tests cut and heal.
async fn partition(h: &Harness) -> Result<Relay> {
    Relay::start(&h.server.url).await.map_err(|e| anyhow!(e))
}

/// An admin client that goes through `relay`.
async fn through(relay: &Relay, h: &Harness) -> Result<kube::Client> {
    h.server.admin_via(&relay.url).await.map_err(|e| anyhow!(e))
}

async fn node_events(client: &kube::Client, node: &str, reason: &str) -> Result<Vec<String>> {
    Ok(Api::<CoreEvent>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(node))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.message)
        .collect())
}

#[tokio::test]
async fn a_healed_partition_kills_the_copies_the_cluster_replaced() -> Result<()> {
    let h = start().await?;
    let proxy = partition(&h).await?;
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    let a = Agent::start(through(&proxy, &h).await?, "a", false, Simulated::default());
    let ctl = Controllers::start(&h.client);
    service(&h.client, "web", 2).await?;
    eventually("both instances to run on a", || async {
        Ok(running_on(&tasks, "web-0-0", "a").await? && running_on(&tasks, "web-1-0", "a").await?)
    })
    .await?;
    let b = Agent::start(h.client.clone(), "b", false, Simulated::default());

    proxy.cut(true);
    eventually("both instances to be lost and replaced on b", || async {
        Ok(running_on(&tasks, "web-0-1", "b").await? && running_on(&tasks, "web-1-1", "b").await?)
    })
    .await?;
    assert_eq!(phase(&tasks.get("web-0-0").await?), TaskPhase::Lost);
    // A real split: the originals still run on a, next to their replacements.
    assert_eq!(a.runs(), vec!["default/web-0-0", "default/web-1-0"]);

    proxy.cut(false);
    eventually("a to kill its errant copies and record it", || async {
        let mut recorded = 0;
        for name in ["web-0-0", "web-1-0"] {
            let t = tasks.get(name).await?;
            let last = t.status.and_then(|s| s.task_events.last().cloned());
            recorded += usize::from(last.is_some_and(|e| e.actor == "agent/a"));
        }
        Ok(a.runs().is_empty() && recorded == 2)
    })
    .await?;
    for name in ["web-0-0", "web-1-0"] {
        let t = tasks.get(name).await?;
        assert_eq!(phase(&t), TaskPhase::Lost, "{name} stays LOST");
        let last = t
            .status
            .as_ref()
            .and_then(|s| s.task_events.last().cloned())
            .context("events")?;
        assert_eq!(last.actor, "agent/a", "{name}: {last:?}");
        assert!(last.message.contains("errant copy"), "{name}: {last:?}");
    }
    assert!(running_on(&tasks, "web-0-1", "b").await? && running_on(&tasks, "web-1-1", "b").await?);
    assert_eq!(b.runs(), vec!["default/web-0-1", "default/web-1-1"]);

    a.stop().await?;
    b.stop().await?;
    ctl.stop().await
}

/// The fenced agent's lease: 2 s left a margin of half a second between the
/// end of the fence and the lease's expiry, which a busy CI machine ate.
const FENCED_LEASE_SECONDS: i32 = 6;

#[tokio::test]
async fn a_fenced_agent_kills_its_tasks_before_any_replacement_is_created() -> Result<()> {
    let h = start().await?;
    let proxy = partition(&h).await?;
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    // A lease long enough that the fence (half of it, plus a kill grace of at
    // most a quarter) ends well before it expires, even on a loaded machine.
    let a = Agent::with_lease(
        through(&proxy, &h).await?,
        "a",
        true,
        Simulated::default(),
        FENCED_LEASE_SECONDS,
    );
    let ctl = Controllers::start(&h.client);
    service(&h.client, "web", 1).await?;
    eventually("the instance to run on a", || async {
        running_on(&tasks, "web-0-0", "a").await
    })
    .await?;
    let b = Agent::start(h.client.clone(), "b", false, Simulated::default());

    proxy.cut(true);
    // Until the replacement exists, watch that a never runs a copy beside it.
    eventually("a to fence its task", || async {
        let replaced = tasks.get_opt("web-0-1").await?.is_some();
        let copies = a.runs();
        anyhow::ensure!(
            !replaced || copies.is_empty(),
            "a replacement was created while a still ran {copies:?}"
        );
        Ok(copies.is_empty())
    })
    .await?;
    assert!(
        tasks.get_opt("web-0-1").await?.is_none(),
        "fenced before the lease expired"
    );
    eventually("the replacement to run on b", || async {
        running_on(&tasks, "web-0-1", "b").await
    })
    .await?;

    proxy.cut(false);
    eventually("a to record what it fenced", || async {
        Ok(node_events(&h.client, "a", "Fenced")
            .await?
            .iter()
            .any(|m| m.contains("default/web-0-0")))
    })
    .await?;
    assert_eq!(phase(&tasks.get("web-0-0").await?), TaskPhase::Lost);
    assert!(a.runs().is_empty());

    a.stop().await?;
    b.stop().await?;
    ctl.stop().await
}

#[tokio::test]
async fn a_cut_off_agent_stops_only_the_tasks_of_fenced_jobs() -> Result<()> {
    let h = start().await?;
    let proxy = partition(&h).await?;
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    // No --fence: only jobs that ask for it are fenced.
    let a = Agent::with_lease(
        through(&proxy, &h).await?,
        "a",
        false,
        Simulated::default(),
        FENCED_LEASE_SECONDS,
    );
    let ctl = Controllers::start(&h.client);
    service(&h.client, "web", 1).await?;
    let solo: corral_api::Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Job",
        "metadata": {"name": "solo", "namespace": "default"},
        "spec": {"role": "web", "environment": "prod", "kind": "service", "instances": 1,
                 "resources": {"cpus": 1, "memory": "1Gi"}, "container": {"image": "busybox"},
                 "fenced": true}}))?;
    Api::<corral_api::Job>::namespaced(h.client.clone(), "default")
        .create(&Default::default(), &solo)
        .await?;
    eventually("both to run on a", || async {
        Ok(
            running_on(&tasks, "web-0-0", "a").await?
                && running_on(&tasks, "solo-0-0", "a").await?,
        )
    })
    .await?;
    assert!(tasks.get("solo-0-0").await?.spec.fenced);
    assert!(!tasks.get("web-0-0").await?.spec.fenced);

    proxy.cut(true);
    eventually("a to fence the fenced job's task", || async {
        Ok(a.runs() == vec!["default/web-0-0".to_owned()])
    })
    .await?;
    assert!(
        tasks.get_opt("solo-0-1").await?.is_none(),
        "fenced before the lease expired"
    );
    proxy.cut(false);
    eventually("a to record what it fenced", || async {
        Ok(node_events(&h.client, "a", "Fenced")
            .await?
            .iter()
            .any(|m| {
                m.contains("default/solo-0-0")
                    && !m.contains("web-0-0")
                    && m.contains("no answer from the API server")
            }))
    })
    .await?;
    a.stop().await?;
    ctl.stop().await
}

/// A store whose writes fail while `down`, as during a store outage: the
/// API server keeps answering, and answers writes 503.
#[derive(Debug)]
struct FailingWrites {
    inner: Arc<dyn corral_store::Store>,
    down: AtomicBool,
}

#[async_trait::async_trait]
impl corral_store::Store for FailingWrites {
    async fn get(
        &self,
        key: &str,
    ) -> Result<Option<corral_store::KeyValue>, corral_store::StoreError> {
        self.inner.get(key).await
    }
    async fn range(
        &self,
        request: corral_store::RangeRequest,
    ) -> Result<corral_store::RangeResponse, corral_store::StoreError> {
        self.inner.range(request).await
    }
    async fn write(
        &self,
        op: corral_store::WriteOp,
    ) -> Result<corral_store::WriteOutcome, corral_store::StoreError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(corral_store::StoreError::Unavailable {
                message: "the store is down".into(),
            });
        }
        self.inner.write(op).await
    }
    async fn watch(
        &self,
        prefix: &str,
        start: i64,
    ) -> Result<corral_store::WatchStream, corral_store::StoreError> {
        self.inner.watch(prefix, start).await
    }
    async fn current_revision(&self) -> Result<i64, corral_store::StoreError> {
        self.inner.current_revision().await
    }
    async fn request_progress(&self) -> Result<(), corral_store::StoreError> {
        self.inner.request_progress().await
    }
    fn reports_progress(&self) -> bool {
        self.inner.reports_progress()
    }
    async fn compact(&self, revision: i64) -> Result<(), corral_store::StoreError> {
        self.inner.compact(revision).await
    }
}

#[tokio::test]
async fn an_agent_tells_a_control_plane_that_answers_but_cannot_renew_from_being_cut_off()
-> Result<()> {
    let store = Arc::new(FailingWrites {
        inner: Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?),
        down: AtomicBool::new(false),
    });
    let server = corral_apiserver::testing::TestServer::start_over(store.clone())
        .await
        .map_err(|e| anyhow!(e))?;
    server.roles(common::ROLES).await.map_err(|e| anyhow!(e))?;
    let h = Harness {
        client: server.client.clone(),
        server,
    };
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    // The agent's client retries nothing, as `corral agent` renews leases.
    let a = Agent::with_lease(
        h.server
            .admin_without_retries()
            .await
            .map_err(|e| anyhow!(e))?,
        "a",
        true,
        Simulated::default(),
        FENCED_LEASE_SECONDS,
    );
    let ctl = Controllers::start(&h.client);
    service(&h.client, "web", 1).await?;
    eventually("the instance to run on a", || async {
        running_on(&tasks, "web-0-0", "a").await
    })
    .await?;
    // The API server answers, but no renewal can be recorded: the lease
    // lapses all the same, so a fences.
    store.down.store(true, Ordering::Relaxed);
    eventually("a to fence its task", || async { Ok(a.runs().is_empty()) }).await?;
    store.down.store(false, Ordering::Relaxed);
    let said = eventually("a to say why it fenced", || async {
        Ok(node_events(&h.client, "a", "Fenced")
            .await?
            .iter()
            .any(|m| m.contains("the API server answered 503") && m.contains("default/web-0-0")))
    })
    .await;
    let said_so = node_events(&h.client, "a", "Fenced").await?;
    if let Err(e) = said {
        anyhow::bail!("{e}: {said_so:?}");
    }
    // And for how long: from the last renewal, at least the half lease
    // after which it fenced.
    let secs: Vec<u64> = said_so
        .iter()
        .filter_map(|m| {
            m.split("unrenewed for ")
                .nth(1)?
                .split('s')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(secs.iter().any(|s| *s >= 3), "{said_so:?}");
    a.stop().await?;
    ctl.stop().await
}

#[tokio::test]
async fn a_restarted_agent_kills_the_copy_of_a_task_deleted_while_it_was_away() -> Result<()> {
    let h = start().await?;
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    let runtime = Simulated::default();
    // A lease long enough that a stays Ready while its agent is away.
    let a = Agent::with_lease(h.client.clone(), "a", false, runtime.clone(), 40);
    let ctl = Controllers::start(&h.client);
    service(&h.client, "web", 1).await?;
    eventually("the instance to run on a", || async {
        running_on(&tasks, "web-0-0", "a").await
    })
    .await?;

    // The agent goes away; its container keeps running. Meanwhile the task
    // is deleted, and the job controller makes a new one of the same name.
    let old_uid = tasks.get("web-0-0").await?.metadata.uid;
    a.stop().await?;
    tasks.delete("web-0-0", &DeleteParams::default()).await?;
    eventually("a new web-0-0 to be bound to a", || async {
        Ok(tasks
            .get_opt("web-0-0")
            .await?
            .is_some_and(|t| t.metadata.uid != old_uid && t.spec.node_name.as_deref() == Some("a")))
    })
    .await?;
    assert_eq!(runtime.running(), vec!["default/web-0-0".to_owned()]);
    assert_eq!(runtime.uid("default/web-0-0"), old_uid);

    // Back: the copy of the deleted task is killed, the new one runs.
    let a = Agent::with_lease(h.client.clone(), "a", false, runtime, 40);
    eventually("the old copy killed and the new task running", || async {
        let new_uid = tasks.get("web-0-0").await?.metadata.uid;
        Ok(a.runtime.uid("default/web-0-0") == new_uid
            && running_on(&tasks, "web-0-0", "a").await?)
    })
    .await?;
    eventually("the kill to be recorded on node a", || async {
        Ok(node_events(&h.client, "a", "ErrantTaskKilled")
            .await?
            .iter()
            .any(|m| m.contains("default/web-0-0")))
    })
    .await?;

    a.stop().await?;
    ctl.stop().await
}
