//! The `corral` client verbs against `corral server` (no agent): apply,
//! get in every output form and with selectors, watch, describe, why,
//! events, delete, dry runs, and the errors a user meets — each checked on
//! what the command prints and its exit code.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use corral_e2e::{Corral, Server, corral_bin, examples, s, wait_for};
use serde_json::Value;

#[test]
fn the_client_verbs_print_what_kubectl_users_expect() -> Result<()> {
    let server = Server::start()?;
    let c = Corral::new(&server);

    // apply: one line per object, namespaces first, a summary on stderr.
    let r = c.run(&["apply", "-f", &s(&examples())])?;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with(
            "namespace/analytics serverside-applied\nnamespace/web serverside-applied\n"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("job.corral.dev/sparkie serverside-applied")
    );
    assert!(
        r.stderr.contains("applied 20 of 20 objects"),
        "{}",
        r.stderr
    );

    // The job controller makes the talk's task and records its PENDING step.
    wait_for(
        "sparkie's task and its first event",
        Duration::from_secs(30),
        || {
            Ok(
                c.run(&["-n", "analytics", "events", "--for", "job/sparkie"])?
                    .stdout
                    .contains("PENDING"),
            )
        },
    )?;

    // get: tables, -A, -o name|json|yaml, label and field selectors.
    let jobs = c.run(&["get", "jobs", "-A"])?.ok()?;
    let header = jobs.lines().next().unwrap_or_default();
    assert!(header.starts_with("NAMESPACE   NAME"), "{jobs}");
    assert!(
        header.contains("KIND") && header.contains("PHASE") && !header.contains("TIER"),
        "{header}"
    );
    let wide = c.run(&["get", "jobs", "-A", "-o", "wide"])?.ok()?;
    assert!(
        wide.lines().next().unwrap_or_default().contains("TIER"),
        "{wide}"
    );
    let names = c
        .run(&["-n", "analytics", "get", "jobs", "-o", "name"])?
        .ok()?;
    assert!(
        names.lines().all(|l| l.starts_with("job.corral.dev/")),
        "{names}"
    );
    assert_eq!(names.lines().count(), 3, "{names}");
    let one: Value = serde_json::from_str(
        &c.run(&["-n", "analytics", "get", "job", "sparkie", "-o", "json"])?
            .ok()?,
    )?;
    assert_eq!(one["kind"], "Job");
    assert_eq!(one["spec"]["resources"]["memory"], "5120Mi");
    let yaml = c.run(&["get", "roles", "-o", "yaml"])?.ok()?;
    assert!(
        yaml.contains("kind: List") && yaml.contains("name: analytics"),
        "{yaml}"
    );
    let labelled = c.run(&[
        "-n",
        "analytics",
        "get",
        "tasks",
        "-l",
        "corral.dev/job=sparkie",
        "-o",
        "name",
    ]);
    let labelled = labelled?.ok()?;
    assert_eq!(labelled.trim(), "task.corral.dev/sparkie-0-0");
    let by_field = c.run(&[
        "-n",
        "analytics",
        "get",
        "tasks",
        "--field-selector",
        "status.phase=RUNNING",
    ])?;
    assert_eq!(by_field.code, 0);
    assert!(
        by_field
            .stderr
            .contains("No resources found in analytics namespace."),
        "{}",
        by_field.stderr
    );
    let all = c.run(&["get", "corral", "-A"])?.ok()?;
    assert!(
        all.contains("\n\nNAME ") || all.contains("\n\nNAMESPACE "),
        "kinds are separated: {all}"
    );

    // describe and why: with no node, the talk's task stays pending and says why.
    let described = c
        .run(&["-n", "analytics", "describe", "job", "sparkie"])?
        .ok()?;
    assert!(described.contains("Kind:         adhoc"), "{described}");
    assert!(described.contains("sparkie-0-0"), "{described}");
    let why = c.run(&["-n", "analytics", "why", "sparkie-0-0"])?.ok()?;
    assert!(why.starts_with("task sparkie-0-0 is PENDING"), "{why}");
    assert!(
        why.contains("  queue: ") && why.contains(" pending in role analytics (tier preemptible"),
        "a pending task's place in its role's queue: {why}"
    );
    let role = c.run(&["describe", "role", "analytics"])?.ok()?;
    assert!(
        role.contains("parent: eng"),
        "other kinds describe as YAML: {role}"
    );
    let events = c
        .run(&["-n", "analytics", "events", "--for", "job/sparkie"])?
        .ok()?;
    assert!(
        events.contains("task/sparkie-0-0") && events.contains("PENDING"),
        "{events}"
    );

    // A dry run creates nothing; bad input is refused with its field path.
    let extra = r#"{"apiVersion": "corral.dev/v1alpha1", "kind": "Role", "metadata": {"name": "ghost"}, "spec": {"weight": 1}}"#;
    c.run_stdin(&["apply", "--dry-run", "-f", "-"], extra)?
        .ok()?;
    assert_ne!(c.run(&["get", "role", "ghost"])?.code, 0);
    let bad = r#"{"apiVersion": "corral.dev/v1alpha1", "kind": "Role", "metadata": {"name": "bad"}, "spec": {"weight": -1}}"#;
    let r = c.run_stdin(&["apply", "-f", "-"], bad)?;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("Error from server (Invalid)") && r.stderr.contains("spec.weight"),
        "{}",
        r.stderr
    );

    // get -w prints the rows of objects as they change.
    let mut watch = Command::new(corral_bin()?)
        .args([
            "--kubeconfig",
            &s(&server.kubeconfig),
            "-n",
            "web",
            "get",
            "jobs",
            "-w",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let (tx, rx) = mpsc::channel();
    let out = watch.stdout.take().context("stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The initial table, then a change made elsewhere.
    let first = rx.recv_timeout(Duration::from_secs(30))?;
    assert!(first.starts_with("NAME"), "{first}");
    c.run(&["-n", "web", "delete", "job", "frontend", "--wait=false"])?
        .ok()?;
    let mut seen = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("frontend")
            && seen.lines().filter(|l| l.starts_with("frontend")).count() >= 2
        {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        seen.lines().filter(|l| l.starts_with("frontend")).count() >= 2,
        "{seen}"
    );

    // delete, then the object is gone: kubectl's words and exit codes.
    let r = c.run(&["-n", "analytics", "delete", "job", "sparkie"])?;
    assert_eq!(
        r.stdout.trim(),
        "job.corral.dev \"sparkie\" deleted",
        "{}",
        r.stderr
    );
    let r = c.run(&["-n", "analytics", "get", "job", "sparkie"])?;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr.trim(),
        "Error from server (NotFound): jobs.corral.dev \"sparkie\" not found"
    );
    let r = c.run(&["get", "deployments"])?;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("doesn't have a resource type \"deployments\""),
        "{}",
        r.stderr
    );
    Ok(())
}

