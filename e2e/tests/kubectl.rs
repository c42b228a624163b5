//! Stock kubectl 1.32.3 against the `corral server` binary.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use corral_e2e::{Kubectl, Server, examples, s, wait_for};

const NAMESPACES: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: analytics}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: web}\n";

fn setup() -> Result<(Server, Kubectl)> {
    let server = Server::start()?;
    let k = Kubectl::new(&server)?;
    k.run_stdin(&["apply", "-f", "-"], NAMESPACES)?.ok()?;
    Ok((server, k))
}

/// The API server alone (`--no-controllers`), for tests that write status by
/// hand as a controller would.
fn setup_api_only() -> Result<(Server, Kubectl)> {
    let server = Server::start_with(&["--no-controllers"])?;
    let k = Kubectl::new(&server)?;
    k.run_stdin(&["apply", "-f", "-"], NAMESPACES)?.ok()?;
    Ok((server, k))
}

#[test]
fn apply_is_created_then_unchanged_then_configured() -> Result<()> {
    let (_server, k) = setup()?;
    let dir = s(&examples());
    let first = k.run(&["apply", "-f", &dir])?.ok()?;
    assert!(first.contains("job.corral.dev/sparkie created"), "{first}");
    assert!(
        first.contains("role.corral.dev/analytics created"),
        "{first}"
    );
    assert!(
        first.contains("reservation.corral.dev/analytics-on-n1 created"),
        "{first}"
    );
    let second = k.run(&["apply", "-f", &dir])?.ok()?;
    assert!(
        second.lines().all(|l| l.ends_with(" unchanged")),
        "{second}"
    );
    let changed = std::fs::read_to_string(examples().join("talk-adhoc-job.yaml"))?
        .replace("priority: 0", "priority: 3");
    let third = k.run_stdin(&["apply", "-f", "-"], &changed)?.ok()?;
    assert_eq!(third.trim(), "job.corral.dev/sparkie configured");
    let prio = k
        .run(&[
            "-n",
            "analytics",
            "get",
            "job",
            "sparkie",
            "-o",
            "jsonpath={.spec.priority} {.metadata.generation}",
        ])?
        .ok()?;
    assert_eq!(prio, "3 2");
    Ok(())
}

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
    k.run(&["apply", "-f", &s(&examples().join("teams.yaml"))])?
        .ok()?;
    k.run(&["apply", "-f", &s(&examples().join("talk-adhoc-job.yaml"))])?
        .ok()?;
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
fn patch_annotate_replace_and_validation_errors() -> Result<()> {
    let (_server, k) = setup()?;
    k.run(&["apply", "-f", &s(&examples().join("talk-adhoc-job.yaml"))])?
        .ok()?;
    let ns = ["-n", "analytics"];
    k.run(
        &[
            &ns[..],
            &[
                "patch",
                "job",
                "sparkie",
                "--type=merge",
                "-p",
                r#"{"spec":{"instances":2}}"#,
            ],
        ]
        .concat(),
    )?
    .ok()?;
    k.run(
        &[
            &ns[..],
            &[
                "patch",
                "job",
                "sparkie",
                "--type=json",
                "-p",
                r#"[{"op":"replace","path":"/spec/priority","value":7}]"#,
            ],
        ]
        .concat(),
    )?
    .ok()?;
    k.run(&[&ns[..], &["annotate", "job", "sparkie", "owner=alice"]].concat())?
        .ok()?;
    let got = k
        .run(
            &[
                &ns[..],
                &[
                    "get",
                    "job",
                    "sparkie",
                    "-o",
                    "jsonpath={.spec.instances} {.spec.priority} {.metadata.annotations.owner}",
                ],
            ]
            .concat(),
        )?
        .ok()?;
    assert_eq!(got, "2 7 alice");
    let live = k
        .run(&[&ns[..], &["get", "job", "sparkie", "-o", "json"]].concat())?
        .ok()?;
    let replaced = live.replace("\"instances\": 2", "\"instances\": 5");
    k.run_stdin(&["replace", "-f", "-"], &replaced)?.ok()?;
    let bad = k.run(
        &[
            &ns[..],
            &[
                "patch",
                "job",
                "sparkie",
                "--type=merge",
                "-p",
                r#"{"spec":{"resources":{"cpus":0}}}"#,
            ],
        ]
        .concat(),
    )?;
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr
            .contains("spec.resources.cpus: Invalid value: 0: must be greater than zero"),
        "{}",
        bad.stderr
    );
    let immutable = k.run(
        &[
            &ns[..],
            &[
                "patch",
                "job",
                "sparkie",
                "--type=merge",
                "-p",
                r#"{"spec":{"kind":"service"}}"#,
            ],
        ]
        .concat(),
    )?;
    assert!(
        immutable.stderr.contains("field is immutable"),
        "{}",
        immutable.stderr
    );
    let typo = std::fs::read_to_string(examples().join("talk-adhoc-job.yaml"))?
        .replace("maxTaskFailures", "maxTaskFailure");
    let strict = k.run_stdin(&["apply", "-f", "-"], &typo)?;
    assert_eq!(strict.code, 1);
    assert!(
        strict
            .stderr
            .contains("unknown field \"spec.maxTaskFailure\""),
        "{}",
        strict.stderr
    );
    Ok(())
}

