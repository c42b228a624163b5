//! The cluster's figures at a scrape: `cluster::Figures::of` over 5,000
//! nodes and 50,000 tasks (every task bound and running, 10 roles with
//! quotas, 100 jobs) and their encoding, against a baseline in the same
//! run: serializing the 5,000 Nodes to JSON, the body of a LIST of them.
//! Run: `cargo bench -p corral-controllers --bench metrics`

use std::sync::Arc;

use corral_api::{Job, Node, Quota, Role, Task};
use corral_controllers::metrics::cluster::{Figures, Objects, encode};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const NODES: usize = 5000;
const TASKS: usize = 50_000;
const ROLES: usize = 10;
const JOBS: usize = 100;

fn objects() -> Objects {
    let nodes: Vec<Arc<Node>> = (0..NODES)
        .map(|i| {
            Arc::new(
                serde_json::from_value(json!({
                    "apiVersion": "corral.dev/v1alpha1", "kind": "Node",
                    "metadata": {"name": format!("node-{i:05}")}, "spec": {},
                    "status": {"total": {"cpus": 16, "memory": "64Gi"}, "allocatable": {"cpus": 16, "memory": "64Gi"},
                               "usage": {"cpus": "3500m", "memory": "20Gi"},
                               "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady", "message": ""}]}}))
                .expect("node"),
            )
        })
        .collect();
    let tasks = (0..TASKS)
        .map(|i| {
            Arc::new(
                serde_json::from_value::<Task>(json!({
                    "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
                    "metadata": {"name": format!("job-{}-{i}-0", i % JOBS), "namespace": "default"},
                    "spec": {"job": format!("job-{}", i % JOBS), "role": format!("role-{}", i % ROLES), "instanceId": i,
                             "resources": {"cpus": "100m", "memory": "64Mi"}, "container": {"image": "x"},
                             "nodeName": format!("node-{:05}", i % NODES)},
                    "status": {"phase": "RUNNING"}}))
                .expect("task"),
            )
        })
        .collect();
    let roles = (0..ROLES)
        .map(|i| {
            Arc::new(
                serde_json::from_value::<Role>(json!({
                    "apiVersion": "corral.dev/v1alpha1", "kind": "Role", "metadata": {"name": format!("role-{i}")},
                    "spec": {}, "status": {"allocated": {"cpus": 500, "memory": "320Gi"}, "dominantShare": 0.0625}}))
                .expect("role"),
            )
        })
        .collect();
    let quotas = (0..ROLES)
        .map(|i| {
            Arc::new(
                serde_json::from_value::<Quota>(json!({
                    "apiVersion": "corral.dev/v1alpha1", "kind": "Quota",
                    "metadata": {"name": format!("role-{i}"), "namespace": "default"},
                    "spec": {"role": format!("role-{i}"), "guarantee": {"cpus": 400}, "limit": {"cpus": 1000}}}))
                .expect("quota"),
            )
        })
        .collect();
    let jobs = (0..JOBS)
        .map(|i| {
            Arc::new(
                serde_json::from_value::<Job>(json!({
                    "apiVersion": "corral.dev/v1alpha1", "kind": "Job",
                    "metadata": {"name": format!("job-{i}"), "namespace": "default"},
                    "spec": {"role": format!("role-{}", i % ROLES), "environment": "prod", "kind": "service",
                             "instances": TASKS / JOBS, "resources": {"cpus": "100m"}, "container": {"image": "x"}},
                    "status": {"phase": "Active"}}))
                .expect("job"),
            )
        })
        .collect();
    Objects {
        nodes,
        tasks,
        jobs,
        roles,
        quotas,
    }
}

fn scrape(c: &mut Criterion) {
    let o = objects();
    let mut g = c.benchmark_group("scrape at 5k nodes, 50k tasks");
    g.sample_size(20);
    g.bench_function("cluster figures and encoding", |b| {
        b.iter(|| {
            let mut out = String::new();
            encode(&mut out, &Figures::of(&o)).expect("encode");
            out.len()
        })
    });
    g.bench_function("baseline: the Nodes as a LIST body (JSON)", |b| {
        let nodes: Vec<&Node> = o.nodes.iter().map(|n| &**n).collect();
        b.iter(|| serde_json::to_vec(&nodes).expect("json").len())
    });
    g.finish();
}

criterion_group!(benches, scrape);
criterion_main!(benches);
