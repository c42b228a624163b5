//! The `corral server` binary under kubectl: a clean SIGTERM, real etcd, the
//! scheduler in the server, and a simulated agent running the talk's job.

use super::*;

#[test]
fn the_server_stops_cleanly_on_sigterm_and_keeps_its_data() -> Result<()> {
    let home = tempfile::tempdir()?;
    let server = Server::start_in(home.path(), &[])?;
    let k = Kubectl::new(&server)?;
    apply_example(&k, "01-teams.yaml")?;
    // A watch open across the shutdown ends cleanly, at once: kubectl
    // prints what it saw and exits 0, and the server does not wait on it.
    let mut watch = k
        .command()
        .args(["get", "roles", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut listed = BufReader::new(watch.stdout.take().context("watch stdout")?).lines();
    for _ in 0..3 {
        listed.next().context("the watch ended early")??;
    }
    let stopping = std::time::Instant::now();
    let status = server.stop()?;
    assert!(status.success(), "exit status {status}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "the server took {:?} to stop with a watch open",
        stopping.elapsed()
    );
    let ended = watch.wait()?;
    assert!(ended.success(), "kubectl get -w: {ended}");
    let restarted = Server::start_in(home.path(), &[])?;
    let k2 = Kubectl::new(&restarted)?;
    wait_for(
        "the restarted server to answer",
        Duration::from_secs(10),
        || Ok(k2.run(&["get", "roles"])?.code == 0),
    )?;
    let roles = k2.run(&["get", "roles", "-o", "name"])?.ok()?;
    assert_eq!(roles.lines().count(), 3, "{roles}");
    Ok(())
}

/// The same binary over a real etcd instead of the embedded store.
#[test]
fn the_server_works_over_real_etcd() -> Result<()> {
    let etcd = corral_store::testing::EtcdServer::start()?;
    let endpoint = etcd.endpoint().trim_start_matches("http://").to_owned();
    let home = tempfile::tempdir()?;
    let store = format!("etcd://{endpoint}");
    let server = Server::start_in(home.path(), &["--store", &store])?;
    let k = Kubectl::new(&server)?;
    k.run_stdin(&["apply", "-f", "-"], NAMESPACES)?.ok()?;
    let applied = k.run(&["apply", "-f", &s(&examples())])?.ok()?;
    assert!(
        applied.contains("job.corral.dev/frontend created"),
        "{applied}"
    );
    assert!(
        k.run(&["apply", "-f", &s(&examples())])?
            .ok()?
            .lines()
            .all(|l| l.ends_with("unchanged"))
    );
    let jobs = k.run(&["get", "jobs", "-A", "-o", "name"])?.ok()?;
    assert_eq!(jobs.lines().count(), EXAMPLE_JOBS, "{jobs}");
    k.run(&["-n", "web", "delete", "job", "frontend"])?.ok()?;
    assert_eq!(
        k.run(&["get", "jobs", "-A", "-o", "name"])?
            .ok()?
            .lines()
            .count(),
        EXAMPLE_JOBS - 1
    );
    let status = server.stop()?;
    assert!(status.success());
    Ok(())
}

/// The server's allocation loop binds a task to a (simulated) node.
#[test]
fn the_scheduler_in_the_server_binds_tasks_to_nodes() -> Result<()> {
    let server = Server::start()?;
    let k = Kubectl::new(&server)?;
    let node = "apiVersion: corral.dev/v1alpha1\nkind: Node\nmetadata: {name: n1}\nspec: {attributes: {rack: r2}}\n";
    k.run_stdin(&["apply", "-f", "-"], node)?.ok()?;
    k.corral_role("analytics")?;
    let status = r#"{"status":{"allocatable":{"cpus":4,"memory":"16Gi"},"conditions":[{"type":"Ready","status":"True","reason":"AgentReady"}]}}"#;
    k.run(&[
        "patch",
        "node.corral.dev",
        "n1",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ])?
    .ok()?;
    let task = "apiVersion: corral.dev/v1alpha1\nkind: Task\nmetadata: {name: sparkie-0, namespace: default}\nspec:\n  job: sparkie\n  role: analytics\n  instanceId: 0\n  resources: {cpus: 1, memory: 5120Mi}\n  container: {image: docker.io/library/sparkie:image}\n  constraints: {attributes: [{name: rack, operator: NotIn, values: [r1]}]}\n";
    k.run_stdin(&["apply", "-f", "-"], task)?.ok()?;
    k.run(&[
        "wait",
        "--for=jsonpath={.status.phase}=ASSIGNED",
        "task/sparkie-0",
        "--timeout=30s",
    ])?
    .ok()?;
    assert_eq!(
        k.run(&[
            "get",
            "task",
            "sparkie-0",
            "-o",
            "jsonpath={.spec.nodeName}"
        ])?
        .ok()?,
        "n1"
    );
    let table = k.run(&["get", "tasks"])?.ok()?;
    assert!(
        table.contains("ASSIGNED") && table.contains("n1"),
        "{table}"
    );
    Ok(())
}

/// The binaries together: `corral server` and `corral agent` standing in for
/// three simulated nodes run the talk's job to the end.
#[test]
fn server_and_simulated_agent_run_the_talks_job() -> Result<()> {
    let (server, k) = setup()?;
    let log = std::fs::File::create(server.home.join("agent.log"))?;
    let mut agent = std::process::Command::new(corral_e2e::corral_bin()?)
        .args([
            "agent",
            "--node-name",
            "sim",
            "--simulate-nodes",
            "3",
            "--runtimes",
            "simulated",
        ])
        .args([
            "--resources",
            "cpus=8,memory=32Gi,disk=100Gi",
            "--attributes",
            "rack=r2",
            "--kubeconfig",
        ])
        .arg(&server.kubeconfig)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let result = (|| -> Result<()> {
        wait_for("three simulated nodes", Duration::from_secs(30), || {
            Ok(k.run(&["get", "cn", "-o", "name"])?.stdout.lines().count() == 3)
        })?;
        apply_example(&k, "01-teams.yaml")?;
        let job = std::fs::read_to_string(examples().join("talk-adhoc-job.yaml"))?.replace(
            "  namespace: analytics\n",
            "  namespace: analytics\n  annotations: {corral.dev/simulate-duration: 300ms}\n",
        );
        k.run_stdin(&["apply", "-f", "-"], &job)?.ok()?;
        k.run(&[
            "-n",
            "analytics",
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "job/sparkie",
            "--timeout=60s",
        ])?
        .ok()?;
        let phase = k
            .run(&[
                "-n",
                "analytics",
                "get",
                "task",
                "sparkie-0-0",
                "-o",
                "jsonpath={.status.phase}",
            ])?
            .ok()?;
        assert_eq!(phase, "FINISHED");
        Ok(())
    })();
    let _ = agent.kill();
    let _ = agent.wait();
    if result.is_err() {
        eprintln!(
            "agent log:\n{}",
            std::fs::read_to_string(server.home.join("agent.log")).unwrap_or_default()
        );
    }
    result
}

#[test]
fn the_server_reaches_etcd_over_tls_with_a_client_certificate() -> Result<()> {
    // etcd serves TLS and requires client certificates from one CA.
    let dir = tempfile::tempdir()?;
    let pki = corral_apiserver::transport::pki::Pki::load_or_create(
        &dir.path().join("etcd-pki"),
        &["127.0.0.1".to_owned()],
    )?;
    let file = |name: &str, pem: &str| -> Result<std::path::PathBuf> {
        let path = dir.path().join(name);
        std::fs::write(&path, pem)?;
        Ok(path)
    };
    let etcd = corral_store::testing::EtcdServer::start_tls(&corral_store::testing::ServingTls {
        cert: file("etcd.crt", &pki.server_cert_pem)?,
        key: file("etcd.key", &pki.server_key_pem)?,
        client_ca: file("ca.crt", &pki.ca_pem)?,
    })?;
    let (cert, key) = pki.issue_client(
        "corral-apiserver",
        &[],
        jiff::Timestamp::now(),
        jiff::SignedDuration::from_hours(1),
    )?;
    let (ca, cert, key) = (
        s(&file("ca.crt", &pki.ca_pem)?),
        s(&file("client.crt", &cert)?),
        s(&file("client.key", &key)?),
    );
    let store = format!("etcd://{}", etcd.endpoint().trim_start_matches("https://"));
    let home = tempfile::tempdir()?;
    let server = Server::start_in(
        home.path(),
        &[
            "--store",
            &store,
            "--etcd-cafile",
            &ca,
            "--etcd-certfile",
            &cert,
            "--etcd-keyfile",
            &key,
        ],
    )?;
    let k = Kubectl::new(&server)?;
    k.run_stdin(&["apply", "-f", "-"], NAMESPACES)?.ok()?;
    k.run(&["create", "configmap", "over-tls", "-n", "default"])?
        .ok()?;
    let got = k
        .run(&[
            "get",
            "configmap",
            "over-tls",
            "-n",
            "default",
            "-o",
            "name",
        ])?
        .ok()?;
    assert_eq!(got.trim(), "configmap/over-tls");
    assert!(server.stop()?.success());
    Ok(())
}