#[test]
fn kubectl_scale_changes_a_jobs_instances() -> Result<()> {
    let (_server, k) = setup_api_only()?;
    k.run(&["apply", "-f", &s(&examples().join("talk-adhoc-job.yaml"))])?
        .ok()?;
    let ns = ["-n", "analytics"];
    let scaled = k
        .run(
            &[
                &ns[..],
                &["scale", "job.corral.dev/sparkie", "--replicas=3"],
            ]
            .concat(),
        )?
        .ok()?;
    assert!(scaled.contains("job.corral.dev/sparkie scaled"), "{scaled}");
    let instances = |k: &Kubectl| -> Result<String> {
        k.run(
            &[
                &ns[..],
                &["get", "job", "sparkie", "-o", "jsonpath={.spec.instances}"],
            ]
            .concat(),
        )?
        .ok()
    };
    assert_eq!(instances(&k)?, "3");
    // --current-replicas is a precondition: a mismatch changes nothing.
    let stale = k.run(
        &[
            &ns[..],
            &[
                "scale",
                "job/sparkie",
                "--current-replicas=1",
                "--replicas=5",
            ],
        ]
        .concat(),
    )?;
    assert_ne!(stale.code, 0, "{}", stale.stdout);
    assert_eq!(instances(&k)?, "3");
    let raw = k
        .run(&[
            "get",
            "--raw",
            "/apis/corral.dev/v1alpha1/namespaces/analytics/jobs/sparkie/scale",
        ])?
        .ok()?;
    let scale: serde_json::Value = serde_json::from_str(&raw)?;
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    Ok(())
}

#[test]
fn kubectl_auth_can_i_and_whoami_ask_the_server() -> Result<()> {
    let (_server, k) = setup_api_only()?;
    let yes = k
        .run(&[
            "auth",
            "can-i",
            "create",
            "jobs.corral.dev",
            "-n",
            "analytics",
        ])?
        .ok()?;
    assert_eq!(yes.trim(), "yes");
    assert_eq!(
        k.run(&["auth", "can-i", "get", "/version"])?.ok()?.trim(),
        "yes"
    );
    let me = k.run(&["auth", "whoami", "-o", "json"])?.ok()?;
    let me: serde_json::Value = serde_json::from_str(&me)?;
    assert_eq!(me["kind"], "SelfSubjectReview");
    assert_eq!(me["status"]["userInfo"]["username"], "corral-admin");
    Ok(())
}

