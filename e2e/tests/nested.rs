//! Myriad on Corral: a cluster inside the cluster. The agents of an inner
//! Corral cluster (its own `corral server`) run as tasks of an outer one
//! (`corral up` offering host processes), from
//! `more-examples/nested-cluster.yaml` as written: each joins the inner
//! cluster with its bootstrap token (a Secret the outer node reads as the
//! task starts), advertises less than its task holds, and runs the inner
//! cluster's jobs. Scaling the outer job down removes an inner node — its
//! inner task is found lost and its replacement waits — and scaling it up
//! again adds one, where the replacement runs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use corral_e2e::{Corral, Kubectl, Server, corral_bin, examples, more_examples, s, wait_every};
use serde_json::Value;

/// Agents joining, and a lost inner node noticed (10 s leases).
const WAIT: Duration = Duration::from_secs(120);
const EVERY: Duration = Duration::from_millis(500);

/// The inner cluster's job: two instances of 1 cpu, one per inner node
/// (each advertises 1.5).
const INNER_JOB: &str = "apiVersion: corral.dev/v1alpha1
kind: Role
metadata: {name: team}
spec: {weight: 1}
---
apiVersion: corral.dev/v1alpha1
kind: Job
metadata: {name: inner-web, namespace: default}
spec:
  role: team
  environment: devel
  kind: service
  instances: 2
  tier: preemptible
  resources: {cpus: 1, memory: 128Mi, disk: 64Mi}
  container:
    image: busybox
    runtime: process
    command: [sh, -c, 'echo serving on $CORRAL_TASK; exec sleep 600']
";

/// `(name, phase, node)` of every task of `job`.
fn tasks(k: &Kubectl, ns: &str, job: &str) -> Result<Vec<(String, String, String)>> {
    let out = k
        .run(&[
            "-n",
            ns,
            "get",
            "tasks.corral.dev",
            "-l",
            &format!("corral.dev/job={job}"),
            "-o",
            "json",
        ])?
        .ok()?;
    let list: Value = serde_json::from_str(&out)?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let field = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                field(&t["metadata"]["name"]),
                field(&t["status"]["phase"]),
                field(&t["spec"]["nodeName"]),
            )
        })
        .collect())
}

/// The inner cluster's Ready nodes, with their advertised cpus.
fn ready_nodes(k: &Kubectl) -> Result<Vec<(String, String)>> {
    let out = k.run(&["get", "nodes.corral.dev", "-o", "json"])?.ok()?;
    let list: Value = serde_json::from_str(&out)?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .map(|n| {
            (
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                match &n["status"]["total"]["cpus"] {
                    Value::String(q) => q.clone(),
                    other => other.to_string(),
                },
            )
        })
        .collect())
}

fn running(list: &[(String, String, String)]) -> Vec<&(String, String, String)> {
    list.iter().filter(|(_, p, _)| p == "RUNNING").collect()
}

