//! Write throughput of the stores against one real etcd (fsync on), all
//! measured in the same run so the ratios hold on a noisy machine:
//!
//! - raw etcd-client sequential puts (the baseline);
//! - raw etcd-client puts from 64 concurrent tasks (no group commit, for context);
//! - the etcd Store: 1 writer, and 64 concurrent writers (group commit);
//! - the embedded Store on disk: 1 writer, and 64 concurrent writers.
//!
//! Each phase runs `ROUNDS` times, interleaved, and the median is reported.
//! `CORRAL_BENCH_OPS` sets the writes per phase (default 2000).
//!
//! Run: `cargo bench -p corral-store --bench throughput`

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use corral_store::Store;
use corral_store::embedded::EmbeddedStore;
use corral_store::etcd::EtcdStore;
use corral_store::testing::EtcdServer;

const ROUNDS: usize = 3;
const VALUE_BYTES: usize = 256;
const WRITERS: usize = 64;

fn ops_per_phase() -> usize {
    std::env::var("CORRAL_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

async fn raw_sequential(client: &mut etcd_client::Client, round: usize, n: usize) -> Result<f64> {
    let value = vec![b'x'; VALUE_BYTES];
    let start = Instant::now();
    for i in 0..n {
        client
            .put(
                format!("/bench/raw-seq/{round}/{i:06}"),
                value.clone(),
                None,
            )
            .await?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn raw_concurrent(client: &etcd_client::Client, round: usize, n: usize) -> Result<f64> {
    let per = n / WRITERS;
    let start = Instant::now();
    let tasks = (0..WRITERS).map(|w| {
        let mut kv = client.kv_client();
        tokio::spawn(async move {
            let value = vec![b'x'; VALUE_BYTES];
            for i in 0..per {
                kv.put(
                    format!("/bench/raw-par/{round}/{w:02}/{i:05}"),
                    value.clone(),
                    None,
                )
                .await?;
            }
            anyhow::Ok(())
        })
    });
    for t in futures::future::join_all(tasks).await {
        t??;
    }
    Ok((per * WRITERS) as f64 / start.elapsed().as_secs_f64())
}

async fn store_writers(
    store: Arc<dyn Store>,
    name: &str,
    round: usize,
    writers: usize,
    n: usize,
) -> Result<f64> {
    let per = n / writers;
    let start = Instant::now();
    let tasks = (0..writers).map(|w| {
        let store = store.clone();
        let prefix = format!("/bench/{name}/{round}/{w:02}/");
        tokio::spawn(async move {
            let value = vec![b'x'; VALUE_BYTES];
            for i in 0..per {
                store
                    .create(&format!("{prefix}{i:05}"), value.clone())
                    .await?;
            }
            anyhow::Ok(())
        })
    });
    for t in futures::future::join_all(tasks).await {
        t??;
    }
    Ok((per * writers) as f64 / start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let n = ops_per_phase();
    let etcd = EtcdServer::start()?;
    let endpoint = etcd.endpoint().to_owned();
    let mut raw = etcd_client::Client::connect([endpoint.clone()], None).await?;
    let store: Arc<dyn Store> = Arc::new(EtcdStore::connect(&[endpoint]).await?);
    let dir = tempfile::tempdir()?;
    let embedded: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path().join("bench.db"))?);

    let names = [
        "etcd-client, sequential puts (baseline)",
        "etcd-client, 64 concurrent puts",
        "etcd Store, 1 writer",
        "etcd Store, 64 writers (group commit)",
        "embedded Store, 1 writer",
        "embedded Store, 64 writers (group commit)",
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for round in 0..ROUNDS {
        rates[0].push(raw_sequential(&mut raw, round, n).await?);
        rates[1].push(raw_concurrent(&raw, round, n).await?);
        rates[2].push(store_writers(store.clone(), "store-1", round, 1, n).await?);
        rates[3].push(store_writers(store.clone(), "store-64", round, WRITERS, n).await?);
        rates[4].push(store_writers(embedded.clone(), "emb-1", round, 1, n).await?);
        rates[5].push(store_writers(embedded.clone(), "emb-64", round, WRITERS, n).await?);
        // Keep etcd's history small between rounds.
        let rev = store.current_revision().await?;
        store.compact(rev).await?;
        let rev = embedded.current_revision().await?;
        embedded.compact(rev).await?;
    }
    let medians: Vec<f64> = rates.into_iter().map(median).collect();
    let baseline = medians[0];
    println!(
        "store write throughput: {n} writes of {VALUE_BYTES} B per phase, median of {ROUNDS} interleaved rounds, etcd fsync on"
    );
    println!("{:<44} {:>12} {:>10}", "phase", "writes/s", "× baseline");
    for (name, rate) in names.iter().zip(&medians) {
        println!("{name:<44} {rate:>12.0} {:>10.2}", rate / baseline);
    }
    let ratio = medians[3] / baseline;
    println!(
        "goal: 64-writer group commit ≥ 3× sequential raw puts: {ratio:.2}× ({})",
        if ratio >= 3.0 { "met" } else { "NOT met" }
    );
    Ok(())
}
