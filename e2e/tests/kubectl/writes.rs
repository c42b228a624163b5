//! Writes through stock kubectl: apply (client- and server-side), patch,
//! annotate, replace, scale and `auth`.

use super::*;

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
fn patch_annotate_replace_and_validation_errors() -> Result<()> {
    let (_server, k) = setup()?;
    apply_example(&k, "talk-adhoc-job.yaml")?;
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
    // A replace carries the version it read: the job controller writing the
    // job's status in between makes it a 409, and a user reads again.
    let mut replaced = None;
    for _ in 0..5 {
        let live = k
            .run(&[&ns[..], &["get", "job", "sparkie", "-o", "json"]].concat())?
            .ok()?;
        let edited = live.replace("\"instances\": 2", "\"instances\": 5");
        let r = k.run_stdin(&["replace", "-f", "-"], &edited)?;
        if r.code == 0 {
            replaced = Some(r);
            break;
        }
        assert!(r.stderr.contains("Conflict"), "{r:?}");
    }
    replaced.context("the replace kept conflicting")?;
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
    apply_example(&k, "talk-adhoc-job.yaml")?;
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
    // --list asks for every rule: the admin may do anything anywhere.
    let list = k
        .run(&["auth", "can-i", "--list", "-n", "analytics"])?
        .ok()?;
    let rows: Vec<Vec<&str>> = list
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.contains(&vec!["*.*", "[]", "[]", "[*]"]),
        "no rule for every resource: {list}"
    );
    assert!(
        rows.contains(&vec!["[*]", "[]", "[*]"]),
        "no rule for every path: {list}"
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
    k.corral_role("analytics")?;
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
    let teams = s(&examples().join("01-teams.yaml"));
    k.run(&["apply", "-f", &teams])?.ok()?;
    let migrated = k.run(&["apply", "--server-side", "-f", &teams])?.ok()?;
    assert!(
        migrated.contains("role.corral.dev/analytics serverside-applied"),
        "{migrated}"
    );
    Ok(())
}

/// kubectl's Secret generators and a Secret written with `stringData` are
/// stored as kube-apiserver stores them; `delete --cascade=orphan` keeps the
/// dependents and removes the owner from their ownerReferences.
#[test]
fn secrets_and_orphaning_deletes() -> Result<()> {
    let (server, k) = setup_api_only()?;
    let ns = ["-n", "web"];
    let pki = server.home.join("pki");
    let (cert, key) = (s(&pki.join("server.crt")), s(&pki.join("server.key")));
    k.run(
        &[
            &ns[..],
            &["create", "secret", "generic", "plain", "--from-literal=a=b"],
        ]
        .concat(),
    )?
    .ok()?;
    k.run(
        &[
            &ns[..],
            &[
                "create", "secret", "tls", "serving", "--cert", &cert, "--key", &key,
            ],
        ]
        .concat(),
    )?
    .ok()?;
    k.run_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Secret\nmetadata: {name: creds, namespace: web}\nstringData: {user: admin}\n",
    )?
    .ok()?;
    let listed = k
        .run(
            &[
                &ns[..],
                &[
                    "get",
                    "secrets",
                    "-o",
                    "jsonpath={range .items[*]}{.metadata.name}={.type}:{.data.user} {end}",
                ],
            ]
            .concat(),
        )?
        .ok()?;
    assert_eq!(
        listed.trim(),
        "creds=Opaque:YWRtaW4= plain=Opaque: serving=kubernetes.io/tls:"
    );
    let missing = k.run(
        &[
            &ns[..],
            &[
                "create",
                "secret",
                "generic",
                "half",
                "--type=kubernetes.io/tls",
                "--from-literal=tls.crt=x",
            ],
        ]
        .concat(),
    )?;
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("data[tls.key]: Required value"),
        "{}",
        missing.stderr
    );

    apply_example(&k, "talk-adhoc-job.yaml")?;
    let jsonpath = |what: &str| format!("jsonpath={what}");
    let uid = k
        .run(&[
            "-n",
            "analytics",
            "get",
            "job",
            "sparkie",
            "-o",
            &jsonpath("{.metadata.uid}"),
        ])?
        .ok()?;
    let task = format!(
        "apiVersion: corral.dev/v1alpha1\nkind: Task\nmetadata:\n  name: sparkie-0-0\n  namespace: analytics\n  ownerReferences: [{{apiVersion: corral.dev/v1alpha1, kind: Job, name: sparkie, uid: {uid}}}]\nspec: {{job: sparkie, role: analytics, instanceId: 0, resources: {{cpus: 1, memory: 1Gi}}, container: {{image: busybox}}}}\n"
    );
    k.run_stdin(&["apply", "-f", "-"], &task)?.ok()?;
    k.run(&[
        "-n",
        "analytics",
        "delete",
        "job",
        "sparkie",
        "--cascade=orphan",
    ])?
    .ok()?;
    let left = k
        .run(&[
            "-n",
            "analytics",
            "get",
            "jobs,tasks",
            "-o",
            &jsonpath(
                "{range .items[*]}{.kind}/{.metadata.name}:{.metadata.ownerReferences} {end}",
            ),
        ])?
        .ok()?;
    assert_eq!(left.trim(), "Task/sparkie-0-0:");
    Ok(())
}