#[test]
fn a_nested_cluster_runs_as_tasks_and_scales_with_its_job() -> Result<()> {
    // The inner control plane, with a bootstrap token for its agents.
    let inner_home = tempfile::tempdir()?;
    let tokens = inner_home.path().join("bootstrap.csv");
    std::fs::write(
        &tokens,
        "nested-bootstrap-token,system:bootstrap:myriad,myriad,\"system:bootstrappers\"\n",
    )?;
    let inner = Server::start_in(inner_home.path(), &["--token-file", &s(&tokens)])?;
    let admin_kc = std::fs::read_to_string(&inner.kubeconfig)?;
    let token_line = admin_kc
        .lines()
        .find(|l| l.trim_start().starts_with("token:"))
        .context("the inner admin kubeconfig's token")?;
    let bootstrap = inner_home.path().join("bootstrap.kubeconfig");
    std::fs::write(
        &bootstrap,
        admin_kc.replace(token_line, "    token: nested-bootstrap-token"),
    )?;

    // The outer cluster: one machine offering host processes.
    let outer_home = tempfile::tempdir()?;
    let outer = Server::up_in(
        outer_home.path(),
        &[
            "--node-name",
            "outer-box",
            "--runtimes",
            "process",
            "--resources",
            "cpus=5,memory=8Gi,disk=20Gi",
        ],
        &[],
    )?;
    let (oc, ok) = (Corral::new(&outer), Kubectl::new(&outer)?);
    for f in ["00-namespaces.yaml", "01-teams.yaml"] {
        oc.run(&["apply", "-f", &s(&examples().join(f))])?.ok()?;
    }
    ok.run(&[
        "-n",
        "analytics",
        "create",
        "secret",
        "generic",
        "inner-cluster",
        &format!("--from-file=bootstrap.kubeconfig={}", s(&bootstrap)),
    ])?
    .ok()?;
    let manifest = std::fs::read_to_string(more_examples().join("nested-cluster.yaml"))?.replace(
        "exec corral agent",
        &format!("exec {} agent", s(&corral_bin()?)),
    );
    let applied = Instant::now();
    oc.run_stdin(&["apply", "-f", "-"], &manifest)?.ok()?;

    let ik = Kubectl::new(&inner)?;
    wait_every("two inner nodes to join", WAIT, EVERY, || {
        Ok(ready_nodes(&ik)?.len() == 2)
    })
    .with_context(|| outer.log())?;
    let joined = applied.elapsed();
    for (name, cpus) in ready_nodes(&ik)? {
        assert!(name.starts_with("nested-nested-agents-"), "{name}");
        // The talk's rule: the agent advertises less than its task holds.
        assert!(
            cpus == "1.5" || cpus == "1500m",
            "{name} advertises 1.5 of its task's 2 cpus, not {cpus}"
        );
    }
    let outer_tasks = tasks(&ok, "analytics", "nested-agents")?;
    assert_eq!(running(&outer_tasks).len(), 2, "{outer_tasks:?}");

    // The inner cluster runs its own job, one instance per inner node.
    let ic = Corral::new(&inner);
    ic.run_stdin(&["apply", "-f", "-"], INNER_JOB)?.ok()?;
    wait_every(
        "the inner job to run on both inner nodes",
        WAIT,
        EVERY,
        || {
            let list = tasks(&ik, "default", "inner-web")?;
            let r = running(&list);
            Ok(r.len() == 2 && r[0].2 != r[1].2)
        },
    )?;
    let logs = ic.run(&["-n", "default", "logs", "inner-web-0-0"])?.ok()?;
    assert!(logs.contains("serving on default/inner-web-0-0"), "{logs}");

    // Scaling the outer job down removes an inner node: its inner task is
    // found lost, and its replacement waits (1 cpu does not fit in the
    // half the other node has left).
    let down = Instant::now();
    ok.run(&[
        "-n",
        "analytics",
        "scale",
        "jobs.corral.dev",
        "nested-agents",
        "--replicas",
        "1",
    ])?
    .ok()?;
    wait_every(
        "an inner node to be lost with its task",
        WAIT,
        EVERY,
        || {
            let list = tasks(&ik, "default", "inner-web")?;
            let lost = list.iter().any(|(_, p, _)| p == "LOST");
            let pending = list.iter().any(|(_, p, _)| p == "PENDING");
            Ok(ready_nodes(&ik)?.len() == 1 && lost && pending)
        },
    )
    .with_context(|| inner.log())?;
    let lost = down.elapsed();
    let why = ic
        .run(&["-n", "default", "get", "tasks", "--no-headers"])?
        .ok()?;
    assert_eq!(
        running(&tasks(&ik, "default", "inner-web")?).len(),
        1,
        "{why}"
    );

    // Scaling it up again adds a node, where the replacement runs.
    let up = Instant::now();
    ok.run(&[
        "-n",
        "analytics",
        "scale",
        "jobs.corral.dev",
        "nested-agents",
        "--replicas",
        "2",
    ])?
    .ok()?;
    wait_every(
        "the replacement to run on the new inner node",
        WAIT,
        EVERY,
        || {
            let list = tasks(&ik, "default", "inner-web")?;
            let r = running(&list);
            Ok(ready_nodes(&ik)?.len() == 2 && r.len() == 2 && r[0].2 != r[1].2)
        },
    )
    .with_context(|| inner.log())?;
    eprintln!(
        "nested timings: two inner nodes joined {:.1}s after the apply; scaled down, the inner task was lost in {:.1}s; scaled up, its replacement ran in {:.1}s",
        joined.as_secs_f64(),
        lost.as_secs_f64(),
        up.elapsed().as_secs_f64()
    );
    oc.run(&[
        "-n",
        "analytics",
        "job",
        "kill",
        "nested-agents",
        "--wait",
        "--timeout",
        "60",
    ])?
    .ok()?;
    Ok(())
}
