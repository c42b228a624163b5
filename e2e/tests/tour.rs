//! README's five-minute tour, followed literally on `corral up` as a
//! newcomer's 2-core laptop without containerd would run it (the node offers
//! 2 CPUs and 8 GiB; tasks run as host processes), asserting what the README
//! says you will see, and ending with `corral down`: nothing left running.

use std::time::Duration;

use anyhow::{Context, Result};
use corral_e2e::{Corral, Kubectl, Run, Server, examples, s, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
/// No containerd answers here: `corral up` falls back to processes.
const NO_CONTAINERD: &str = "/nonexistent/containerd.sock";

fn phase(c: &Corral, ns: &str, name: &str) -> Result<String> {
    let r = c.run(&["-n", ns, "get", "task", name, "-o", "json"])?;
    if r.code != 0 {
        return Ok(String::new());
    }
    let t: Value = serde_json::from_str(&r.stdout)?;
    Ok(t["status"]["phase"].as_str().unwrap_or_default().to_owned())
}

fn wait_phase(c: &Corral, up: &Server, ns: &str, name: &str, want: &str) -> Result<()> {
    wait_for(&format!("{ns}/{name} to be {want}"), WAIT, || {
        Ok(phase(c, ns, name)? == want)
    })
    .with_context(|| {
        let task = c
            .run(&["-n", ns, "get", "task", name, "-o", "yaml"])
            .map(|r| r.stdout)
            .unwrap_or_default();
        let tasks = c
            .run(&["get", "tasks", "-A"])
            .map(|r| r.stdout)
            .unwrap_or_default();
        format!("{}\n{task}\n{tasks}", up.log())
    })
}

fn ok(r: Run, what: &str) -> Result<String> {
    r.ok().with_context(|| what.to_owned())
}

/// Pids of the task processes `corral up` started (the `pid` files the
/// agent keeps beside their sandboxes).
fn task_pids(home: &std::path::Path) -> Result<Vec<i32>> {
    let mut pids = Vec::new();
    for node in std::fs::read_dir(home.join("agent"))? {
        let tasks = node?
            .path()
            .join("sandboxes")
            .join(corral_node_agent::runtime::TASK_FILES);
        let Ok(tasks) = std::fs::read_dir(tasks) else {
            continue;
        };
        for task in tasks {
            // `PID STARTTIME`
            if let Ok(text) = std::fs::read_to_string(task?.path().join("pid"))
                && let Some(pid) = text.split_whitespace().next()
            {
                pids.push(pid.parse()?);
            }
        }
    }
    Ok(pids)
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

#[test]
fn the_five_minute_tour_works_as_written() -> Result<()> {
    let home = tempfile::tempdir()?;
    let mut up = Server::up_in(
        home.path(),
        &[
            "--resources",
            "cpus=2,memory=8Gi,disk=20Gi",
            "--containerd-address",
            NO_CONTAINERD,
        ],
        &[],
    )?;
    let c = Corral::new(&up);
    // What holds a secret is its owner's alone: the admin kubeconfig (a
    // token), the keys, and the store (every Secret).
    for f in [
        "kubeconfig",
        "store.db",
        "pki/admin.key",
        "pki/server.key",
        "pki/tokens.csv",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(home.path().join(f))?.permissions().mode() & 0o777;
        assert_eq!(m, 0o600, "{f} is {m:o}");
    }

    let applied = ok(c.run(&["apply", "-f", &s(&examples())])?, "apply")?;
    for obj in [
        "namespace/analytics",
        "job.corral.dev/sparkie",
        "job.corral.dev/frontend",
        "job.corral.dev/spark-executors",
        "job.corral.dev/nightly-report",
        "quota.corral.dev/web",
    ] {
        assert!(applied.contains(obj), "{applied}");
    }
    let jobs = ok(c.run(&["get", "jobs", "-A"])?, "get jobs")?;
    for j in ["sparkie", "frontend", "spark-executors", "nightly-report"] {
        assert!(jobs.contains(j), "{jobs}");
    }

    // The talk's job runs for five seconds and finishes; one frontend and one
    // executor run (one per machine), the others wait.
    wait_phase(&c, &up, "analytics", "sparkie-0-0", "FINISHED")?;
    wait_phase(&c, &up, "web", "frontend-0-0", "RUNNING")?;
    wait_phase(&c, &up, "analytics", "spark-executors-0-0", "RUNNING")?;
    let tasks = ok(c.run(&["get", "tasks", "-A"])?, "get tasks")?;
    for pending in [
        "frontend-1-0",
        "frontend-2-0",
        "spark-executors-1-0",
        "spark-executors-2-0",
    ] {
        let line = tasks
            .lines()
            .find(|l| l.contains(pending))
            .with_context(|| format!("{pending} in {tasks}"))?;
        assert!(line.contains("PENDING"), "{line}");
    }
    assert!(
        !tasks.contains("FAILED") && !tasks.contains("nightly-report"),
        "nothing fails; the nightly report waits for 02:00: {tasks}"
    );

    let describe = ok(
        c.run(&["-n", "analytics", "describe", "task", "sparkie-0-0"])?,
        "describe",
    )?;
    for phase in ["PENDING", "ASSIGNED", "STARTING", "RUNNING", "FINISHED"] {
        assert!(describe.contains(phase), "{describe}");
    }
    let logs = ok(c.run(&["-n", "analytics", "logs", "sparkie-0-0"])?, "logs")?;
    assert_eq!(logs.trim(), "running");
    let why = ok(c.run(&["-n", "web", "why", "frontend-1-0"])?, "why")?;
    assert!(why.contains("host limit"), "{why}");
    let top = ok(c.run(&["top", "nodes"])?, "top nodes")?;
    assert!(
        top.contains("(cluster)") && top.contains("1/2 (50%)"),
        "{top}"
    );
    let roles = ok(c.run(&["top", "roles"])?, "top roles")?;
    assert!(
        roles.contains("analytics") && roles.contains("web"),
        "{roles}"
    );
    let events = ok(c.run(&["events", "-A"])?, "events")?;
    assert!(
        events
            .lines()
            .any(|l| l.contains("task/sparkie-0-0") && l.contains("FINISHED")),
        "{events}"
    );
    let restart = ok(
        c.run(&["-n", "web", "job", "restart", "frontend", "--wait"])?,
        "restart",
    )?;
    assert!(restart.contains("restart done"), "{restart}");
    ok(
        c.run(&["-n", "analytics", "job", "kill", "spark-executors"])?,
        "kill",
    )?;

    let k = Kubectl::new(&up)?;
    let all = ok(k.run(&["get", "corral", "-A"])?, "kubectl get corral")?;
    assert!(all.contains("job.corral.dev/frontend"), "{all}");
    ok(
        k.run(&["-n", "analytics", "get", "tasks", "-o", "wide"])?,
        "kubectl get tasks",
    )?;
    let scaled = ok(
        k.run(&[
            "-n",
            "web",
            "scale",
            "job.corral.dev/frontend",
            "--replicas=5",
        ])?,
        "kubectl scale",
    )?;
    assert!(scaled.contains("scaled"), "{scaled}");
    wait_phase(&c, &up, "analytics", "spark-executors-0-0", "KILLED")?;

    // `corral down`: corral up and every task it started stop.
    let pids = task_pids(home.path())?;
    assert!(
        pids.iter().any(|p| alive(*p)),
        "a frontend task runs: {pids:?}"
    );
    let down = corral_e2e::corral_bin()?;
    let out = std::process::Command::new(down)
        .args(["down", "--home"])
        .arg(home.path())
        .args(["--containerd-address", NO_CONTAINERD])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("stopped corral up"), "{text}");
    let left: Vec<i32> = pids.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "still running: {left:?}\n{text}");
    assert!(
        up.wait_exit(Duration::from_secs(5))?.is_some(),
        "corral up still runs after corral down"
    );
    Ok(())
}
