//! Scheduler benchmarks, each against a baseline measured in the same run.
//!
//! - Allocation cost per task at 1k, 10k and 50k nodes (half full, racks as
//!   attributes, a NotIn-rack constraint on every task), with the indexed
//!   placement and with a linear scan of every node (the baseline).
//! - The same at 10k nodes with every task naming two host ports (one
//!   assigned, one fixed per job) on nodes offering a port range, against
//!   the plain indexed placement in the same run: the cost of ports.
//! - The same at 10k nodes with five roles holding guarantees (one not
//!   lending), against the plain indexed placement in the same run: the
//!   cost of the cluster-level guarantee check.
//! - 1,000 tasks that fit nowhere at 10k nodes: one cycle with equivalence
//!   classes against trying each task (the baseline).
//! - A preemption decision at 5k nodes 90 % full: p50/p99 over many decisions,
//!   against the cost of one failed placement (the explanation scan) there.
//!
//! Run: `cargo bench -p corral-core --bench sched`

use std::time::{Duration, Instant};

use corral_api::Tier;
use corral_api::job::{AttributeConstraint, ConstraintOperator, Constraints};
use corral_core::sched::ports::NodePorts;
use corral_core::sched::preempt::{self, Rules};
use corral_core::sched::{NodeState, Policy, Res, RoleInfo, SchedTask, Snapshot, place, run_cycle};
use criterion::{BatchSize, Criterion, criterion_group};

const GI: i64 = 1 << 30;
const BATCH: usize = 1000;

fn at(s: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_800_000_000 + s).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn task(i: usize, cpus: i64, tier: Tier) -> SchedTask {
    SchedTask {
        key: format!("ns/t{i}"),
        job: format!("ns/job{}", i % 50),
        role: format!("role{}", i % 5),
        request: Res::cpu_mem(cpus * 1000, 2 * GI),
        tier,
        priority: (i % 7) as i32,
        constraints: Constraints {
            attributes: vec![AttributeConstraint {
                name: "rack".into(),
                operator: ConstraintOperator::NotIn,
                values: vec!["r0".into()],
            }],
            ..Default::default()
        },
        runtime: None,
        ports: Vec::new(),
        created: at(i as i64),
        started: Some(at(0)),
        gang: None,
        long_running: false,
    }
}

/// `nodes` nodes of 16 CPUs / 64 GiB, filled to `fill` (0..1) with 1-CPU tasks.
fn cluster(nodes: usize, fill: f64) -> Snapshot {
    cluster_with(nodes, fill, 0)
}

/// [`cluster`] with each node offering ports 31000–32000 and each filler
/// task holding `ports` of them.
fn cluster_with(nodes: usize, fill: f64, ports: usize) -> Snapshot {
    let mut s = Snapshot::new();
    for i in 0..nodes {
        let mut n = NodeState::new(&format!("n{i:05}"), Res::cpu_mem(16_000, 64 * GI));
        n.attributes.insert("rack".into(), format!("r{}", i % 10));
        if ports > 0 {
            n.ports = NodePorts::new(&[corral_api::ports::DEFAULT_RANGE]);
        }
        s.upsert_node(n);
    }
    let per_node = (16.0 * fill) as usize;
    let mut k = 0;
    for id in 0..nodes {
        for _ in 0..per_node {
            let mut t = task(1_000_000 + k, 1, Tier::Preemptible);
            t.constraints = Constraints::default();
            t.ports = vec![None; ports];
            let _ = s.bind(t, id as u32);
            k += 1;
        }
    }
    s
}

/// The baseline: best fit by scanning every node.
fn linear_place(s: &Snapshot, t: &SchedTask) -> Option<u32> {
    let mut best: Option<(i64, u32)> = None;
    for id in 0..s.node_count() as u32 {
        let n = s.node(id);
        let rack_ok = n.attributes.get("rack").is_none_or(|r| r != "r0");
        let free = n.free_for(&t.role);
        if n.usable() && rack_ok && free.fits(&t.request) {
            let left = free.0[0] - t.request.0[0];
            if best.is_none_or(|(b, _)| left < b) {
                best = Some((left, id));
            }
        }
    }
    best.map(|(_, id)| id)
}

