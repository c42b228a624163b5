//! Health probes at an agent's scale: N tasks (default 100 and 500), each
//! an HTTP server, probed the way the agent probes them (one probe loop a
//! task, every second, on the agent's runtime) for a few seconds; then as
//! fast as they go. Reports probes/s and the probing thread's CPU per 100
//! probed tasks, for HTTP checks and, as the baseline measured in the same
//! run, TCP checks (a bare connect: the least a probe can cost).
//!
//! The servers run on other threads; the probes on this one (a
//! current-thread runtime), whose CPU time is what is reported.
//! `CORRAL_BENCH_PROBE_SECONDS` (default 5) sets each paced run's length.
//! Run: `cargo bench -p corral-node-agent --bench probes`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use corral_api::health::HealthCheck;
use corral_node_agent::health::{Target, probe};
use corral_node_agent::runtime::Simulated;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let Ok(u) = getrusage(UsageWho::RUSAGE_THREAD) else {
        return Duration::ZERO;
    };
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    Duration::from_micros(us(u.user_time()) + us(u.system_time()))
}

/// `n` HTTP servers answering `200 OK` on other threads; their ports.
fn servers(n: usize) -> Result<Vec<u16>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let l = rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
        ports.push(l.local_addr()?.port());
        rt.spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 512];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                });
            }
        });
    }
    // Serving for the rest of the run.
    std::mem::forget(rt);
    Ok(ports)
}

fn target(port: u16, http: bool) -> Result<Target> {
    let check: HealthCheck = serde_json::from_value(if http {
        serde_json::json!({"http": {"port": "http", "path": "/health"}, "timeoutSeconds": 2})
    } else {
        serde_json::json!({"tcp": {"port": "http"}, "timeoutSeconds": 2})
    })?;
    Ok(Target {
        key: format!("bench/t{port}"),
        uid: None,
        check,
        port: Some(port),
        container: serde_json::from_value(serde_json::json!({"image": "busybox"}))?,
        runtime: Arc::new(Simulated::default()),
    })
}

/// Every task probed once a second for `secs`: (probes/s, failures, CPU).
fn paced(ports: &[u16], http: bool, secs: u64) -> Result<(f64, usize, Duration)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let targets: Vec<Target> = ports
        .iter()
        .map(|p| target(*p, http))
        .collect::<Result<_>>()?;
    let cpu = thread_cpu();
    let start = Instant::now();
    let (done, failed) = rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bool>(4096);
        for t in targets {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                loop {
                    every.tick().await;
                    let (passed, _) = probe(&t).await;
                    if tx.send(passed).await.is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let (mut done, mut failed) = (0usize, 0usize);
        while let Ok(Some(passed)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            done += 1;
            failed += usize::from(!passed);
        }
        (done, failed)
    });
    let used = thread_cpu() - cpu;
    Ok((done as f64 / start.elapsed().as_secs_f64(), failed, used))
}

/// As many probes as go through, 64 at a time, for `secs`: probes/s.
fn flat_out(ports: &[u16], http: bool, secs: u64) -> Result<(f64, Duration)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let targets: Vec<Target> = ports
        .iter()
        .map(|p| target(*p, http))
        .collect::<Result<_>>()?;
    let cpu = thread_cpu();
    let start = Instant::now();
    let done = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut done = 0usize;
        let mut i = 0usize;
        while Instant::now() < deadline {
            let batch: Vec<_> = (0..64)
                .map(|k| &targets[(i + k) % targets.len()])
                .map(probe)
                .collect();
            done += futures::future::join_all(batch).await.len();
            i += 64;
        }
        done
    });
    Ok((
        done as f64 / start.elapsed().as_secs_f64(),
        thread_cpu() - cpu,
    ))
}

fn main() -> Result<()> {
    let secs: u64 = std::env::var("CORRAL_BENCH_PROBE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    for n in [100usize, 500] {
        let ports = servers(n)?;
        for (name, http) in [("tcp (baseline)", false), ("http", true)] {
            let (rate, failed, cpu) = paced(&ports, http, secs)?;
            let per100 = cpu.as_secs_f64() / secs as f64 / (n as f64 / 100.0) * 100.0;
            println!(
                "{n} tasks, {name}, every 1 s: {rate:.0} probes/s, {failed} failed, probing CPU {:.2}% of a core per 100 tasks",
                per100
            );
            let (max, cpu) = flat_out(&ports, http, 2)?;
            println!(
                "{n} tasks, {name}, flat out: {max:.0} probes/s, {:.1} µs CPU per probe",
                cpu.as_secs_f64() * 1e6 / (max * 2.0)
            );
        }
    }
    Ok(())
}
