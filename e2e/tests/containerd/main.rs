//! `corral server` + `corral agent` running real tasks in a private
//! containerd (started by `scripts/containerd.sh`, with the busybox test
//! image), and in plain processes when containerd is gone.
//!
//! Each test has its own containerd, containerd namespace and task names, so
//! cgroup paths never collide between tests running side by side.
//! `isolation.rs`: what a task cannot do to its node. `services.rs`: ports,
//! health checks and endpoints. `images.rs`: images from a registry or an
//! image directory.

use std::time::Duration;

use anyhow::{Context, Result};
use corral_e2e::{Agent, Containerd, Kubectl, Server, TEST_IMAGE, wait_for};
use serde_json::Value;

mod images;
mod isolation;
mod services;

const WAIT: Duration = Duration::from_secs(60);

struct Cluster {
    server: Server,
    /// The server's home and address, kept for a server started again.
    home: tempfile::TempDir,
    listen: String,
    k: Kubectl,
    containerd: Containerd,
    agent: Option<Agent>,
    node: String,
    /// The host ports its agent offers (`ports=[…]`), when not the default:
    /// tests running side by side share this machine's ports.
    ports: Option<String>,
}

impl Cluster {
    /// A server, a containerd and an agent named `node` with `runtimes`.
    fn start(node: &str, runtimes: &str) -> Result<Self> {
        Self::start_with(node, runtimes, &[])
    }

    /// The same, its agent offering host ports `ports` (`31100-31199`).
    fn start_offering(node: &str, runtimes: &str, ports: &str) -> Result<Self> {
        Self::start_full(node, runtimes, &[], Some(ports.to_owned()))
    }

    /// The same, with extra agent flags.
    fn start_with(node: &str, runtimes: &str, agent_flags: &[&str]) -> Result<Self> {
        Self::start_full(node, runtimes, agent_flags, None)
    }

