//! `corral controllers` as processes of their own beside `corral server
//! --no-controllers`: of two, one leads (holds the lease) and does the work;
//! when it is stopped the other takes over at once and carries on.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use corral_e2e::{Kubectl, Server, corral_bin, wait_for};

/// A `corral controllers` process, stopped on drop.
struct Controllers(Child);

impl Controllers {
    fn start(server: &Server, name: &str) -> Result<Self> {
        let log = std::fs::File::create(server.home.join(format!("{name}.log")))?;
        Ok(Self(
            Command::new(corral_bin()?)
                .arg("controllers")
                .arg("--kubeconfig")
                .arg(&server.kubeconfig)
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
    let holder = || -> Result<String> {
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
    };
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
