//! `stop_all` on the process runtime: a task that outlived its agent is
//! re-adopted by a fresh runtime over the same sandboxes and killed, as
//! `corral down` does after `corral up` stopped; a process that reused the
//! pid of a task that ended is left alone, and so is one a task names in a
//! pid file it planted in its own sandbox.

use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use corral_node_agent::runtime::process::Process;
use corral_node_agent::runtime::{
    ContainerRuntime, Launch, RuntimeEvent, stop_all, task_files_dir,
};
use serde_json::json;

fn alive(pid: i32) -> bool {
    // There, and not a zombie. (Its cmdline would not do: a process in the
    // middle of exec has none yet, and a spawned one may be read then.)
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test]
async fn tasks_that_outlived_their_agent_are_found_and_killed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let first = Process::new(dir.path(), None);
    let files = task_files_dir(dir.path(), "default/sleeper-0-0");
    // A machine busy with other tests may fail the wrapper's fork of the
    // command (it then exits at once, saying why): start it again, at most
    // three times.
    let mut pid = 0;
    let mut rx = None;
    for attempt in 0.. {
        let (tx, mut events) = tokio::sync::mpsc::channel(16);
        let launch = Launch {
            key: "default/sleeper-0-0".into(),
            container: serde_json::from_value(
                json!({"image": "busybox", "command": ["sleep", "600"]}),
            )?,
            resources: Default::default(),
            annotations: Default::default(),
            uid: Some("uid-1".into()),
        };
        first.start(launch, tx).await?;
        loop {
            let (_, e) = events.recv().await.context("events ended")?;
            if e == RuntimeEvent::Running {
                break;
            }
        }
        // `PID STARTTIME`
        pid = std::fs::read_to_string(files.join("pid"))?
            .split_whitespace()
            .next()
            .context("empty pid file")?
            .parse()?;
        if alive(pid) {
            rx = Some(events);
            break;
        }
        let stderr = std::fs::read_to_string(files.join("stderr")).unwrap_or_default();
        assert!(attempt < 2, "the task died at once: {stderr}");
        eprintln!("attempt {attempt}: the task died at once: {stderr}");
    }
    assert!(alive(pid));
    // The agent goes away; its task keeps running.
    drop(first);
    drop(rx);
    assert!(alive(pid));

    // A sandbox whose pid file names a pid the kernel has since given to an
    // unrelated process (pids wrap): that process is not the task's.
    let mut bystander = std::process::Command::new("sleep")
        .arg("600")
        .process_group(0)
        .spawn()?;
    let stale = task_files_dir(dir.path(), "default/stale-0-0");
    std::fs::create_dir_all(&stale)?;
    std::fs::write(stale.join("pid"), format!("{} 1", bystander.id()))?;
    std::fs::write(stale.join("exit_code"), "0")?;
    // A task's own sandbox holding what older agents read there: a pid file
    // naming a live process the task wants killed. Nothing there counts.
    let planted = dir.path().join("default.planted-0-0");
    std::fs::create_dir_all(&planted)?;
    let started = std::fs::read_to_string(format!("/proc/{}/stat", bystander.id()))?
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19).map(str::to_owned))
        .context("start time")?;
    std::fs::write(
        planted.join(".pid"),
        format!("{} {started}", bystander.id()),
    )?;
    std::fs::write(planted.join("pid"), format!("{} {started}", bystander.id()))?;

    let runtimes: Vec<Arc<dyn ContainerRuntime>> = vec![Arc::new(Process::new(dir.path(), None))];
    let out = stop_all(&runtimes, Duration::from_secs(5)).await?;
    let bystander_alive = alive(i32::try_from(bystander.id())?);
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert!(
        bystander_alive,
        "a process that reused a task's pid, or that a task named, was killed"
    );
    assert_eq!(
        out.stopped,
        vec![
            "default/stale-0-0".to_owned(),
            "default/sleeper-0-0".to_owned()
        ]
    );
    assert!(out.stuck.is_empty());
    assert!(!alive(pid), "pid {pid} still runs");
    // Nothing left: a second pass finds nothing.
    let again = stop_all(&runtimes, Duration::from_secs(5)).await?;
    assert!(
        again.stopped.is_empty() && again.stuck.is_empty(),
        "{again:?}"
    );
    Ok(())
}
