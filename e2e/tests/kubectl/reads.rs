//! Reads through stock kubectl: get in every format, describe, explain,
//! diff, watches, waits and deletes that wait; the machine's own kubectl.

use super::*;

#[test]
fn get_prints_tables_names_and_formats() -> Result<()> {
    let (_server, k) = setup()?;
    k.run(&["apply", "-f", &s(&examples())])?.ok()?;
    let jobs = k.run(&["get", "jobs", "-A"])?.ok()?;
    let header = jobs.lines().next().context("no output")?;
    for col in ["NAMESPACE", "NAME", "KIND", "ROLE", "INSTANCES", "AGE"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        jobs.contains("sparkie") && jobs.contains("frontend") && jobs.contains("nightly-report"),
        "{jobs}"
    );
    let wide = k
        .run(&["get", "cj", "-n", "analytics", "-o", "wide"])?
        .ok()?;
    assert!(
        wide.lines().next().is_some_and(|h| h.contains("TIER")),
        "{wide}"
    );
    let by_category = k.run(&["get", "corral", "-A"])?.ok()?;
    assert!(
        by_category.contains("role.corral.dev/analytics")
            && by_category.contains("quota.corral.dev/web"),
        "{by_category}"
    );
    // `get all` shows the workloads (jobs and their tasks), as pods and
    // deployments in Kubernetes, and nothing else.
    let all = k
        .run(&["get", "all", "-n", "analytics", "-o", "name"])?
        .ok()?;
    assert!(all.lines().any(|l| l == "job.corral.dev/sparkie"), "{all}");
    assert!(
        all.lines()
            .all(|l| l.starts_with("job.corral.dev/") || l.starts_with("task.corral.dev/")),
        "{all}"
    );
    let json = k
        .run(&["get", "job", "sparkie", "-n", "analytics", "-o", "json"])?
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(v["spec"]["resources"]["memory"], "5120Mi");
    let yaml = k.run(&["get", "role", "analytics", "-o", "yaml"])?.ok()?;
    assert!(yaml.contains("parent: eng"), "{yaml}");
    k.run(&["label", "job", "sparkie", "-n", "analytics", "team=spark"])?
        .ok()?;
    let labelled = k
        .run(&["get", "jobs", "-A", "-l", "team=spark", "--show-labels"])?
        .ok()?;
    assert_eq!(labelled.lines().count(), 2, "{labelled}");
    assert!(labelled.contains("team=spark"));
    let none = k.run(&["get", "jobs", "-n", "default"])?;
    assert!(
        none.stderr
            .contains("No resources found in default namespace."),
        "{none:?}"
    );
    let missing = k.run(&["get", "job", "nope", "-n", "analytics"])?;
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .contains("Error from server (NotFound): jobs.corral.dev \"nope\" not found"),
        "{}",
        missing.stderr
    );
    Ok(())
}

#[test]
fn describe_explain_and_diff_work() -> Result<()> {
    let (_server, k) = setup()?;
    apply_example(&k, "01-teams.yaml")?;
    apply_example(&k, "talk-adhoc-job.yaml")?;
    let described = k
        .run(&["describe", "job", "sparkie", "-n", "analytics"])?
        .ok()?;
    assert!(
        described.contains("Name:")
            && described.contains("sparkie")
            && described.contains("Max Task Failures"),
        "{described}"
    );
    let explained = k.run(&["explain", "jobs.spec.tier"])?.ok()?;
    assert!(explained.contains("preemptible"), "{explained}");
    let changed = std::fs::read_to_string(examples().join("talk-adhoc-job.yaml"))?
        .replace("instances: 1", "instances: 2");
    let diff = k.run_stdin(&["diff", "-f", "-"], &changed)?;
    assert_eq!(diff.code, 1, "diff reports a change: {diff:?}");
    assert!(
        diff.stdout.contains("-  instances: 1") && diff.stdout.contains("+  instances: 2"),
        "{}",
        diff.stdout
    );
    let unchanged = k.run(&["diff", "-f", &s(&examples().join("talk-adhoc-job.yaml"))])?;
    assert_eq!(unchanged.code, 0, "{unchanged:?}");
    assert_eq!(
        k.run(&[
            "-n",
            "analytics",
            "get",
            "job",
            "sparkie",
            "-o",
            "jsonpath={.spec.instances}"
        ])?
        .ok()?,
        "1",
        "diff wrote"
    );
    Ok(())
}

#[test]
fn get_watch_delete_wait_see_the_changes() -> Result<()> {
    let (_server, k) = setup()?;
    apply_example(&k, "01-teams.yaml")?;
    let mut watch = k
        .command()
        .args([
            "get",
            "jobs",
            "-n",
            "analytics",
            "-w",
            "--output-watch-events",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = watch.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let job = s(&examples().join("talk-adhoc-job.yaml"));
    // The watch is established once its (empty) list is printed or a first event arrives;
    // apply until the ADDED shows, so no event is raced.
    k.run(&["apply", "-f", &job])?.ok()?;
    let mut lines = Vec::new();
    let expect = |want: &str, lines: &mut Vec<String>| -> Result<()> {
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(15))
                .with_context(|| format!("no {want} event; saw {lines:?}"))?;
            lines.push(line.clone());
            if line.starts_with(want) {
                return Ok(());
            }
        }
    };
    expect("ADDED", &mut lines)?;
    k.run(&[
        "-n",
        "analytics",
        "patch",
        "job",
        "sparkie",
        "--type=merge",
        "-p",
        r#"{"spec":{"instances":3}}"#,
    ])?
    .ok()?;
    expect("MODIFIED", &mut lines)?;
    k.run(&[
        "-n",
        "analytics",
        "patch",
        "job",
        "sparkie",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["corral.dev/hold"]}}"#,
    ])?
    .ok()?;
    // delete --wait=false returns at once; kubectl wait --for=delete follows the finalizer.
    k.run(&[
        "-n",
        "analytics",
        "delete",
        "job",
        "sparkie",
        "--wait=false",
    ])?
    .ok()?;
    let waiter = k
        .command()
        .args([
            "-n",
            "analytics",
            "wait",
            "--for=delete",
            "job/sparkie",
            "--timeout=30s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    k.run(&[
        "-n",
        "analytics",
        "patch",
        "job",
        "sparkie",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])?
    .ok()?;
    let waited = waiter.wait_with_output()?;
    assert!(
        waited.status.success(),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    expect("DELETED", &mut lines)?;
    watch.kill()?;
    watch.wait()?;
    Ok(())
}

