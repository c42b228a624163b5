//! What a task cannot do to its node: links planted in its sandbox lead
//! nowhere, its output is rotated by size, it runs as nobody unless its Job
//! names a user, and without a network when it asks for none.

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

/// The interfaces `/proc/net/dev` lists.
fn interfaces(proc_net_dev: &str) -> Vec<String> {
    proc_net_dev
        .lines()
        .filter(|l| !l.contains('|'))
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_owned()))
        .collect()
}

/// `network: none` gives a task a network namespace of its own with only
/// loopback, and loopback up; a task that names no network has the node's.
#[test]
fn a_task_without_network_sees_only_loopback() -> Result<()> {
    let c = Cluster::start("ctd-nonet", "containerd")?;
    let script = "cat /proc/net/dev; echo flags $(cat /sys/class/net/lo/flags)";
    c.job("offline", "adhoc", "32Mi", script, "\n    network: none")?;
    c.job("online", "adhoc", "32Mi", script, "")?;
    c.wait_phase("offline-0-0", "FINISHED")?;
    c.wait_phase("online-0-0", "FINISHED")?;
    let offline = c.output("offline-0-0", "stdout");
    assert_eq!(interfaces(&offline), ["lo"], "{offline}");
    let flags = offline
        .lines()
        .find_map(|l| l.strip_prefix("flags 0x"))
        .and_then(|f| u32::from_str_radix(f.trim(), 16).ok())
        .context("lo's flags")?;
    assert_eq!(flags & 1, 1, "loopback is up: {offline}");
    let host = interfaces(&std::fs::read_to_string("/proc/net/dev")?);
    let online = c.output("online-0-0", "stdout");
    assert_eq!(interfaces(&online), host, "the node's network: {online}");
    Ok(())
}

/// A task runs as nobody unless its Job names a user (by number, or by a
/// name its image defines) or root; no capability but CAP_NET_BIND_SERVICE,
/// and that only for root; a seccomp filter unless it is unconfined. Its
/// sandbox is its own to write.
#[test]
fn tasks_run_as_nobody_unless_their_job_names_a_user() -> Result<()> {
    let c = Cluster::start("ctd-users", "containerd")?;
    let script = "grep -E '^(Uid|Gid|CapEff|Seccomp):' /proc/self/status; echo map $(cat /proc/self/uid_map); touch /mnt/sandbox/mine && echo wrote";
    for (name, user) in [
        ("plain", ""),
        ("numbered", "\n    user: \"1234:1234\""),
        ("named", "\n    user: app"),
        ("grouped", "\n    user: \"app:staff\""),
        ("rooted", "\n    user: root"),
        ("unconfined", "\n    seccompProfile: Unconfined"),
    ] {
        c.job(name, "adhoc", "32Mi", script, user)?;
    }
    for (name, uid, gid, caps, seccomp) in [
        ("plain", 65534, 65534, "0000000000000000", 2),
        ("numbered", 1234, 1234, "0000000000000000", 2),
        ("named", 1000, 1000, "0000000000000000", 2),
        ("grouped", 1000, 50, "0000000000000000", 2),
        ("rooted", 0, 0, "0000000000000400", 2),
        ("unconfined", 65534, 65534, "0000000000000000", 0),
    ] {
        let task = format!("{name}-0-0");
        c.wait_phase(&task, "FINISHED")?;
        let out = c.output(&task, "stdout");
        assert!(
            out.contains(&format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}\n")),
            "{name}: {out}"
        );
        assert!(
            out.contains(&format!("Gid:\t{gid}\t{gid}\t{gid}\t{gid}\n")),
            "{name}: {out}"
        );
        assert!(out.contains(&format!("CapEff:\t{caps}\n")), "{name}: {out}");
        assert!(out.contains("wrote"), "{name} writes its sandbox: {out}");
        assert!(
            out.contains(&format!("Seccomp:\t{seccomp}\n")),
            "{name}: {out}"
        );
        // A user namespace for all but root: nobody on the host either.
        let map = if uid == 0 {
            "map 0 0 4294967295"
        } else {
            "map 0 100000 65536"
        };
        assert!(out.contains(map), "{name}: {out}");
    }
    Ok(())
}

