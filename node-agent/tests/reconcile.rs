//! State reconciliation and fencing, with real network partitions: the
//! agent of node `a` reaches the in-process API server through a TCP proxy
//! that the tests cut and heal. The controllers and the agent of node `b`
//! talk to the server directly. Tasks run in the simulated runtime, whose
//! handle the tests keep to see what really runs on `a`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use common::{Agent, Controllers, Harness, eventually, phase, running_on, service, start};
use corral_api::{Task, TaskPhase};
use corral_node_agent::runtime::{ContainerRuntime, Simulated};
use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{Api, DeleteParams, ListParams};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy to the API server that can be cut (every connection
/// dropped, new ones refused) and healed.
struct Partition {
    url: String,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Partition {
    async fn to(upstream: &str) -> Result<Self> {
        let upstream = upstream
            .strip_prefix("https://")
            .context("https URL")?
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}", listener.local_addr()?);
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (cut, conns) = (cut.clone(), conns.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is refused
                    }
                    let upstream = upstream.clone();
                    let conn = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    if let Ok(mut c) = conns.lock() {
                        c.push(conn);
                    }
                }
            }
        });
        Ok(Self {
            url,
            cut,
            conns,
            accept,
        })
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Ok(mut c) = self.conns.lock() {
            for conn in c.drain(..) {
                conn.abort();
            }
        }
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// An admin client that goes through the proxy.
    async fn client(&self, h: &Harness) -> Result<kube::Client> {
        let kc = kube::config::Kubeconfig::from_yaml(&h.server.pki.kubeconfig(&self.url))?;
        Ok(kube::Client::try_from(
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?,
        )?)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
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
    let proxy = Partition::to(&h.server.url).await?;
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    let a = Agent::start(proxy.client(&h).await?, "a", false, Simulated::default());
    let ctl = Controllers::start(&h.client);
    service(&h.client, "web", 2).await?;
    eventually("both instances to run on a", || async {
        Ok(running_on(&tasks, "web-0-0", "a").await? && running_on(&tasks, "web-1-0", "a").await?)
    })
    .await?;
    let b = Agent::start(h.client.clone(), "b", false, Simulated::default());

    proxy.cut();
    eventually("both instances to be lost and replaced on b", || async {
        Ok(running_on(&tasks, "web-0-1", "b").await? && running_on(&tasks, "web-1-1", "b").await?)
    })
    .await?;
    assert_eq!(phase(&tasks.get("web-0-0").await?), TaskPhase::Lost);
    // A real split: the originals still run on a, next to their replacements.
    assert_eq!(a.runs(), vec!["default/web-0-0", "default/web-1-0"]);

    proxy.heal();
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
    let proxy = Partition::to(&h.server.url).await?;
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    // A lease long enough that the fence (half of it, plus a kill grace of at
    // most a quarter) ends well before it expires, even on a loaded machine.
    let a = Agent::with_lease(
        proxy.client(&h).await?,
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

    proxy.cut();
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

    proxy.heal();
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