#[test]
fn kubectl_wait_for_jsonpath_follows_status() -> Result<()> {
    let (_server, k) = setup_api_only()?;
    apply_example(&k, "talk-adhoc-job.yaml")?;
    wait_while_status_is_written(
        &k,
        "jsonpath={.status.phase}=Succeeded",
        r#"{"status":{"phase":"Succeeded"}}"#,
    )
}

/// client-go's streaming lists (the WatchListClient feature, which Go
/// controllers turn on): `kubectl wait` then starts its informer with a
/// watch that sends the current objects and the initial-events-end
/// bookmark. client-go falls back to a plain list when the server refuses
/// the watch, so the request log must show the streaming list answered.
#[test]
fn kubectl_wait_over_client_go_streaming_lists() -> Result<()> {
    let (_server, k) = setup_api_only()?;
    apply_example(&k, "talk-adhoc-job.yaml")?;
    let mut kubectl = k.command();
    kubectl
        .env("KUBE_FEATURE_WatchListClient", "true")
        .arg("-v=6");
    let log = wait_by_while_status_is_written(
        &k,
        kubectl,
        "jsonpath={.status.phase}=Succeeded",
        r#"{"status":{"phase":"Succeeded"}}"#,
    )?;
    let streamed = log.lines().any(|l| {
        l.contains("sendInitialEvents=true")
            && l.contains("resourceVersionMatch=NotOlderThan")
            && l.contains(" 200 OK")
    });
    assert!(streamed, "no streaming list was answered: {log}");
    Ok(())
}

/// The machine's `/usr/bin/kubectl` (a version dispatcher on these machines)
/// must work too; where it is absent there is nothing to check.
#[test]
fn the_machines_kubectl_works_too() -> Result<()> {
    let system = std::path::PathBuf::from("/usr/bin/kubectl");
    if !system.exists() {
        eprintln!("no /usr/bin/kubectl on this machine");
        return Ok(());
    }
    let server = Server::start()?;
    let k = Kubectl::with_binary(&server, system)?;
    k.run_stdin(&["apply", "-f", "-"], NAMESPACES)?.ok()?;
    let applied = k.run(&["apply", "-f", &s(&examples())])?.ok()?;
    assert!(
        applied.contains("job.corral.dev/sparkie created"),
        "{applied}"
    );
    let jobs = k.run(&["get", "jobs", "-A", "-o", "name"])?.ok()?;
    assert_eq!(jobs.lines().count(), EXAMPLE_JOBS, "{jobs}");
    Ok(())
}

/// kubectl's OpenAPI v2 path (protobuf, the one Argo CD also loads).
#[test]
fn explain_reads_the_openapi_v2_protobuf_document() -> Result<()> {
    let server = Server::start()?;
    let k = Kubectl::new(&server)?;
    let out = k
        .run(&[
            "explain",
            "tasks.spec.nodeName",
            "--output=plaintext-openapiv2",
        ])?
        .ok()?;
    assert!(
        out.contains("KIND:     Task") && out.contains("VERSION:  corral.dev/v1alpha1"),
        "{out}"
    );
    assert!(out.contains("FIELD:    nodeName <string>"), "{out}");
    Ok(())
}

/// The server's Prometheus metrics, as an operator reads them.
#[test]
fn get_raw_metrics_counts_the_requests() -> Result<()> {
    let server = Server::start()?;
    let k = Kubectl::new(&server)?;
    k.run(&["get", "namespaces"])?.ok()?;
    let metrics = k.run(&["get", "--raw", "/metrics"])?.ok()?;
    let listed = metrics
        .lines()
        .find(|l| {
            l.starts_with(r#"apiserver_request_total{verb="LIST",group="",resource="namespaces",subresource="",code="200"}"#)
        })
        .context("no count of namespace lists")?;
    let count: f64 = listed.rsplit(' ').next().context("no value")?.parse()?;
    assert!(count >= 1.0, "{listed}");
    assert!(
        metrics.contains(r#"apiserver_storage_objects{resource="namespaces"}"#),
        "{metrics}"
    );
    Ok(())
}

#[test]
fn wait_for_a_condition_and_a_plain_delete() -> Result<()> {
    let (_server, k) = setup_api_only()?;
    apply_example(&k, "talk-adhoc-job.yaml")?;
    let status = r#"{"status":{"phase":"Succeeded","conditions":[{"type":"Complete","status":"True","reason":"AllInstancesFinished","message":"every instance finished"}]}}"#;
    wait_while_status_is_written(&k, "condition=Complete", status)?;
    // A plain delete waits until the object is gone.
    let deleted = k
        .run(&["-n", "analytics", "delete", "job", "sparkie"])?
        .ok()?;
    assert_eq!(deleted.trim(), "job.corral.dev \"sparkie\" deleted");
    assert_eq!(
        k.run(&["-n", "analytics", "get", "job", "sparkie"])?.code,
        1
    );
    Ok(())
}