/// `readOnlyRootFilesystem: true`: the image's files cannot be written; the
/// sandbox still can.
#[test]
fn a_read_only_root_leaves_only_the_sandbox_writable() -> Result<()> {
    let c = Cluster::start("ctd-ro", "containerd")?;
    c.job(
        "frozen",
        "adhoc",
        "32Mi",
        "touch /etc/changed 2>/dev/null && echo root-written; touch /mnt/sandbox/ok && echo sandbox-written",
        "\n    user: root\n    readOnlyRootFilesystem: true",
    )?;
    c.wait_phase("frozen-0-0", "FINISHED")?;
    let out = c.output("frozen-0-0", "stdout");
    assert!(!out.contains("root-written"), "{out}");
    assert!(out.contains("sandbox-written"), "{out}");
    Ok(())
}

/// A task holding more than its `disk` (10Mi here) in its sandbox or its
/// container's writable layer is killed and FAILED with
/// `DiskLimitExceeded`; a host process is measured by its sandbox; a task
/// within its limit runs on.
#[test]
fn a_task_past_its_disk_limit_is_killed_with_that_reason() -> Result<()> {
    let c = Cluster::start_with("ctd-disk", "containerd,process", &["--sample-seconds", "1"])?;
    let fill = |path: &str, mib: u32| {
        format!(
            "dd if=/dev/zero of={path} bs=1048576 count={mib} 2>/dev/null; echo filled; sleep 600"
        )
    };
    // Within its limit first: the passes that catch the hogs measure it too.
    c.job("modest", "adhoc", "32Mi", &fill("/mnt/sandbox/fill", 2), "")?;
    c.wait_phase("modest-0-0", "RUNNING")?;
    wait_for("the modest task to fill its share", WAIT, || {
        Ok(c.output("modest-0-0", "stdout").contains("filled"))
    })?;
    // (A shell as a container's first process ignores SIGTERM: no grace.)
    let quick = "\n    killGracePeriodSeconds: 0";
    c.job(
        "sandbox-hog",
        "adhoc",
        "32Mi",
        &fill("/mnt/sandbox/fill", 16),
        quick,
    )?;
    let as_root = format!("{quick}\n    user: root");
    c.job(
        "layer-hog",
        "adhoc",
        "32Mi",
        &fill("/var/fill", 16),
        &as_root,
    )?;
    let on_host = format!("{quick}\n    runtime: process");
    c.job("host-hog", "adhoc", "32Mi", &fill("fill", 16), &on_host)?;
    for hog in ["sandbox-hog", "layer-hog", "host-hog"] {
        let task = c.wait_phase(&format!("{hog}-0-0"), "FAILED")?;
        assert_eq!(
            task["status"]["failureReason"], "DiskLimitExceeded",
            "{task}"
        );
        assert!(
            task.to_string().contains("disk limit of 10485760 bytes"),
            "{task}"
        );
    }
    assert_eq!(c.phase("modest-0-0")?, "RUNNING");
    Ok(())
}

/// Where the OCI runtime, as a task's remapped root, cannot reach
/// containerd's state (here its directory is closed to all but the host's
/// root, as `/root` is), a task starts without a user namespace, once the
/// agent has said so, and so do its later tasks.
#[test]
fn tasks_start_without_a_user_namespace_where_one_cannot_reach_containerd() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start("ctd-closed", "containerd")?;
    let dir = c
        .containerd
        .address
        .parent()
        .and_then(std::path::Path::parent)
        .context("containerd's directory")?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let script = "grep -E '^Uid:' /proc/self/status; echo map $(cat /proc/self/uid_map)";
    c.job("first", "adhoc", "32Mi", script, "")?;
    c.wait_phase("first-0-0", "FINISHED")?;
    c.job("second", "adhoc", "32Mi", script, "")?;
    c.wait_phase("second-0-0", "FINISHED")?;
    for task in ["first-0-0", "second-0-0"] {
        let out = c.output(task, "stdout");
        assert!(out.contains("Uid:\t65534"), "{task}: {out}");
        assert!(out.contains("map 0 0 4294967295"), "{task}: {out}");
    }
    let log = c
        .agent
        .as_ref()
        .map(corral_e2e::Agent::log)
        .unwrap_or_default();
    assert_eq!(
        log.matches("could not start in a user namespace").count(),
        1,
        "{log}"
    );
    Ok(())
}