    fn start_full(
        node: &str,
        runtimes: &str,
        agent_flags: &[&str],
        ports: Option<String>,
    ) -> Result<Self> {
        let containerd = Containerd::start(&format!("corral-{node}"))?;
        let home = tempfile::tempdir()?;
        let listen = corral_e2e::free_address()?;
        let server = Server::start_at(home.path(), &listen, &[])?;
        let k = Kubectl::new(&server)?;
        k.run_stdin(
            &["apply", "-f", "-"],
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: analytics}\n---\napiVersion: corral.dev/v1alpha1\nkind: Role\nmetadata: {name: analytics}\nspec: {weight: 1}\n",
        )?
        .ok()?;
        let mut c = Cluster {
            server,
            home,
            listen,
            k,
            containerd,
            agent: None,
            node: node.to_owned(),
            ports,
        };
        c.start_agent(runtimes, agent_flags)?;
        let node = node.to_owned();
        wait_for("the node to register", WAIT, || {
            Ok(c.k.run(&["get", "node.corral.dev", &node])?.code == 0)
        })?;
        Ok(c)
    }

    fn start_agent(&mut self, runtimes: &str, extra: &[&str]) -> Result<()> {
        let address = self.containerd.address.display().to_string();
        let resources = match &self.ports {
            Some(range) => format!("cpus=2,memory=2Gi,disk=10Gi,ports=[{range}]"),
            None => "cpus=2,memory=2Gi,disk=10Gi".to_owned(),
        };
        let mut flags = vec![
            "--node-name",
            &self.node,
            "--runtimes",
            runtimes,
            "--resources",
            &resources,
            "--containerd-address",
            &address,
            "--containerd-namespace",
            &self.containerd.namespace,
        ];
        flags.extend_from_slice(extra);
        let agent = Agent::start(&self.server, &format!("agent-{}", self.node), &flags)?;
        self.agent = Some(agent);
        Ok(())
    }

    /// Applies an ad-hoc or service job running `script` in the test image.
    fn job(&self, name: &str, kind: &str, memory: &str, script: &str, extra: &str) -> Result<()> {
        self.job_with_image(TEST_IMAGE, name, kind, memory, script, extra)
    }

    /// An ad-hoc job `hog` that needs more than its 16Mi of memory.
    fn oom_hog(&self) -> Result<()> {
        self.job(
            "hog",
            "adhoc",
            "16Mi",
            "dd if=/dev/zero of=/dev/null bs=64M count=1",
            "",
        )
    }

    /// The same, in `image`.
    fn job_with_image(
        &self,
        image: &str,
        name: &str,
        kind: &str,
        memory: &str,
        script: &str,
        extra: &str,
    ) -> Result<()> {
        let job = format!(
            r#"apiVersion: corral.dev/v1alpha1
kind: Job
metadata: {{name: {name}, namespace: analytics}}
spec:
  role: analytics
  environment: devel
  kind: {kind}
  instances: 1
  maxTaskFailures: 1
  resources: {{cpus: 0.5, memory: {memory}, disk: 10Mi}}
  container:
    image: {image}
    command: [sh, -c, {script:?}]{extra}
"#
        );
        self.k.run_stdin(&["apply", "-f", "-"], &job)?.ok()?;
        Ok(())
    }

    fn task(&self, name: &str) -> Result<Option<Value>> {
        let r = self
            .k
            .run(&["-n", "analytics", "get", "task", name, "-o", "json"])?;
        if r.code != 0 {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&r.stdout)?))
    }

    fn phase(&self, name: &str) -> Result<String> {
        Ok(self
            .task(name)?
            .and_then(|t| t["status"]["phase"].as_str().map(str::to_owned))
            .unwrap_or_default())
    }

    fn wait_phase(&self, name: &str, phase: &str) -> Result<Value> {
        wait_for(&format!("{name} to be {phase}"), WAIT, || {
            Ok(self.phase(name)? == phase)
        })
        .with_context(|| self.logs())?;
        self.task(name)?.context("task vanished")
    }

    /// What the task wrote to `stream`, as the agent keeps it (outside the
    /// task's sandbox).
    fn output(&self, task: &str, stream: &str) -> String {
        let p = corral_node_agent::runtime::task_files_dir(
            &self
                .server
                .home
                .join("agent")
                .join(&self.node)
                .join("sandboxes"),
            &format!("analytics/{task}"),
        )
        .join(stream);
        std::fs::read_to_string(p).unwrap_or_default()
    }

    fn logs(&self) -> String {
        format!(
            "agent log:\n{}\nserver log tail:\n{}",
            self.agent.as_ref().map(Agent::log).unwrap_or_default(),
            self.server
                .log()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

fn events(task: &Value) -> Vec<(String, String)> {
    task["status"]["taskEvents"]
        .as_array()
        .map(|evs| {
            evs.iter()
                .map(|e| {
                    (
                        e["status"].as_str().unwrap_or_default().to_owned(),
                        e["message"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn event_time(task: &Value, phase: &str) -> Option<jiff::Timestamp> {
    task["status"]["taskEvents"]
        .as_array()?
        .iter()
        .find(|e| e["status"] == phase)?["timestamp"]
        .as_str()?
        .parse()
        .ok()
}

#[test]
fn tasks_run_in_containerd_with_their_limits_output_and_exit_codes() -> Result<()> {
    let c = Cluster::start("ctd-basic", "containerd")?;
    c.job(
        "ok",
        "adhoc",
        "64Mi",
        "echo hello from $CORRAL_TASK; cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/memory/memory.limit_in_bytes; grep -E 'CapEff|NoNewPrivs' /proc/self/status; echo to-stderr >&2",
        "",
    )?;
    c.job("bad", "adhoc", "64Mi", "echo failing; exit 3", "")?;
    let ok = c.wait_phase("ok-0-0", "FINISHED")?;
    let phases: Vec<String> = events(&ok).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        phases,
        ["PENDING", "ASSIGNED", "STARTING", "RUNNING", "FINISHED"],
        "{ok}"
    );
    assert_eq!(ok["status"]["exitCode"], 0);
    let out = c.output("ok-0-0", "stdout");
    assert!(out.contains("hello from analytics/ok-0-0"), "{out}");
    assert!(
        out.contains("\n50000\n"),
        "cpus 0.5 is a 50 ms quota: {out}"
    );
    assert!(out.contains("\n67108864\n"), "64Mi memory limit: {out}");
    // As nobody: no capability (see the isolation tests), and no new
    // privileges.
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert_eq!(c.output("ok-0-0", "stderr").trim(), "to-stderr");
    let bad = c.wait_phase("bad-0-0", "FAILED")?;
    assert_eq!(bad["status"]["exitCode"], 3);
    assert_eq!(
        events(&bad).last().map(|(_, m)| m.as_str()),
        Some("exited with code 3")
    );
    // Nothing is left behind in containerd once tasks end.
    wait_for("containers to be removed", WAIT, || {
        Ok(c.containerd
            .ctr(&["containers", "ls", "-q"])?
            .trim()
            .is_empty())
    })?;
    Ok(())
}

#[test]
fn an_oom_kill_and_a_missing_image_fail_with_their_reasons() -> Result<()> {
    let c = Cluster::start("ctd-fail", "containerd")?;
    c.oom_hog()?;
    let noimg = r#"apiVersion: corral.dev/v1alpha1
kind: Job
metadata: {name: noimg, namespace: analytics}
spec:
  role: analytics
  environment: devel
  kind: adhoc
  instances: 1
  maxTaskFailures: 1
  resources: {cpus: 0.1, memory: 16Mi, disk: 10Mi}
  container: {image: "docker.io/library/not-imported:1"}
"#;
    c.k.run_stdin(&["apply", "-f", "-"], noimg)?.ok()?;
    let hog = c.wait_phase("hog-0-0", "FAILED")?;
    assert_eq!(hog["status"]["failureReason"], "OutOfMemory", "{hog}");
    assert_eq!(hog["status"]["exitCode"], 137);
    let msg = hog["status"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("memory limit of 16777216 bytes"), "{msg}");
    let missing = c.wait_phase("noimg-0-0", "FAILED")?;
    assert_eq!(missing["status"]["failureReason"], "ImageNotFound");
    let msg = missing["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("docker.io/library/not-imported:1 is not present"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn crun_runs_tasks_with_the_same_limits_and_failure_reasons() -> Result<()> {
    let c = Cluster::start_with("ctd-crun", "containerd", &["--oci-runtime", "crun"])?;
    c.job(
        "limits",
        "service",
        "64Mi",
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/memory/memory.limit_in_bytes; sleep 600",
        "",
    )?;
    c.oom_hog()?;
    c.wait_phase("limits-0-0", "RUNNING")?;
    // The runc shim keeps each container's OCI runtime state under
    // /run/containerd/runc/<namespace>/<id>: crun writes a `status` file
    // where runc writes `state.json`.
    let state = std::path::Path::new("/run/containerd/runc")
        .join(&c.containerd.namespace)
        .join("analytics.limits-0-0");
    assert!(
        state.join("status").is_file() && !state.join("state.json").exists(),
        "crun's state, not runc's, in {}: {:?}",
        state.display(),
        std::fs::read_dir(&state).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    wait_for("the limits to be printed", WAIT, || {
        Ok(c.output("limits-0-0", "stdout").lines().count() >= 2)
    })?;
    let out = c.output("limits-0-0", "stdout");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["50000", "67108864"],
        "{out}"
    );
    let hog = c.wait_phase("hog-0-0", "FAILED")?;
    assert_eq!(hog["status"]["failureReason"], "OutOfMemory", "{hog}");
    assert_eq!(hog["status"]["exitCode"], 137);
    Ok(())
}

#[test]
fn a_kill_sends_sigterm_then_sigkill_after_the_grace_period() -> Result<()> {
    let c = Cluster::start("ctd-kill", "containerd")?;
    // One task stops on SIGTERM; the other ignores it and needs SIGKILL.
    c.job(
        "polite",
        "service",
        "32Mi",
        "trap 'echo got TERM; exit 143' TERM; echo up; while true; do sleep 0.1; done",
        "\n    killGracePeriodSeconds: 30",
    )?;
    c.job(
        "stubborn",
        "service",
        "32Mi",
        "trap '' TERM; echo up; while true; do sleep 0.1; done",
        "\n    killGracePeriodSeconds: 2",
    )?;
    c.wait_phase("polite-0-0", "RUNNING")?;
    c.wait_phase("stubborn-0-0", "RUNNING")?;
    wait_for("both to print", WAIT, || {
        Ok(c.output("polite-0-0", "stdout").contains("up")
            && c.output("stubborn-0-0", "stdout").contains("up"))
    })?;
    for job in ["polite", "stubborn"] {
        c.k.run(&[
            "-n",
            "analytics",
            "patch",
            "job",
            job,
            "--type=merge",
            "-p",
            r#"{"spec":{"instances":0}}"#,
        ])?
        .ok()?;
    }
    let polite = c.wait_phase("polite-0-0", "KILLED")?;
    let stubborn = c.wait_phase("stubborn-0-0", "KILLED")?;
    assert!(c.output("polite-0-0", "stdout").contains("got TERM"));
    let took = |t: &Value| -> Result<f64> {
        let from = event_time(t, "KILLING").context("KILLING event")?;
        let to = event_time(t, "KILLED").context("KILLED event")?;
        Ok((to - from).total(jiff::Unit::Second)?)
    };
    let (p, s) = (took(&polite)?, took(&stubborn)?);
    assert!(
        p < 10.0,
        "SIGTERM ended the polite task at once, not after 30 s: {p}"
    );
    assert!(
        (2.0..20.0).contains(&s),
        "the stubborn task got SIGKILL after its 2 s grace: {s}"
    );
    Ok(())
}

/// An ad-hoc task whose container exits while the control plane is down,
/// on an agent killed before it could report: the end was kept on the
/// agent's disk before the container was deleted, and the restarted agent
/// reports it once (FAILED, exit code 3), never LOST, so it is not run again.
#[test]
fn an_exit_while_the_control_plane_is_down_survives_an_agent_restart() -> Result<()> {
    let mut c = Cluster::start("ctd-ckpt", "containerd")?;
    c.job("once", "adhoc", "32Mi", "sleep 6; exit 3", "")?;
    c.wait_phase("once-0-0", "RUNNING")?;
    c.server.kill()?;
    let kept = c
        .server
        .home
        .join("agent")
        .join(&c.node)
        .join("checkpoints");
    wait_for("the end to be kept on the agent's disk", WAIT, || {
        Ok(std::fs::read_dir(&kept).is_ok_and(|dir| {
            dir.filter_map(Result::ok)
                .any(|e| e.path().extension().is_some_and(|x| x == "json"))
        }))
    })
    .with_context(|| c.logs())?;
    wait_for("the container to be deleted", WAIT, || {
        Ok(!c
            .containerd
            .ctr(&["containers", "ls"])?
            .contains("once-0-0"))
    })?;
    c.agent.take().context("agent")?.crash()?;
    c.server = Server::start_at(c.home.path(), &c.listen, &[])?;
    c.start_agent("containerd", &[])?;
    let task = c.wait_phase("once-0-0", "FAILED")?;
    assert_eq!(task["status"]["exitCode"], 3, "{task}");
    let ends: Vec<String> = events(&task)
        .into_iter()
        .map(|(phase, _)| phase)
        .filter(|p| ["FINISHED", "FAILED", "KILLED", "LOST"].contains(&p.as_str()))
        .collect();
    assert_eq!(
        ends,
        ["FAILED"],
        "one end, and no LOST: {:?}",
        events(&task)
    );
    assert!(
        c.task("once-0-1")?.is_none(),
        "the ad-hoc task was not run again"
    );
    wait_for("the kept end to be forgotten", WAIT, || {
        Ok(std::fs::read_dir(&kept).is_ok_and(|dir| dir.count() == 0))
    })?;
    Ok(())
}

#[test]
fn a_restarted_agent_re_adopts_its_running_containers() -> Result<()> {
    re_adoption("ctd-adopt", "containerd")
}

#[test]
fn a_restarted_agent_re_adopts_its_running_processes() -> Result<()> {
    re_adoption("proc-adopt", "process")
}

fn re_adoption(node: &str, runtime: &str) -> Result<()> {
    let mut c = Cluster::start(node, runtime)?;
    c.job(
        "long",
        "service",
        "32Mi",
        "echo started; while true; do sleep 0.1; done",
        "\n    killGracePeriodSeconds: 1",
    )?;
    c.wait_phase("long-0-0", "RUNNING")?;
    let before = c.containerd.ctr(&["tasks", "ls"])?;
    c.agent.take().context("agent")?.crash()?;
    c.start_agent(runtime, &[])?;
    // The new agent finds the container; the task stays RUNNING, no replacement appears.
    wait_for("the new agent to re-adopt", WAIT, || {
        Ok(c.agent
            .as_ref()
            .is_some_and(|a| a.log().contains("re-adopted tasks")))
    })
    .with_context(|| c.logs())?;
    assert_eq!(c.phase("long-0-0")?, "RUNNING");
    assert!(c.task("long-0-1")?.is_none(), "no replacement task");
    let after = c.containerd.ctr(&["tasks", "ls"])?;
    assert_eq!(
        before.lines().filter(|l| l.contains("RUNNING")).count(),
        after.lines().filter(|l| l.contains("RUNNING")).count(),
        "no duplicate container: {before} vs {after}"
    );
    // And it controls it: scaling to zero kills it.
    c.k.run(&[
        "-n",
        "analytics",
        "patch",
        "job",
        "long",
        "--type=merge",
        "-p",
        r#"{"spec":{"instances":0}}"#,
    ])?
    .ok()?;
    c.wait_phase("long-0-0", "KILLED")?;
    Ok(())
}

/// A node offering containerd and (on its operator's word) host processes
/// runs a task as a host process only when the task asks for it; when
/// containerd stops, tasks that name no runtime fail with `NoRuntime` (to be
/// placed again) rather than move onto host processes.
#[test]
fn containerd_stopping_never_moves_tasks_onto_host_processes() -> Result<()> {
    let mut c = Cluster::start("ctd-fallback", "containerd,process")?;
    c.job(
        "first",
        "adhoc",
        "32Mi",
        "grep memory /proc/self/cgroup",
        "",
    )?;
    c.wait_phase("first-0-0", "FINISHED")?;
    assert!(
        c.output("first-0-0", "stdout").contains("memory:/\n"),
        "containerd's cgroup namespace hides the path: {}",
        c.output("first-0-0", "stdout")
    );
    // Asked for, a host process runs beside the containers, as nobody.
    c.job(
        "host",
        "adhoc",
        "32Mi",
        "grep memory /proc/self/cgroup; grep -E '^(Uid|NoNewPrivs):' /proc/self/status; exit 0",
        "\n    runtime: process",
    )?;
    c.wait_phase("host-0-0", "FINISHED")?;
    let out = c.output("host-0-0", "stdout");
    assert!(
        out.contains("memory:/corral/analytics.host-0-0"),
        "a host process in its own cgroup: {out}"
    );
    assert!(out.contains("Uid:\t65534\t65534"), "as nobody: {out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    c.containerd.stop()?;
    wait_for("the agent to notice", WAIT, || {
        Ok(c.agent
            .as_ref()
            .is_some_and(|a| a.log().contains("healthy=false")))
    })
    .with_context(|| c.logs())?;
    c.job(
        "second",
        "adhoc",
        "32Mi",
        "grep memory /proc/self/cgroup; exit 0",
        "",
    )?;
    let task = c.wait_phase("second-0-0", "FAILED")?;
    assert_eq!(task["status"]["failureReason"], "NoRuntime", "{task}");
    assert!(
        task.to_string()
            .contains("the containerd runtime is not healthy"),
        "{task}"
    );
    assert_eq!(c.output("second-0-0", "stdout"), "", "it never ran");
    Ok(())
}

#[test]
fn oversubscription_offers_idle_cpu_to_revocable_tasks() -> Result<()> {
    let server = Server::start()?;
    let k = Kubectl::new(&server)?;
    let _agent = Agent::start(
        &server,
        "agent-over",
        &[
            "--node-name",
            "over",
            "--runtimes",
            "process",
            "--resources",
            "cpus=1,memory=2Gi,disk=1Gi",
            "--oversubscribe",
            "0.5",
            "--sample-seconds",
            "1",
        ],
    )?;
    // Idle until the test touches `burn`, then busy on its whole CPU (as
    // root: the file is in the test's private directory).
    let trigger = server.home.join("burn");
    let burn_later = format!(
        "while [ ! -e {} ]; do sleep 0.2; done; while :; do :; done",
        trigger.display()
    );
    let job = |name: &str, tier: &str, cpus: &str, script: &str| {
        let memory = if tier == "preferred" { "512Mi" } else { "16Mi" };
        format!(
            "apiVersion: corral.dev/v1alpha1\nkind: Job\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  role: ops\n  environment: prod\n  kind: service\n  tier: {tier}\n  resources: {{cpus: {cpus}, memory: {memory}}}\n  container:\n    image: x\n    command: [sh, -c, {script:?}]\n    killGracePeriodSeconds: 1\n    user: root\n"
        )
    };
    k.run_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: corral.dev/v1alpha1\nkind: Role\nmetadata: {{name: ops}}\nspec: {{weight: 1}}\n---\napiVersion: corral.dev/v1alpha1\nkind: Quota\nmetadata: {{name: ops}}\nspec: {{role: ops}}\n---\n{}",
            job("idle", "preferred", "1", &burn_later)
        ),
    )?
    .ok()?;
    // The node's CPU is all allocated; half of the idle task's unused CPU
    // comes back as revocable capacity (and of its memory).
    let revocable = || -> Result<i64> {
        let r = k.run(&[
            "get",
            "node.corral.dev",
            "over",
            "-o",
            "jsonpath={.status.revocable.cpus}",
        ])?;
        Ok(r.stdout.trim().trim_end_matches('m').parse().unwrap_or(0))
    };
    wait_for("revocable CPU to be offered", WAIT, || {
        Ok(revocable()? >= 450)
    })?;
    assert!(revocable()? <= 500, "at most half of the idle cpu");
    // A revocable task runs on it; a preemptible one still does not fit.
    k.run_stdin(
        &["apply", "-f", "-"],
        &job("scavenger", "revocable", "0.25", "sleep 300"),
    )?
    .ok()?;
    k.run_stdin(
        &["apply", "-f", "-"],
        &job("batch", "preemptible", "0.25", "sleep 300"),
    )?
    .ok()?;
    let phase = |task: &str| -> Result<String> {
        Ok(
            k.run(&["get", "task", task, "-o", "jsonpath={.status.phase}"])?
                .stdout,
        )
    };
    wait_for("the revocable task to run", WAIT, || {
        Ok(phase("scavenger-0-0")? == "RUNNING")
    })?;
    assert_eq!(phase("batch-0-0")?, "PENDING");
    // The idle task gets busy: its idle share is gone, and the QoS
    // controller evicts the revocable task that ran on it.
    std::fs::write(&trigger, "")?;
    wait_for("the revocable task to be evicted", WAIT, || {
        Ok(phase("scavenger-0-0")? == "KILLED")
    })?;
    let events = k
        .run(&[
            "get",
            "task",
            "scavenger-0-0",
            "-o",
            "jsonpath={.status.taskEvents[*].message}",
        ])?
        .ok()?;
    assert!(events.contains("QoS controller of node over"), "{events}");
    // Stop the host processes this test started.
    for j in ["idle", "scavenger", "batch"] {
        k.run(&["delete", "job", j])?.ok()?;
    }
    wait_for("the tasks to end", WAIT, || {
        Ok(k.run(&["get", "tasks", "-o", "name"])?
            .stdout
            .trim()
            .is_empty())
    })?;
    Ok(())
}