/// An event written through events.k8s.io/v1 (as kube-runtime's Recorder
/// and client-go's events library write them) shows in `kubectl describe`
/// and `kubectl get events`, which read core/v1.
#[test]
fn events_written_through_events_k8s_io_show_in_describe() -> Result<()> {
    let (_server, k) = setup_api_only()?;
    apply_example(&k, "talk-adhoc-job.yaml")?;
    let ns = ["-n", "analytics"];
    let uid = k
        .run(
            &[
                &ns[..],
                &["get", "job", "sparkie", "-o", "jsonpath={.metadata.uid}"],
            ]
            .concat(),
        )?
        .ok()?;
    let event = format!(
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {{name: sparkie.1, namespace: analytics}}\neventTime: \"2026-11-30T10:00:00.000000Z\"\nreportingController: example.com/operator\nreportingInstance: operator-0\naction: Reconcile\nreason: Resized\ntype: Warning\nnote: resized by the operator\nregarding: {{apiVersion: corral.dev/v1alpha1, kind: Job, name: sparkie, namespace: analytics, uid: {uid}}}\n"
    );
    k.run_stdin(&["create", "-f", "-"], &event)?.ok()?;
    let described = k
        .run(&[&ns[..], &["describe", "job", "sparkie"]].concat())?
        .ok()?;
    let events = described
        .split("Events:")
        .nth(1)
        .context("describe printed no events")?;
    assert!(
        events.contains("Warning  Resized") && events.contains("resized by the operator"),
        "{described}"
    );
    let listed = k.run(&[&ns[..], &["get", "events"]].concat())?.ok()?;
    assert!(listed.contains("job/sparkie"), "{listed}");
    let through_v1 = k
        .run(
            &[
                &ns[..],
                &[
                    "get",
                    "events.v1.events.k8s.io",
                    "-o",
                    "jsonpath={.items[*].note}",
                ],
            ]
            .concat(),
        )?
        .ok()?;
    assert_eq!(through_v1, "resized by the operator");
    Ok(())
}

#[test]
fn an_oversized_object_gets_413_over_http2() -> Result<()> {
    let (_server, k) = setup()?;
    // kubectl speaks HTTP/2 to a TLS server; a body past the 3 MiB limit
    // must get the 413 Status, not a reset stream.
    for mb in [4, 8] {
        let manifest = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big, namespace: default}}\ndata:\n  data: {}\n",
            "x".repeat(mb * 1024 * 1024)
        );
        for verb in [&["apply", "-f", "-"][..], &["create", "-f", "-"][..]] {
            let run = k.run_stdin(verb, &manifest)?;
            assert_ne!(run.code, 0, "{run:?}");
            assert!(
                run.stderr.contains("Request entity too large")
                    && !run.stderr.contains("stream error"),
                "{mb} MiB, {verb:?}: {}",
                run.stderr
            );
        }
    }
    // The connection is still good for the next request.
    k.run(&["get", "configmaps", "-n", "default"])?.ok()?;
    Ok(())
}
