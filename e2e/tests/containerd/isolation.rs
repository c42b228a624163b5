//! What a task cannot do to its node: links planted in its sandbox lead
//! nowhere, and its output is rotated by size.

use anyhow::{Context, Result};
use corral_e2e::wait_for;

use super::{Cluster, WAIT};

/// A task that plants links named like its output in its sandbox gets
/// nothing from outside it through its log, and the next task of the same
/// name (its job deleted and created again, the sandbox still there) does
/// not make the agent's side write through them.
#[test]
fn links_planted_in_a_sandbox_lead_nowhere() -> Result<()> {
    let c = Cluster::start("ctd-links", "containerd")?;
    let victim = c.home.path().join("victim");
    std::fs::write(&victim, "host file\n")?;
    let plant = format!(
        "ln -s {v} /mnt/sandbox/stdout; ln -s {v} /mnt/sandbox/stderr; echo planted",
        v = victim.display()
    );
    c.job("evil", "adhoc", "32Mi", &plant, "")?;
    c.wait_phase("evil-0-0", "FINISHED")?;
    let log =
        c.k.run(&[
            "get",
            "--raw",
            "/apis/corral.dev/v1alpha1/namespaces/analytics/tasks/evil-0-0/log",
        ])?
        .ok()?;
    assert_eq!(log, "planted\n", "the log is the task's own output");
    c.k.run(&["-n", "analytics", "delete", "job", "evil", "--wait=true"])?
        .ok()?;
    wait_for("the old task to go", WAIT, || {
        Ok(c.task("evil-0-0")?.is_none())
    })?;
    c.job("evil", "adhoc", "32Mi", "echo second", "")?;
    c.wait_phase("evil-0-0", "FINISHED")?;
    assert_eq!(
        std::fs::read_to_string(&victim)?,
        "host file\n",
        "nothing written through the links"
    );
    assert_eq!(c.output("evil-0-0", "stdout"), "second\n");
    Ok(())
}

/// Output past `--log-max-size` is rotated while the container runs: the
/// live file starts again (no hole where the old output was: containerd's
/// shim appends), and only `--log-max-files` files are kept.
#[test]
fn running_tasks_output_is_rotated_by_size() -> Result<()> {
    let c = Cluster::start_with(
        "ctd-rotate",
        "containerd",
        &["--log-max-size", "16Ki", "--log-max-files", "3"],
    )?;
    c.job(
        "chatty",
        "service",
        "32Mi",
        "i=0; while true; do echo \"line $i of a chatty task, padded to be a little longer\"; i=$((i+1)); sleep 0.005; done",
        "",
    )?;
    c.wait_phase("chatty-0-0", "RUNNING")?;
    let files = corral_node_agent::runtime::task_files_dir(
        &c.server.home.join("agent").join(&c.node).join("sandboxes"),
        "analytics/chatty-0-0",
    );
    wait_for("two rotations", WAIT, || {
        Ok(files.join("stdout.2").exists())
    })
    .with_context(|| c.logs())?;
    assert!(!files.join("stdout.3").exists(), "three files at most");
    // A rotation may be moving `stdout.1` on; it is never there half written.
    let mut rotated = Vec::new();
    wait_for("a rotated copy to read", WAIT, || {
        match std::fs::read(files.join("stdout.1")) {
            Ok(bytes) => {
                rotated = bytes;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    })?;
    assert!(rotated.starts_with(b"line "), "a whole copy");
    // The live file restarted at its beginning: no NULs where the old
    // output was.
    let live = std::fs::read(files.join("stdout"))?;
    assert!(
        !live.contains(&0),
        "a hole in the live file ({} bytes)",
        live.len()
    );
    assert!(
        live.len() < 1024 * 1024,
        "the live file is bounded: {} bytes",
        live.len()
    );
    Ok(())
}