#[test]
fn nodes_are_cordoned_and_uncordoned() -> Result<()> {
    let server = Server::start()?;
    let c = Corral::new(&server);
    c.run_stdin(
        &["apply", "-f", "-"],
        "apiVersion: corral.dev/v1alpha1\nkind: Node\nmetadata: {name: n1}\nspec: {attributes: {rack: r1}}\n",
    )?
    .ok()?;
    let unschedulable = || -> Result<bool> {
        let r = c.run(&["get", "node", "n1", "-o", "json"])?.ok()?;
        let v: Value = serde_json::from_str(&r)?;
        Ok(v["spec"]["unschedulable"] == true)
    };
    assert_eq!(
        c.run(&["node", "cordon", "n1"])?.ok()?.trim(),
        "node.corral.dev/n1 cordoned"
    );
    assert!(unschedulable()?);
    assert_eq!(
        c.run(&["node", "cordon", "n1"])?.ok()?.trim(),
        "node.corral.dev/n1 already cordoned"
    );
    assert_eq!(
        c.run(&["node", "uncordon", "n1"])?.ok()?.trim(),
        "node.corral.dev/n1 uncordoned"
    );
    assert!(!unschedulable()?);
    let missing = c.run(&["node", "cordon", "nope"])?;
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("nope") && missing.stderr.contains("not found"),
        "{}",
        missing.stderr
    );
    Ok(())
}