#[test]
fn server_side_apply_creates_and_updates_under_its_field_manager() -> Result<()> {
    let (_server, k) = setup()?;
    let job = std::fs::read_to_string(examples().join("talk-adhoc-job.yaml"))?;
    let created = k
        .run_stdin(
            &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
            &job,
        )?
        .ok()?;
    assert!(created.contains("serverside-applied"), "{created}");
    let again = k
        .run_stdin(
            &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
            &job.replace("priority: 0", "priority: 1"),
        )?
        .ok()?;
    assert!(again.contains("serverside-applied"), "{again}");
    let managers = k
        .run(&[
            "-n",
            "analytics",
            "get",
            "job",
            "sparkie",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ])?
        .ok()?;
    assert!(managers.contains("alice"), "{managers}");
    // Another manager changing alice's field conflicts; --force-conflicts takes it over.
    let bob = job.replace("priority: 0", "priority: 9");
    let conflict = k.run_stdin(
        &["apply", "--server-side", "--field-manager=bob", "-f", "-"],
        &bob,
    )?;
    assert_eq!(conflict.code, 1, "{conflict:?}");
    assert!(
        conflict.stderr.contains("conflict with \"alice\"")
            && conflict.stderr.contains(".spec.priority"),
        "{}",
        conflict.stderr
    );
    k.run_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=bob",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &bob,
    )?
    .ok()?;
    let prio = k
        .run(&[
            "-n",
            "analytics",
            "get",
            "job",
            "sparkie",
            "-o",
            "jsonpath={.spec.priority}",
        ])?
        .ok()?;
    assert_eq!(prio, "9");
    // Migrating from client-side apply: kubectl rewrites managedFields itself.
    let teams = s(&examples().join("teams.yaml"));
    k.run(&["apply", "-f", &teams])?.ok()?;
    let migrated = k.run(&["apply", "--server-side", "-f", &teams])?.ok()?;
    assert!(
        migrated.contains("role.corral.dev/analytics serverside-applied"),
        "{migrated}"
    );
    Ok(())
}

#[test]
fn get_watch_delete_wait_see_the_changes() -> Result<()> {
    let (_server, k) = setup()?;
    k.run(&["apply", "-f", &s(&examples().join("teams.yaml"))])?
        .ok()?;
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
    k.run(&["apply", "-f", &s(&examples().join("talk-adhoc-job.yaml"))])?
        .ok()?;
    let waiter = k
        .command()
        .args([
            "-n",
            "analytics",
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "job/sparkie",
            "--timeout=30s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Status is written through the status subresource, as a controller would.
    k.run(&[
        "-n",
        "analytics",
        "patch",
        "job",
        "sparkie",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Succeeded"}}"#,
    ])?
    .ok()?;
    let out = waiter.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "kubectl wait failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));
    Ok(())
}

#[test]
fn the_server_stops_cleanly_on_sigterm_and_keeps_its_data() -> Result<()> {
    let home = tempfile::tempdir()?;
    let server = Server::start_in(home.path(), &[])?;
    let k = Kubectl::new(&server)?;
    k.run(&["apply", "-f", &s(&examples().join("teams.yaml"))])?
        .ok()?;
    let status = server.stop()?;
    assert!(status.success(), "exit status {status}");
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

/// The jobs under `examples/`.
const EXAMPLE_JOBS: usize = 5;

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

#[test]
fn wait_for_a_condition_and_a_plain_delete() -> Result<()> {
    let (_server, k) = setup_api_only()?;
    k.run(&["apply", "-f", &s(&examples().join("talk-adhoc-job.yaml"))])?
        .ok()?;
    let waiter = k
        .command()
        .args([
            "-n",
            "analytics",
            "wait",
            "--for=condition=Complete",
            "job/sparkie",
            "--timeout=30s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let status = r#"{"status":{"phase":"Succeeded","conditions":[{"type":"Complete","status":"True","reason":"AllInstancesFinished","message":"every instance finished"}]}}"#;
    k.run(&[
        "-n",
        "analytics",
        "patch",
        "job",
        "sparkie",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ])?
    .ok()?;
    let out = waiter.wait_with_output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));
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
        k.run(&["apply", "-f", &s(&examples().join("teams.yaml"))])?
            .ok()?;
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
