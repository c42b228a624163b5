//! `corral controllers` as processes of their own beside `corral server
//! --no-controllers`: of two, one leads (holds the lease) and does the work;
//! when it is stopped the other takes over at once and carries on; when it
//! dies mid-way through a cron tick, the other records the tick once.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use corral_e2e::{Kubectl, Server, corral_bin, wait_for};

/// A `corral controllers` process, stopped on drop.
struct Controllers(Child);

impl Controllers {
    fn start(server: &Server, name: &str) -> Result<Self> {
        Self::start_with(server, name, &[])
    }

    /// Starts one with extra environment variables.
    fn start_with(server: &Server, name: &str, env: &[(&str, &str)]) -> Result<Self> {
        let log = std::fs::File::create(server.home.join(format!("{name}.log")))?;
        Ok(Self(
            Command::new(corral_bin()?)
                .arg("controllers")
                // Side by side: each its own metrics port.
                .arg("--metrics-listen=127.0.0.1:0")
                .arg("--kubeconfig")
                .arg(&server.kubeconfig)
                .envs(env.iter().copied())
                .env("CORRAL_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting corral controllers")?,
        ))
    }

    fn identity_suffix(&self) -> String {
        format!("-{}", self.0.id())
    }

    fn stop(mut self) -> Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()?;
        wait_for(
            "corral controllers to exit",
            Duration::from_secs(15),
            || Ok(self.0.try_wait()?.is_some()),
        )
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Who holds the controllers' lease.
fn lease_holder(kubectl: &Kubectl) -> Result<String> {
    Ok(kubectl
        .run(&[
            "get",
            "lease",
            "-n",
            "corral-system",
            "corral-controllers",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])?
        .stdout)
}

const JOB: &str = r#"
apiVersion: corral.dev/v1alpha1
kind: Job
metadata: {name: web, namespace: default}
spec:
  role: web
  environment: prod
  kind: service
  instances: 2
  resources: {cpus: 1, memory: 128Mi}
  container: {image: busybox}
"#;

#[test]
fn standby_controllers_take_over_when_the_leader_stops() -> Result<()> {
    let server = Server::start_with(&["--no-controllers"])?;
    let kubectl = Kubectl::new(&server)?;
    let holder = || lease_holder(&kubectl);
    let tasks = || -> Result<usize> {
        Ok(kubectl
            .run(&["get", "tasks", "-o", "name"])?
            .ok()?
            .lines()
            .count())
    };
    let mut both = vec![
        Controllers::start(&server, "controllers-a")?,
        Controllers::start(&server, "controllers-b")?,
    ];
    wait_for("a leader", Duration::from_secs(30), || {
        Ok(!holder()?.is_empty())
    })?;
    kubectl.corral_role("web")?;
    kubectl.run_stdin(&["apply", "-f", "-"], JOB)?.ok()?;
    wait_for(
        "the leader to create the job's tasks",
        Duration::from_secs(30),
        || Ok(tasks()? == 2),
    )?;

    let leader = holder()?;
    let at = both
        .iter()
        .position(|c| leader.ends_with(&c.identity_suffix()))
        .context("the holder is one of ours")?;
    both.remove(at).stop()?;
    let standby = both.pop().context("the standby")?;
    // Released on a clean stop: no need to wait for the lease to lapse.
    wait_for("the standby to lead", Duration::from_secs(10), || {
        Ok(holder()?.ends_with(&standby.identity_suffix()))
    })?;
    kubectl
        .run(&[
            "patch",
            "job",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"instances":3}}"#,
        ])?
        .ok()?;
    wait_for(
        "the new leader to scale the job",
        Duration::from_secs(30),
        || Ok(tasks()? == 3),
    )?;
    standby.stop()?;
    server.stop()?;
    Ok(())
}

const CRON: &str = r#"
apiVersion: corral.dev/v1alpha1
kind: Job
metadata: {name: nightly, namespace: default}
spec:
  role: web
  environment: prod
  kind: cron
  instances: 1
  cron: {schedule: "* * * * *"}
  resources: {cpus: 1, memory: 128Mi}
  container: {image: busybox}
"#;

/// Cron's exactly-once tick across a failover: the leader is killed (it
/// aborts, releasing nothing) after creating a tick's run and before
/// recording the tick; the standby takes the lease once it lapses, finds
/// the run made, and records the tick once. One run, counted once.
#[test]
fn a_cron_tick_survives_a_leader_killed_between_creating_and_recording_its_run() -> Result<()> {
    let server = Server::start_with(&["--no-controllers"])?;
    let kubectl = Kubectl::new(&server)?;
    let holder = || lease_holder(&kubectl);
    let mut doomed = Controllers::start_with(
        &server,
        "controllers-doomed",
        &[(corral_controllers::failpoints::VARIABLE, "cron-run-created")],
    )?;
    wait_for("the doomed one to lead", Duration::from_secs(30), || {
        Ok(holder()?.ends_with(&doomed.identity_suffix()))
    })?;
    let standby = Controllers::start(&server, "controllers-standby")?;
    kubectl.corral_role("web")?;
    kubectl.run_stdin(&["apply", "-f", "-"], CRON)?.ok()?;
    // The first tick comes within a minute: the leader creates its run and dies.
    wait_for(
        "the leader to die at the failpoint",
        Duration::from_secs(90),
        || Ok(doomed.0.try_wait()?.is_some()),
    )?;
    let runs = || -> Result<Vec<String>> {
        Ok(kubectl
            .run(&["get", "tasks", "-o", "name"])?
            .ok()?
            .lines()
            .map(str::to_owned)
            .collect())
    };
    let made = runs()?;
    assert_eq!(
        made.len(),
        1,
        "the run was created before the crash: {made:?}"
    );
    let started = || -> Result<String> {
        Ok(kubectl
            .run(&[
                "get",
                "job",
                "nightly",
                "-o",
                "jsonpath={.status.cron.runsStarted}",
            ])?
            .stdout)
    };
    assert_ne!(
        started()?,
        "1",
        "the tick was not recorded before the crash"
    );
    wait_for(
        "the standby to lead and record the tick",
        Duration::from_secs(40),
        || Ok(holder()?.ends_with(&standby.identity_suffix()) && started()? == "1"),
    )?;
    assert_eq!(runs()?, made, "the same single run, not a second");
    standby.stop()?;
    server.stop()?;
    Ok(())
}
