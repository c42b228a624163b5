//! One reconcile of a Job of 50,000 instances: what the job controller
//! decides each time it looks at a big job — the plan
//! (`core::jobs::reconcile`) and the job's MTTA/MTTS/MTTR — for the job as
//! it is made (no task yet, then half of them), once every task runs, and
//! once half of them have ended and been replaced. Two ways, in the same
//! run:
//! - kept: over views and latency samples kept up to date change by change
//!   (what the job controller does: each task is viewed once per change);
//! - walked: every task object viewed on the spot (what it did before).
//!
//! Baseline, also in the same run: one pass over the task objects reading
//! each one's phase, the least a reconcile that walks the tasks reads.
//! The job controller reconciles a job at most every 200 ms while its
//! tasks change, so at 50,000 instances this cost is paid up to five times
//! a second for as long as the job's tasks move.
//!
//! Run: `cargo bench -p corral-core --bench jobs`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use corral_api::{Job, Task, TaskPhase};
use corral_core::jobs;
use corral_core::latency;
use serde_json::json;

const INSTANCES: u32 = 50_000;
const RUNS: usize = 20;
const NOW: i64 = 1_796_601_600_000_000;

fn job(kind: &str) -> Job {
    serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job",
        "metadata": {"name": "big", "namespace": "batch", "uid": "u1", "generation": 1},
        "spec": {"role": "team0", "environment": "prod", "kind": kind, "instances": INSTANCES,
                 "resources": {"cpus": 1, "memory": "1Gi"}, "container": {"image": "x"}}}))
    .expect("job")
}

/// A task of `big` as the pipeline leaves it: RUNNING after its four
/// events, or FINISHED after five.
fn task(instance: u32, attempt: u32, hash: &str, ended: bool) -> Arc<Task> {
    let ev = |s: &str, ms: u32| json!({"timestamp": format!("2026-12-07T00:00:{:02}.{:03}000Z", ms / 1000, ms % 1000), "status": s, "message": "", "actor": "x"});
    let mut events = vec![
        ev("PENDING", 0),
        ev("ASSIGNED", 100 + instance % 500),
        ev("STARTING", 700 + instance % 500),
        ev("RUNNING", 1300 + instance % 500),
    ];
    if ended {
        events.push(ev("FINISHED", 59_000));
    }
    let phase = if ended { "FINISHED" } else { "RUNNING" };
    Arc::new(
        serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": jobs::task_name("big", instance, attempt), "namespace": "batch",
                "uid": format!("t{instance}-{attempt}"), "resourceVersion": "7",
                "creationTimestamp": "2026-12-07T00:00:00Z",
                "labels": {"corral.dev/job": "big", "corral.dev/instance": instance.to_string()},
                "annotations": {jobs::TEMPLATE_ANNOTATION: hash}},
            "spec": {"job": "big", "role": "team0", "environment": "prod", "instanceId": instance,
                     "resources": {"cpus": 1, "memory": "1Gi"}, "container": {"image": "x"},
                     "nodeName": format!("n{}", instance % 5000)},
            "status": {"phase": phase, "taskEvents": events}}))
        .expect("task"),
    )
}

/// What one reconcile decided before views were kept: every task viewed
/// on the spot, then the plan and the latency figures.
fn walked(job: &Job, owned: &[Arc<Task>]) -> usize {
    let views: Vec<jobs::TaskView> = owned.iter().filter_map(|t| jobs::view("big", t)).collect();
    let plan = jobs::reconcile(job, &views, NOW);
    let figures = latency::figures(owned.iter().filter_map(|t| latency::TaskHistory::of(t)));
    plan.create.len() + plan.kill.len() + usize::from(figures.time_to_running.is_some())
}

/// What one reconcile decides over kept views and samples.
fn kept(job: &Job, views: &[jobs::TaskView], samples: &[latency::Sample]) -> usize {
    let plan = jobs::reconcile(job, views, NOW);
    let figures = latency::figures_of(samples.iter().copied());
    plan.create.len() + plan.kill.len() + usize::from(figures.time_to_running.is_some())
}

/// The baseline: one pass reading each task's phase.
fn floor(owned: &[Arc<Task>]) -> usize {
    owned
        .iter()
        .filter(|t| t.status.as_ref().map(|s| s.phase()) == Some(TaskPhase::Running))
        .count()
}

fn median_ms(mut f: impl FnMut() -> usize) -> f64 {
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

fn main() {
    for kind in ["adhoc", "service"] {
        let job = job(kind);
        let hash = jobs::update::hash_of(&job.spec.template());
        let mut job = job;
        // As after its first reconcile: the template recorded.
        job.status =
            Some(serde_json::from_value(json!({"template": job.spec.template()})).expect("status"));
        let cases: [(&str, Vec<Arc<Task>>); 4] = [
            ("no task yet", Vec::new()),
            (
                "half made",
                (0..INSTANCES / 2)
                    .map(|i| task(i, 0, &hash, false))
                    .collect(),
            ),
            (
                "all running",
                (0..INSTANCES).map(|i| task(i, 0, &hash, false)).collect(),
            ),
            (
                "half replaced",
                (0..INSTANCES)
                    .flat_map(|i| {
                        let mut v = vec![task(i, 0, &hash, i % 2 == 0)];
                        if i % 2 == 0 {
                            v.push(task(i, 1, &hash, false));
                        }
                        v
                    })
                    .collect(),
            ),
        ];
        println!("a {kind} job of {INSTANCES} instances, one reconcile (median of {RUNS}):");
        for (name, owned) in &cases {
            let views: Vec<jobs::TaskView> =
                owned.iter().filter_map(|t| jobs::view("big", t)).collect();
            let samples: Vec<latency::Sample> = owned
                .iter()
                .filter_map(|t| latency::TaskHistory::of(t))
                .map(|h| h.sample())
                .collect();
            let base = median_ms(|| floor(owned));
            let old = median_ms(|| walked(&job, owned));
            let new = median_ms(|| kept(&job, &views, &samples));
            println!(
                "  {name:>13} ({:>5} tasks): kept {new:7.2} ms, walked {old:7.2} ms ({:.2}×); baseline one pass {base:5.2} ms",
                owned.len(),
                new / old.max(1e-6)
            );
        }
    }
    // What keeping them costs: one task's view and sample, once per change.
    let owned: Vec<Arc<Task>> = (0..INSTANCES).map(|i| task(i, 0, "h", false)).collect();
    let all = median_ms(|| {
        owned
            .iter()
            .filter_map(|t| {
                let s = latency::TaskHistory::of(t)?.sample();
                jobs::view("big", t).map(|v| (v, s))
            })
            .count()
    });
    println!(
        "one task's view and sample (per change): {:.2} µs",
        all * 1e3 / f64::from(INSTANCES)
    );
}
