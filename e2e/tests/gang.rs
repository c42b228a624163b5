//! Gang scheduling with the `corral` binary: a real `corral server` and
//! `corral agent`s simulating nodes. A gang of 3 with room for 2 binds none
//! and says why; when a third node joins, all 3 are bound.

use std::time::Duration;

use anyhow::{Context, Result};
use corral_e2e::{Agent, Corral, Kubectl, Server, wait_for};
use serde_json::Value;

const JOB: &str = "apiVersion: corral.dev/v1alpha1
kind: Job
metadata: {name: spark, namespace: default}
spec:
  role: analytics
  environment: prod
  kind: adhoc
  instances: 3
  gang: {minInstances: 3}
  resources: {cpus: 1, memory: 256Mi}
  container: {image: busybox}
";

/// (tasks, bound).
fn tasks(k: &Kubectl) -> Result<(usize, usize)> {
    let out = k
        .run(&["get", "tasks", "-n", "default", "-o", "json"])?
        .ok()?;
    let list: Value = serde_json::from_str(&out)?;
    let items = list["items"].as_array().context("items")?;
    let bound = items
        .iter()
        .filter(|t| {
            t["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
        })
        .count();
    Ok((items.len(), bound))
}

#[test]
fn a_gang_binds_none_until_all_of_it_fits() -> Result<()> {
    let server = Server::start()?;
    let k = Kubectl::new(&server)?;
    let c = Corral::new(&server);
    k.corral_role("analytics")?;
    let _two = Agent::simulated(&server, "pair", 2, "cpus=1,memory=1Gi")?;
    wait_for("two nodes", Duration::from_secs(60), || {
        Ok(k.run(&["get", "nodes.corral.dev", "-o", "name"])?
            .ok()?
            .lines()
            .count()
            == 2)
    })?;
    k.run_stdin(&["apply", "-f", "-"], JOB)?.ok()?;
    wait_for(
        "three tasks, each saying its gang is incomplete",
        Duration::from_secs(60),
        || {
            let (n, bound) = tasks(&k)?;
            anyhow::ensure!(bound == 0, "{bound} of the gang bound while only 2 fit");
            let why = c.run(&["why", "spark-0-0"])?.stdout;
            Ok(n == 3 && why.contains("its gang needs 3 instance(s) bound at once"))
        },
    )?;
    let _third = Agent::simulated(&server, "third", 1, "cpus=1,memory=1Gi")?;
    wait_for("all three bound at once", Duration::from_secs(60), || {
        Ok(tasks(&k)?.1 == 3)
    })?;
    Ok(())
}
