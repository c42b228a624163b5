//! The talk, end to end: `corral up` (API server, controllers and one agent
//! in one process) over a private containerd with the test image, driven
//! by the `corral` verbs and stock kubectl.
//!
//! One scenario, in the order a new user meets it: teams' Roles, Quotas and
//! Reservations; the Spark-like ad-hoc job from the talk runs to FINISHED
//! with the talk's event sequence; a service task that dies is replaced; a
//! production job preempts a non-production one and `corral why` names the
//! preemptor; a cron job fires; `corral top` shows allocated against total
//! and used against allocated; `corral job restart|kill` carry out their
//! requests; Ctrl-C stops everything and the next `corral up` resumes the
//! same cluster with the running task re-adopted.

use std::time::Duration;

use anyhow::{Context, Result};
use corral_e2e::{Containerd, Corral, Kubectl, Server, TEST_IMAGE, examples, s, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

struct Up {
    server: Option<Server>,
    home: tempfile::TempDir,
    containerd: Containerd,
}

impl Up {
    fn start(&mut self) -> Result<()> {
        let address = self.containerd.address.display().to_string();
        let server = Server::up_in(
            self.home.path(),
            &[
                "--node-name",
                "box",
                "--resources",
                "cpus=4,memory=16Gi,disk=50Gi",
                "--containerd-address",
                &address,
            ],
            &[
                (
                    "CORRAL_AGENT_CONTAINERD_NAMESPACE",
                    &self.containerd.namespace,
                ),
                ("CORRAL_LOG", "info"),
            ],
        )?;
        self.server = Some(server);
        Ok(())
    }

    fn server(&self) -> Result<&Server> {
        self.server.as_ref().context("corral up is not running")
    }

    fn corral(&self) -> Result<Corral> {
        Ok(Corral::new(self.server()?))
    }

    fn log(&self) -> String {
        self.server
            .as_ref()
            .map(Server::log)
            .unwrap_or_default()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn task(&self, ns: &str, name: &str) -> Result<Option<Value>> {
        let r = self
            .corral()?
            .run(&["-n", ns, "get", "task", name, "-o", "json"])?;
        if r.code != 0 {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&r.stdout)?))
    }

    fn phase(&self, ns: &str, name: &str) -> Result<String> {
        Ok(self
            .task(ns, name)?
            .and_then(|t| t["status"]["phase"].as_str().map(str::to_owned))
            .unwrap_or_default())
    }

    fn wait_phase(&self, ns: &str, name: &str, phase: &str) -> Result<Value> {
        wait_for(&format!("{ns}/{name} to be {phase}"), WAIT, || {
            Ok(self.phase(ns, name)? == phase)
        })
        .with_context(|| self.log())?;
        self.task(ns, name)?.context("task vanished")
    }

    fn apply(&self, yaml: &str) -> Result<String> {
        self.corral()?.run_stdin(&["apply", "-f", "-"], yaml)?.ok()
    }
}

