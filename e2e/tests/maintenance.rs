//! Fleet maintenance with the `corral` binary and stock kubectl: a real
//! `corral server` (with its controllers) and `corral agent` simulating
//! three nodes. An eviction its job's budget forbids is a 429 to kubectl;
//! `corral node drain --wait` empties a node within the budget and the job
//! stays whole elsewhere; `corral get nodes` shows the node drained.

use std::time::Duration;

use anyhow::{Context, Result};
use corral_e2e::{Agent, Corral, Kubectl, Server, wait_for};
use serde_json::Value;

const JOB: &str = "apiVersion: corral.dev/v1alpha1
kind: Job
metadata: {name: web, namespace: default}
spec:
  role: web
  environment: prod
  kind: service
  instances: 3
  resources: {cpus: 1, memory: 256Mi}
  container: {image: busybox}
  disruptionBudget: {maxUnavailable: 0}
";

/// Live tasks: (name, node, phase).
fn live(k: &Kubectl) -> Result<Vec<(String, String, String)>> {
    let out = k
        .run(&["get", "tasks", "-n", "default", "-o", "json"])?
        .ok()?;
    let list: Value = serde_json::from_str(&out)?;
    Ok(list["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|t| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                s(&t["metadata"]["name"]),
                s(&t["spec"]["nodeName"]),
                s(&t["status"]["phase"]),
            )
        })
        .filter(|(_, _, p)| !matches!(p.as_str(), "FINISHED" | "FAILED" | "KILLED" | "LOST"))
        .collect())
}

fn all_running(k: &Kubectl) -> Result<bool> {
    let l = live(k)?;
    Ok(l.len() == 3 && l.iter().all(|(_, _, p)| p == "RUNNING"))
}

#[test]
fn evictions_honour_budgets_and_a_drain_empties_its_node() -> Result<()> {
    let server = Server::start()?;
    let k = Kubectl::new(&server)?;
    let c = Corral::new(&server);
    k.corral_role("web")?;
    let _agent = Agent::start(
        &server,
        "agent",
        &[
            "--node-name",
            "sim",
            "--runtimes",
            "simulated",
            "--simulate-nodes",
            "3",
            "--resources",
            "cpus=2,memory=2Gi",
        ],
    )?;
    k.run_stdin(&["apply", "-f", "-"], JOB)?.ok()?;
    wait_for("three instances running", Duration::from_secs(60), || {
        all_running(&k)
    })?;
    let (victim, node, _) = live(&k)?.into_iter().next().context("a task")?;

    // Budget 0: kubectl's eviction is refused with 429, nothing changes.
    let eviction = format!(
        "{{\"apiVersion\": \"policy/v1\", \"kind\": \"Eviction\", \"metadata\": {{\"name\": \"{victim}\", \"namespace\": \"default\"}}}}"
    );
    let path = format!("/apis/corral.dev/v1alpha1/namespaces/default/tasks/{victim}/eviction");
    let refused = k.run_stdin(&["create", "--raw", &path, "-f", "-"], &eviction)?;
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("TooManyRequests") && refused.stderr.contains("disruption budget"),
        "{}",
        refused.stderr
    );
    assert!(all_running(&k)?, "a refused eviction changes nothing");

    // Budget 1: the node holding the first task is drained.
    k.run(&[
        "patch",
        "job",
        "web",
        "-n",
        "default",
        "--type",
        "merge",
        "-p",
        r#"{"spec": {"disruptionBudget": {"maxUnavailable": 1}}}"#,
    ])?
    .ok()?;
    let drained = c
        .run(&["node", "drain", &node, "--wait", "--timeout", "120"])?
        .ok()?;
    assert!(
        drained.contains(&format!("node.corral.dev/{node} drained")),
        "{drained}"
    );
    wait_for("the job whole elsewhere", Duration::from_secs(60), || {
        let l = live(&k)?;
        Ok(all_running(&k)? && l.iter().all(|(_, n, _)| *n != node))
    })?;
    let nodes = c.run(&["get", "nodes"])?.ok()?;
    let row = nodes
        .lines()
        .find(|l| l.starts_with(&node))
        .context("the node's row")?;
    assert!(row.contains("Drained"), "{nodes}");
    // Back in service.
    let back = c.run(&["node", "uncordon", &node])?.ok()?;
    assert!(back.contains("uncordoned"), "{back}");
    Ok(())
}
