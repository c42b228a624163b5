//! The loop a GitOps pipeline runs, against `corral server`: a local git
//! repository holds a team's kustomization (`more-examples/gitops/`); each sync
//! exports the newest commit and applies it with stock kubectl —
//! server-side apply, force-conflicts (the pipeline owns its fields), and
//! pruning through an ApplySet (`KUBECTL_APPLYSET=true`). Commits that add,
//! change and remove Jobs are followed; a manual change (drift) is undone by
//! the next sync; `kubectl diff --server-side` shows a pending change first.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};
use corral_e2e::{Kubectl, Server, more_examples, s};

fn git(repo: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=Corral CI",
            "-c",
            "user.email=ci@corral.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Exports HEAD of `repo` into a fresh directory, as a pipeline checks out.
fn checkout(repo: &Path) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let archive = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["archive", "--format=tar", "HEAD"])
        .output()?;
    if !archive.status.success() {
        bail!("git archive: {}", String::from_utf8_lossy(&archive.stderr));
    }
    let tar = dir.path().join("head.tar");
    std::fs::write(&tar, &archive.stdout)?;
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(dir.path())
        .status()?;
    anyhow::ensure!(st.success(), "tar -x failed");
    std::fs::remove_file(tar)?;
    Ok(dir)
}

fn kubectl_with_applyset(k: &Kubectl, args: &[&str]) -> Result<corral_e2e::Run> {
    let out = k
        .command()
        .env("KUBECTL_APPLYSET", "true")
        .args(args)
        .output()?;
    Ok(corral_e2e::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// One sync: the newest commit, applied and pruned.
fn sync(k: &Kubectl, repo: &Path) -> Result<String> {
    let head = checkout(repo)?;
    kubectl_with_applyset(
        k,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=gitops",
            "-k",
            &s(head.path()),
            "--prune",
            "--applyset=search-sync",
            "-n",
            "search",
        ],
    )?
    .ok()
}

fn instances(k: &Kubectl, job: &str) -> Result<String> {
    k.run(&[
        "-n",
        "search",
        "get",
        "job",
        job,
        "-o",
        "jsonpath={.spec.instances}",
    ])?
    .ok()
}

#[test]
fn a_gitops_loop_follows_commits_undoes_drift_and_prunes() -> Result<()> {
    // The API server alone: what the pipeline writes is all that is
    // written (a job controller would write the Jobs' status meanwhile).
    let server = Server::start_with(&["--no-controllers"])?;
    let k = Kubectl::new(&server)?;
    k.run(&["create", "namespace", "search"])?.ok()?;
    let repo = tempfile::tempdir()?;
    for entry in std::fs::read_dir(more_examples().join("gitops"))? {
        let p = entry?.path();
        if let Some(name) = p.file_name() {
            std::fs::copy(&p, repo.path().join(name))?;
        }
    }
    git(repo.path(), &["init", "-q"])?;
    git(repo.path(), &["add", "."])?;
    git(
        repo.path(),
        &["commit", "-q", "-m", "search team: role, quota, indexer"],
    )?;

    // First sync: everything is created.
    let out = sync(&k, repo.path())?;
    for obj in [
        "role.corral.dev/search",
        "quota.corral.dev/search",
        "job.corral.dev/indexer",
    ] {
        assert!(out.contains(&format!("{obj} serverside-applied")), "{out}");
    }
    assert_eq!(instances(&k, "indexer")?, "2");

    // A commit scales the indexer and adds a job; the diff shows it first.
    let jobs = repo.path().join("jobs.yaml");
    let text = std::fs::read_to_string(&jobs)?.replace("instances: 2", "instances: 3");
    let reporter = "---\napiVersion: corral.dev/v1alpha1\nkind: Job\nmetadata:\n  name: reporter\nspec:\n  role: search\n  environment: prod\n  kind: adhoc\n  resources: {cpus: 1, memory: 256Mi}\n  container:\n    image: docker.io/library/busybox:1.36\n    command: [\"sh\", \"-c\", \"echo report\"]\n";
    std::fs::write(&jobs, format!("{text}{reporter}"))?;
    git(
        repo.path(),
        &["commit", "-q", "-am", "scale the indexer; add a reporter"],
    )?;
    let head = checkout(repo.path())?;
    let diff = k.run(&[
        "diff",
        "--server-side",
        "--force-conflicts",
        "--field-manager=gitops",
        "-k",
        &s(head.path()),
    ])?;
    assert_eq!(
        diff.code, 1,
        "kubectl diff exits 1 when there are changes: {}",
        diff.stderr
    );
    assert!(
        diff.stdout.contains("-  instances: 2") && diff.stdout.contains("+  instances: 3"),
        "{}",
        diff.stdout
    );
    assert!(diff.stdout.contains("+  name: reporter"), "{}", diff.stdout);
    assert_eq!(instances(&k, "indexer")?, "2", "a diff changes nothing");
    sync(&k, repo.path())?;
    assert_eq!(instances(&k, "indexer")?, "3");
    k.run(&["-n", "search", "get", "job", "reporter"])?.ok()?;

    // Drift: someone scales the indexer by hand; the next sync undoes it.
    k.run(&[
        "-n",
        "search",
        "patch",
        "job",
        "indexer",
        "--type=merge",
        "-p",
        r#"{"spec":{"instances":7}}"#,
    ])?
    .ok()?;
    assert_eq!(instances(&k, "indexer")?, "7");
    sync(&k, repo.path())?;
    assert_eq!(instances(&k, "indexer")?, "3", "the repository wins");

    // A commit removes the reporter: the sync prunes it, and only it.
    std::fs::write(&jobs, text)?;
    git(repo.path(), &["commit", "-q", "-am", "drop the reporter"])?;
    let out = sync(&k, repo.path())?;
    assert!(out.contains("job.corral.dev/reporter pruned"), "{out}");
    let left = k.run(&["get", "corral", "-A", "-o", "name"])?.ok()?;
    assert!(!left.contains("job.corral.dev/reporter"), "{left}");
    for obj in [
        "job.corral.dev/indexer",
        "role.corral.dev/search",
        "quota.corral.dev/search",
    ] {
        assert!(left.contains(obj), "{obj} stays: {left}");
    }
    // A sync with nothing new changes nothing.
    let rv = |k: &Kubectl| {
        k.run(&[
            "-n",
            "search",
            "get",
            "job",
            "indexer",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
    };
    let before = rv(&k)?.ok()?;
    sync(&k, repo.path())?;
    assert_eq!(rv(&k)?.ok()?, before, "an unchanged commit writes nothing");
    Ok(())
}