fn phases(task: &Value) -> Vec<String> {
    task["status"]["taskEvents"]
        .as_array()
        .map(|evs| {
            evs.iter()
                .map(|e| e["status"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn job(
    name: &str,
    ns: &str,
    role: &str,
    kind: &str,
    tier: &str,
    cpus: u32,
    script: &str,
) -> String {
    format!(
        r#"apiVersion: corral.dev/v1alpha1
kind: Job
metadata: {{name: {name}, namespace: {ns}}}
spec:
  role: {role}
  environment: prod
  kind: {kind}
  instances: 1
  tier: {tier}
  resources: {{cpus: {cpus}, memory: 64Mi, disk: 10Mi}}
  container:
    image: {TEST_IMAGE}
    command: [sh, -c, {script:?}]
    killGracePeriodSeconds: 1
"#
    )
}

#[test]
fn the_talk_end_to_end_on_corral_up() -> Result<()> {
    let containerd = Containerd::start("corral-up")?;
    // The talk's image name, served by the test image.
    containerd.ctr(&[
        "images",
        "tag",
        TEST_IMAGE,
        "docker.io/library/sparkie:image",
    ])?;
    let mut up = Up {
        server: None,
        home: tempfile::tempdir()?,
        containerd,
    };
    up.start()?;
    wait_for("corral up to say how to use it", WAIT, || {
        Ok(up.server()?.log().contains("export KUBECONFIG="))
    })
    .with_context(|| up.log())?;
    let c = up.corral()?;
    wait_for("the node to be Ready", WAIT, || {
        Ok(c.run(&["get", "nodes", "box", "--no-headers"])?
            .stdout
            .contains("True"))
    })
    .with_context(|| up.log())?;

    // Teams: roles, quotas and reservations, then the talk's ad-hoc job.
    let applied = c
        .run(&[
            "apply",
            "-f",
            &s(&examples().join("00-namespaces.yaml")),
            "-f",
            &s(&examples().join("01-teams.yaml")),
        ])?
        .ok()?;
    assert!(
        applied.contains("quota.corral.dev/analytics serverside-applied"),
        "{applied}"
    );
    c.run(&["apply", "-f", &s(&examples().join("talk-adhoc-job.yaml"))])?
        .ok()?;
    // A cron job firing every minute, applied now so its tick comes during the rest.
    up.apply(
        &job(
            "every-minute",
            "analytics",
            "analytics",
            "cron",
            "preemptible",
            1,
            "echo tick",
        )
        .replace(
            "  container:",
            "  cron: {schedule: \"* * * * *\"}\n  container:",
        ),
    )?;

    let sparkie = up.wait_phase("analytics", "sparkie-0-0", "FINISHED")?;
    assert_eq!(
        phases(&sparkie),
        ["PENDING", "ASSIGNED", "STARTING", "RUNNING", "FINISHED"],
        "the talk's event sequence: {sparkie}"
    );
    let described = c
        .run(&["-n", "analytics", "describe", "task", "sparkie-0-0"])?
        .ok()?;
    for needle in [
        "Phase:        FINISHED",
        "Exit code:    0",
        "PENDING",
        "assigned to node box",
        "agent/box",
    ] {
        assert!(described.contains(needle), "{needle} in:\n{described}");
    }
    // Its output, through the API server from wherever it ran.
    let out = c.run(&["-n", "analytics", "logs", "sparkie-0-0"])?.ok()?;
    assert_eq!(out, "running\n");
    // Followed while it runs, until it ends.
    up.apply(&job(
        "ticker",
        "analytics",
        "analytics",
        "adhoc",
        "preemptible",
        1,
        "for i in 1 2 3; do echo tick $i; sleep 1; done",
    ))?;
    // Following works while it runs and after it ended alike.
    wait_for("the ticker to start", WAIT, || {
        Ok(matches!(
            up.phase("analytics", "ticker-0-0")?.as_str(),
            "RUNNING" | "FINISHED"
        ))
    })?;
    let followed = c
        .run(&["-n", "analytics", "logs", "-f", "ticker-0-0"])?
        .ok()?;
    assert_eq!(
        followed, "tick 1\ntick 2\ntick 3\n",
        "-f ends when the task does"
    );
    let jobs = c.run(&["get", "jobs", "-A"])?.ok()?;
    assert!(
        jobs.lines()
            .any(|l| l.contains("sparkie") && l.contains("Succeeded")),
        "{jobs}"
    );

    // A service task that dies is replaced by a new task of the same instance.
    up.apply(&job(
        "web",
        "web",
        "web",
        "service",
        "preferred",
        1,
        "echo serving; while true; do sleep 0.2; done",
    ))?;
    up.wait_phase("web", "web-0-0", "RUNNING")?;
    let containers = up.containerd.ctr(&["tasks", "ls"])?;
    let id = containers
        .lines()
        .find(|l| l.contains("web-0-0"))
        .and_then(|l| l.split_whitespace().next())
        .with_context(|| format!("web-0-0 in {containers}"))?
        .to_owned();
    up.containerd
        .ctr(&["tasks", "kill", "-s", "SIGKILL", &id])?;
    let dead = up.wait_phase("web", "web-0-0", "FAILED")?;
    assert_eq!(dead["status"]["exitCode"], 137, "{dead}");
    up.wait_phase("web", "web-0-1", "RUNNING")?;

    // Fill the node with preemptible work, then a production job preempts it.
    up.apply(&job(
        "batch",
        "analytics",
        "analytics",
        "service",
        "preemptible",
        2,
        "while true; do sleep 0.2; done",
    ))?;
    up.wait_phase("analytics", "batch-0-0", "RUNNING")?;
    let top = c.run(&["top", "nodes"])?.ok()?;
    // web 1 + batch 2 of 4 cpus (4 while a cron run holds its cpu).
    assert!(
        top.lines()
            .any(|l| l.starts_with("box") && (l.contains("3/4 (75%)") || l.contains("4/4 (100%)"))),
        "{top}"
    );
    up.apply(&job(
        "api",
        "web",
        "web",
        "service",
        "preferred",
        2,
        "while true; do sleep 0.2; done",
    ))?;
    let victim = up.wait_phase("analytics", "batch-0-0", "KILLED")?;
    let steps = phases(&victim);
    assert!(
        steps.ends_with(&["PREEMPTING".to_owned(), "KILLED".to_owned()]),
        "{steps:?}"
    );
    let why = c.run(&["-n", "analytics", "why", "batch-0-0"])?.ok()?;
    assert!(why.contains("it was preempted"), "{why}");
    assert!(why.contains("web/api-0-0"), "the preemptor is named: {why}");
    up.wait_phase("web", "api-0-0", "RUNNING")?;

    // The cron job's first tick.
    wait_for("a cron run", Duration::from_secs(75), || {
        Ok(c.run(&[
            "-n",
            "analytics",
            "get",
            "tasks",
            "-l",
            "corral.dev/job=every-minute",
            "-o",
            "name",
        ])?
        .stdout
        .lines()
        .count()
            >= 1)
    })
    .with_context(|| up.log())?;

    // Used against allocated, once the agent has sampled its containers.
    wait_for(
        "measured usage in corral top tasks",
        Duration::from_secs(40),
        || {
            let t = c.run(&["top", "tasks", "-A"])?.stdout;
            Ok(t.lines().any(|l| {
                l.contains("api-0-0")
                    && l.split_whitespace()
                        .any(|cell| cell.ends_with("/64Mi") && !cell.starts_with("0/"))
            }))
        },
    )?;
    let roles = c.run(&["top", "roles"])?.ok()?;
    assert!(
        roles.contains("web") && roles.contains("/16 ("),
        "web against its 16-cpu limit:\n{roles}"
    );
    let events = c.run(&["events", "-A", "--for", "job/web"])?.ok()?;
    assert!(events.contains("task/web-0-1"), "{events}");

    // kubectl sees the same cluster.
    let k = Kubectl::new(up.server()?)?;
    let tasks = k.run(&["get", "tasks", "-A"])?.ok()?;
    assert!(
        tasks.contains("api-0-0") && tasks.contains("RUNNING"),
        "{tasks}"
    );

    // Killing jobs: the cron job starts no more runs, the batch job's tasks end.
    c.run(&["-n", "analytics", "job", "kill", "every-minute"])?
        .ok()?;
    let killed = c
        .run(&[
            "-n",
            "analytics",
            "job",
            "kill",
            "batch",
            "--wait",
            "--timeout",
            "60",
        ])?
        .ok()?;
    assert!(killed.contains("kill done"), "{killed}");
    let batch = c
        .run(&["-n", "analytics", "get", "job", "batch", "--no-headers"])?
        .ok()?;
    assert!(batch.contains("Killed"), "{batch}");

    // Restart the web service: its task is replaced by a fresh one.
    c.run(&[
        "-n",
        "web",
        "job",
        "restart",
        "web",
        "--wait",
        "--timeout",
        "60",
    ])?
    .ok()?;
    let old = up.task("web", "web-0-1")?.context("web-0-1")?;
    assert_eq!(
        phases(&old)
            .iter()
            .rev()
            .take(2)
            .cloned()
            .collect::<Vec<_>>(),
        ["KILLED", "RESTARTING"]
    );
    up.wait_phase("web", "web-0-2", "RUNNING")?;

    // Ctrl-C, then `corral up` again: same cluster, the running task re-adopted.
    let status = up.server.take().context("server")?.interrupt()?;
    assert!(
        status.success(),
        "corral up stops cleanly on Ctrl-C: {status}"
    );
    let before = std::fs::read_to_string(up.home.path().join("server.log"))?.len();
    up.start()?;
    wait_for("the agent to re-adopt", WAIT, || {
        Ok(up
            .server()?
            .log()
            .get(before..)
            .unwrap_or_default()
            .contains("re-adopted tasks"))
    })
    .with_context(|| up.log())?;
    assert_eq!(up.phase("web", "api-0-0")?, "RUNNING");
    assert!(
        up.task("web", "api-0-1")?.is_none(),
        "no replacement after a restart"
    );

    // Killing the last job ends its task and the job.
    c.run(&[
        "-n",
        "web",
        "job",
        "kill",
        "api",
        "--wait",
        "--timeout",
        "60",
    ])?
    .ok()?;
    assert_eq!(up.phase("web", "api-0-0")?, "KILLED");
    let api = c
        .run(&["-n", "web", "get", "job", "api", "--no-headers"])?
        .ok()?;
    assert!(api.contains("Killed"), "{api}");
    Ok(())
}

#[test]
fn corral_up_keeps_its_cluster_in_etcd_when_asked() -> Result<()> {
    let etcd = corral_store::testing::EtcdServer::start()?;
    let store = format!("etcd://{}", etcd.endpoint().trim_start_matches("http://"));
    let home = tempfile::tempdir()?;
    let start = || {
        Server::up_in(
            home.path(),
            &[
                "--store",
                &store,
                "--node-name",
                "etcd-box",
                "--runtimes",
                "process",
                "--resources",
                "cpus=2,memory=2Gi,disk=1Gi",
            ],
            &[],
        )
    };
    let server = start()?;
    let c = Corral::new(&server);
    c.run_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: corral.dev/v1alpha1\nkind: Role\nmetadata: {{name: ops}}\nspec: {{weight: 1}}\n---\n{}",
            job("sleeper", "default", "ops", "service", "preemptible", 1, "sleep 120")
        ),
    )?
    .ok()?;
    wait_for("the sleeper to run", WAIT, || {
        Ok(c.run(&["get", "task", "sleeper-0-0", "--no-headers"])?
            .stdout
            .contains("RUNNING"))
    })
    .with_context(|| server.log())?;
    // The embedded store was not used: everything is in etcd.
    assert!(!home.path().join("store.db").exists());
    assert!(server.interrupt()?.success());
    let server = start()?;
    let c = Corral::new(&server);
    let jobs = c.run(&["get", "jobs", "--no-headers"])?.ok()?;
    assert!(
        jobs.contains("sleeper"),
        "the cluster is back from etcd: {jobs}"
    );
    c.run(&["job", "kill", "sleeper", "--wait", "--timeout", "60"])?
        .ok()?;
    Ok(())
}