fn allocation(c: &mut Criterion) {
    let mut g = c.benchmark_group("allocate 1000 tasks");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for nodes in [1_000usize, 10_000, 50_000] {
        let base = cluster(nodes, 0.5);
        let tasks: Vec<SchedTask> = (0..BATCH)
            .map(|i| task(i, 1 + (i % 3) as i64, Tier::Preemptible))
            .collect();
        g.bench_function(format!("indexed, {nodes} nodes"), |b| {
            b.iter_batched(
                || base.clone(),
                |mut s| {
                    for t in &tasks {
                        if let Ok(id) = place(&s, t, Policy::BinPack) {
                            let _ = s.bind(t.clone(), id);
                        }
                    }
                    s
                },
                BatchSize::LargeInput,
            )
        });
        if nodes == 10_000 {
            // Every task names two ports (one assigned, one fixed per job),
            // on nodes whose fillers hold one each.
            let ported = cluster_with(nodes, 0.5, 1);
            let with_ports: Vec<SchedTask> = tasks
                .iter()
                .map(|t| {
                    let mut t = t.clone();
                    let job: u16 = t.job.trim_start_matches("ns/job").parse().unwrap_or(0);
                    t.ports = vec![None, Some(9000 + job)];
                    t
                })
                .collect();
            g.bench_function(format!("indexed with ports, {nodes} nodes"), |b| {
                b.iter_batched(
                    || ported.clone(),
                    |mut s| {
                        for t in &with_ports {
                            if let Ok(id) = place(&s, t, Policy::BinPack) {
                                let _ = s.bind(t.clone(), id);
                            }
                        }
                        s
                    },
                    BatchSize::LargeInput,
                )
            });
            let mut guarded = base.clone();
            for r in 0..5 {
                guarded.upsert_role(
                    &format!("role{r}"),
                    RoleInfo {
                        // A tenth of the cluster's CPUs each; role0 lends nothing.
                        guarantee: Res::cpu_mem(16_000 * nodes as i64 / 10, 0),
                        lend_unused: r != 0,
                        ..RoleInfo::default()
                    },
                );
            }
            g.bench_function(format!("indexed with guarantees, {nodes} nodes"), |b| {
                b.iter_batched(
                    || guarded.clone(),
                    |mut s| {
                        for t in &tasks {
                            if let Ok(id) = place(&s, t, Policy::BinPack) {
                                let _ = s.bind(t.clone(), id);
                            }
                        }
                        s
                    },
                    BatchSize::LargeInput,
                )
            });
        }
        g.bench_function(format!("linear scan (baseline), {nodes} nodes"), |b| {
            b.iter_batched(
                || base.clone(),
                |mut s| {
                    for t in &tasks {
                        if let Some(id) = linear_place(&s, t) {
                            let _ = s.bind(t.clone(), id);
                        }
                    }
                    s
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// Tasks that fit nowhere (32 CPUs, nodes have 16), in 50 jobs: one cycle
/// with equivalence classes (one failed placement per class) against trying
/// each (one failed placement, with its explanation scan, per task).
fn unplaceable(c: &mut Criterion) {
    let mut g = c.benchmark_group("1000 unplaceable tasks");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    let nodes = 10_000;
    let base = cluster(nodes, 0.5);
    let tasks: Vec<SchedTask> = (0..BATCH).map(|i| task(i, 32, Tier::Preemptible)).collect();
    g.bench_function(format!("one cycle, classes, {nodes} nodes"), |b| {
        b.iter_batched(
            || (base.clone(), tasks.clone()),
            |(mut s, tasks)| run_cycle(&mut s, tasks, Policy::BinPack),
            BatchSize::LargeInput,
        )
    });
    g.bench_function(format!("each tried (baseline), {nodes} nodes"), |b| {
        b.iter_batched(
            || base.clone(),
            |s| {
                tasks
                    .iter()
                    .filter(|t| place(&s, t, Policy::BinPack).is_err())
                    .count()
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, allocation, unplaceable);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// p50/p99 of preemption decisions at 5k nodes, 90 % full (not a criterion
/// statistic: the goal is a percentile).
fn preemption_percentiles() {
    let s = cluster(5_000, 0.9);
    let rules = Rules {
        min_runtime_seconds: 0,
        ..Rules::default()
    };
    let mut plans = Vec::new();
    let mut fails = Vec::new();
    for i in 0..200 {
        let p = task(10_000_000 + i, 4, Tier::Preferred);
        let start = Instant::now();
        let plan = preempt::plan(&s, &p, at(10_000), &rules);
        plans.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(plan.is_some(), "a preferred task must find victims");
        let start = Instant::now();
        let _ = place(&s, &p, Policy::BinPack);
        fails.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    plans.sort_by(|a, b| a.total_cmp(b));
    fails.sort_by(|a, b| a.total_cmp(b));
    println!(
        "preemption decision, 5000 nodes 90% full: p50 {:.2} ms, p99 {:.2} ms (goal p99 ≤ 5 ms); failed placement with explanation scan: p50 {:.2} ms; ratio {:.2}×",
        percentile(&plans, 0.5),
        percentile(&plans, 0.99),
        percentile(&fails, 0.5),
        percentile(&plans, 0.5) / percentile(&fails, 0.5),
    );
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    preemption_percentiles();
}
