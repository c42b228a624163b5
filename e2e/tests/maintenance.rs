//! Fleet operations with the `corral` binary and stock kubectl: a real
//! `corral server` (with its controllers) and `corral agent` simulating
//! three nodes. An eviction its job's budget forbids is a 429 to kubectl;
//! `corral node drain --wait` empties a node within the budget and the job
//! stays whole elsewhere; `corral get nodes` shows the node drained; a
//! maintenance window empties its node before it opens; a reservation that
//! would over-commit its node is refused, saying why.

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
    let _agent = Agent::simulated(&server, "sim", 3, "cpus=2,memory=2Gi")?;
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

/// A maintenance window scheduled with `corral node maintenance` drains its
/// node ahead of it: the node is empty before the window opens, and
/// `corral get nodes` then shows it in maintenance.
#[test]
fn a_maintenance_window_empties_its_node_before_it_opens() -> Result<()> {
    let server = Server::start()?;
    let k = Kubectl::new(&server)?;
    let c = Corral::new(&server);
    k.corral_role("web")?;
    let _agent = Agent::simulated(&server, "sim", 3, "cpus=2,memory=2Gi")?;
    k.run_stdin(
        &["apply", "-f", "-"],
        &JOB.replace("maxUnavailable: 0", "maxUnavailable: 1"),
    )?
    .ok()?;
    wait_for("three instances running", Duration::from_secs(60), || {
        all_running(&k)
    })?;
    let (_, node, _) = live(&k)?.into_iter().next().context("a task")?;
    let scheduled = c
        .run(&[
            "node",
            "maintenance",
            &node,
            "--start",
            "+15s",
            "--duration",
            "1h",
            "--drain-ahead",
            "12s",
        ])?
        .ok()?;
    assert!(
        scheduled.contains("scheduled for maintenance at"),
        "{scheduled}"
    );
    let opens = std::time::Instant::now() + Duration::from_secs(15);
    wait_for(
        "the node emptied ahead of its window",
        Duration::from_secs(15),
        || {
            let l = live(&k)?;
            Ok(all_running(&k)? && l.iter().all(|(_, n, _)| *n != node))
        },
    )?;
    assert!(
        std::time::Instant::now() < opens,
        "emptied before the window opened"
    );
    wait_for("the window open", Duration::from_secs(30), || {
        let nodes = c.run(&["get", "nodes"])?.ok()?;
        Ok(nodes
            .lines()
            .any(|l| l.starts_with(&node) && l.contains("MaintenanceWindowOpen")))
    })?;
    Ok(())
}

/// A reservation that would over-commit its node is not applied, and says
/// why where an operator looks.
#[test]
fn an_over_committing_reservation_is_refused_visibly() -> Result<()> {
    let server = Server::start()?;
    let k = Kubectl::new(&server)?;
    let c = Corral::new(&server);
    k.corral_role("web")?;
    k.corral_role("batch")?;
    let _agent = Agent::start(
        &server,
        "agent",
        &[
            "--node-name",
            "solo",
            "--runtimes",
            "simulated",
            "--resources",
            "cpus=4,memory=4Gi",
        ],
    )?;
    wait_for("the node", Duration::from_secs(60), || {
        Ok(!k
            .run(&["get", "nodes.corral.dev", "-o", "name"])?
            .ok()?
            .trim()
            .is_empty())
    })?;
    let reserve = |name: &str, role: &str, cpus: u32| -> Result<()> {
        let r = format!(
            "apiVersion: corral.dev/v1alpha1\nkind: Reservation\nmetadata: {{name: {name}}}\nspec: {{node: solo, role: {role}, resources: {{cpus: {cpus}}}}}\n"
        );
        k.run_stdin(&["apply", "-f", "-"], &r)?.ok()?;
        Ok(())
    };
    reserve("web-on-solo", "web", 3)?;
    wait_for("the first in force", Duration::from_secs(30), || {
        Ok(c.run(&["get", "reservations", "-o", "wide"])?
            .stdout
            .lines()
            .any(|l| l.starts_with("web-on-solo") && l.contains("True")))
    })?;
    // Older first decides who gets the node: the second is made in a
    // later second than the first.
    let first = k
        .run(&[
            "get",
            "reservation",
            "web-on-solo",
            "-o",
            "jsonpath={.metadata.creationTimestamp}",
        ])?
        .ok()?;
    let first: jiff::Timestamp = first.trim().parse()?;
    wait_for("a second to pass", Duration::from_secs(5), || {
        Ok(jiff::Timestamp::now().as_second() > first.as_second())
    })?;
    reserve("batch-on-solo", "batch", 2)?;
    wait_for(
        "the second refused, saying why",
        Duration::from_secs(30),
        || {
            let wide = c.run(&["get", "reservations", "-o", "wide"])?.stdout;
            Ok(wide.lines().any(|l| {
                l.starts_with("batch-on-solo")
                    && l.contains("False")
                    && l.contains("InsufficientResources")
            }))
        },
    )?;
    let message = k
        .run(&[
            "get",
            "reservation",
            "batch-on-solo",
            "-o",
            "jsonpath={.status.conditions[0].message}",
        ])?
        .ok()?;
    assert!(message.contains("reserves nothing"), "{message}");
    Ok(())
}
