//! What-if plans with the `corral` binary and stock kubectl against a real
//! `corral server` and a `corral agent` simulating two nodes: `corral plan
//! -f` prints where each instance would go and what would wait, kubectl
//! creates the same PlanReview, and neither creates anything.

use std::time::Duration;

use anyhow::{Context, Result};
use corral_e2e::{Agent, Corral, Kubectl, Server, wait_for};
use serde_json::Value;

const JOB: &str = "apiVersion: corral.dev/v1alpha1
kind: Job
metadata: {name: api, namespace: default}
spec:
  role: web
  environment: prod
  kind: service
  instances: 3
  resources: {cpus: 1, memory: 256Mi}
  container: {image: busybox}
";

fn ready_nodes(k: &Kubectl) -> Result<usize> {
    let out = k
        .run(&[
            "get",
            "nodes.corral.dev",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ])?
        .ok()?;
    Ok(out.lines().filter(|l| *l == "True").count())
}

#[test]
fn a_plan_shows_placements_and_waits_and_creates_nothing() -> Result<()> {
    let server = Server::start()?;
    let k = Kubectl::new(&server)?;
    let c = Corral::new(&server);
    k.corral_role("web")?;
    let _agent = Agent::simulated(&server, "sim", 2, "cpus=1,memory=1Gi")?;
    wait_for("two Ready nodes", Duration::from_secs(60), || {
        Ok(ready_nodes(&k)? == 2)
    })?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("job.yaml");
    std::fs::write(&file, JOB)?;
    let out = c
        .run(&["plan", "-f", file.to_str().context("path")?])?
        .ok()?;
    assert!(
        out.contains("Plan over 2 node(s); nothing was created."),
        "{out}"
    );
    let placed = out.lines().filter(|l| l.contains(": on sim-")).count();
    assert_eq!(placed, 2, "two instances fit, one per node:\n{out}");
    assert!(
        out.contains("default/api #2: pending: 0/2 nodes fit"),
        "the third waits, saying why:\n{out}"
    );
    // kubectl creates the same review.
    let review = "apiVersion: corral.dev/v1alpha1\nkind: PlanReview\nspec:\n  jobs:\n  - apiVersion: corral.dev/v1alpha1\n    kind: Job\n    metadata: {name: api, namespace: default}\n    spec: {role: web, environment: prod, kind: service, instances: 1, resources: {cpus: 1, memory: 256Mi}, container: {image: busybox}}\n";
    let created = k
        .run_stdin(&["create", "-f", "-", "-o", "json"], review)?
        .ok()?;
    let v: Value = serde_json::from_str(&created)?;
    assert_eq!(v["status"]["instances"][0]["instance"], 0, "{created}");
    assert!(
        v["status"]["instances"][0]["node"]
            .as_str()
            .is_some_and(|n| n.starts_with("sim-")),
        "{created}"
    );
    // Nothing was created by either.
    let jobs = k
        .run(&["get", "jobs.corral.dev", "-A", "-o", "name"])?
        .ok()?;
    assert!(jobs.trim().is_empty(), "{jobs}");
    let tasks = k
        .run(&["get", "tasks.corral.dev", "-A", "-o", "name"])?
        .ok()?;
    assert!(tasks.trim().is_empty(), "{tasks}");
    Ok(())
}
