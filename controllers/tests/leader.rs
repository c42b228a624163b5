//! Leader election against the in-process API server: of several
//! candidates exactly one runs its controllers; a clean shutdown hands over
//! at once, a crash once the lease has lapsed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use common::{eventually, start};
use corral_controllers::leader::{self, Election};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tokio::task::JoinHandle;

/// A candidate whose "controllers" count how many run at once.
struct Candidate {
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
    leading: Arc<AtomicUsize>,
}

fn candidate(client: &kube::Client, name: &str, running: &Arc<AtomicUsize>) -> Candidate {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let leading = Arc::new(AtomicUsize::new(0));
    let election = Election {
        identity: name.into(),
        lease: Duration::from_secs(2),
        renew_every: Duration::from_millis(200),
    };
    let (running, mine) = (running.clone(), leading.clone());
    let task = tokio::spawn(leader::run_elected(
        client.clone(),
        election,
        rx,
        move |mut s| {
            let (running, mine) = (running.clone(), mine.clone());
            async move {
                running.fetch_add(1, Ordering::SeqCst);
                mine.fetch_add(1, Ordering::SeqCst);
                let _ = s.wait_for(|v| *v).await;
                mine.fetch_sub(1, Ordering::SeqCst);
                running.fetch_sub(1, Ordering::SeqCst);
            }
        },
    ));
    Candidate {
        stop,
        task,
        leading,
    }
}

async fn holder(client: &kube::Client) -> Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), leader::LEASE_NAMESPACE);
    Ok(leases
        .get_opt(leader::LEASE_NAME)
        .await?
        .and_then(|l| l.spec?.holder_identity))
}

#[tokio::test]
async fn one_candidate_leads_and_another_takes_over_when_it_ends() -> Result<()> {
    let h = start().await?;
    let running = Arc::new(AtomicUsize::new(0));
    let mut cands: Vec<Candidate> = ["a", "b", "c"]
        .iter()
        .map(|n| candidate(&h.client, n, &running))
        .collect();
    let at_most_one = || {
        let n = running.load(Ordering::SeqCst);
        anyhow::ensure!(n <= 1, "{n} candidates run their controllers at once");
        Ok(())
    };
    eventually("one leader", || async {
        at_most_one()?;
        Ok(running.load(Ordering::SeqCst) == 1)
    })
    .await?;
    let first = cands
        .iter()
        .position(|c| c.leading.load(Ordering::SeqCst) == 1)
        .unwrap_or(0);
    let name = holder(&h.client).await?;

    // A clean shutdown releases the lease: another leads well within a lease.
    let leaving = cands.remove(first);
    leaving.stop.send(true)?;
    leaving.task.await?;
    let handed_over = tokio::time::Instant::now();
    eventually("another leader after a clean shutdown", || async {
        at_most_one()?;
        Ok(running.load(Ordering::SeqCst) == 1 && holder(&h.client).await? != name)
    })
    .await?;
    assert!(
        handed_over.elapsed() < Duration::from_secs(2),
        "released, not expired"
    );

    // A crash (no release): the lease lapses first, then another leads.
    let second = cands
        .iter()
        .position(|c| c.leading.load(Ordering::SeqCst) == 1)
        .unwrap_or(0);
    let crashed = cands.remove(second);
    crashed.task.abort();
    // Its controllers see their stop switch gone with it, and end.
    eventually("the crashed leader's controllers to end", || async {
        Ok(crashed.leading.load(Ordering::SeqCst) == 0)
    })
    .await?;
    let name = holder(&h.client).await?;
    let crashed_at = tokio::time::Instant::now();
    eventually(
        "the last candidate to lead once the lease lapsed",
        || async {
            at_most_one()?;
            Ok(running.load(Ordering::SeqCst) == 1 && holder(&h.client).await? != name)
        },
    )
    .await?;
    assert!(
        crashed_at.elapsed() >= Duration::from_secs(1),
        "not before the lease lapsed"
    );
    for c in cands {
        c.stop.send(true)?;
        c.task.await?;
    }
    assert_eq!(running.load(Ordering::SeqCst), 0);
    Ok(())
}
