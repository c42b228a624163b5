//! `stop_all` on the process runtime: a task that outlived its agent is
//! re-adopted by a fresh runtime over the same sandboxes and killed, as
//! `corral down` does after `corral up` stopped.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use corral_node_agent::runtime::process::Process;
use corral_node_agent::runtime::{ContainerRuntime, Launch, RuntimeEvent, stop_all};
use serde_json::json;

fn alive(pid: i32) -> bool {
    // A zombie has no cmdline left; a live process does.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

#[tokio::test]
async fn tasks_that_outlived_their_agent_are_found_and_killed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let first = Process::new(dir.path(), None);
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
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
        let (_, e) = rx.recv().await.context("events ended")?;
        if e == RuntimeEvent::Running {
            break;
        }
    }
    let pid: i32 = std::fs::read_to_string(dir.path().join("default.sleeper-0-0").join(".pid"))?
        .trim()
        .parse()?;
    assert!(alive(pid));
    // The agent goes away; its task keeps running.
    drop(first);
    drop(rx);
    assert!(alive(pid));

    let runtimes: Vec<Arc<dyn ContainerRuntime>> = vec![Arc::new(Process::new(dir.path(), None))];
    let out = stop_all(&runtimes, Duration::from_secs(5)).await?;
    assert_eq!(out.stopped, vec!["default/sleeper-0-0".to_owned()]);
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
