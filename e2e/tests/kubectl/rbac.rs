//! The RBAC kinds with stock kubectl: `kubectl create clusterrole|role|
//! rolebinding|clusterrolebinding` (protobuf bodies), apply, get and delete;
//! `roles` alone still names Corral's Role, RBAC's is fully qualified.

use serde_json::Value;

use super::*;

#[test]
fn kubectl_creates_and_reads_rbac_objects() -> Result<()> {
    let (_server, k) = setup()?;
    let out = k
        .run(&[
            "create",
            "clusterrole",
            "team-edit",
            "--verb=get,list,create",
            "--resource=jobs.corral.dev,tasks.corral.dev",
        ])?
        .ok()?;
    assert!(
        out.contains("clusterrole.rbac.authorization.k8s.io/team-edit created"),
        "{out}"
    );
    k.run(&[
        "create",
        "clusterrole",
        "team-agg",
        "--aggregation-rule=team=edit",
    ])?
    .ok()?;
    k.run(&[
        "-n",
        "analytics",
        "create",
        "rolebinding",
        "team",
        "--clusterrole=team-edit",
        "--group=analytics-team",
        "--user=alice",
    ])?
    .ok()?;
    k.run(&[
        "-n",
        "analytics",
        "create",
        "role",
        "reader",
        "--verb=get",
        "--resource=secrets",
        "--resource-name=db",
    ])?
    .ok()?;
    k.run(&[
        "create",
        "clusterrolebinding",
        "ops",
        "--clusterrole=team-agg",
        "--group=ops",
    ])?
    .ok()?;
    // `use` of a Corral role is written as a manifest (kubectl's `create
    // role` allows only the verbs discovery lists, and `use` is RBAC's own).
    k.run_stdin(
        &["apply", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: use-analytics, namespace: analytics}\nrules:\n- {apiGroups: [corral.dev], resources: [roles], resourceNames: [analytics], verbs: [use]}\n",
    )?
    .ok()?;

    let binding: Value = serde_json::from_str(
        &k.run(&[
            "-n",
            "analytics",
            "get",
            "rolebinding",
            "team",
            "-o",
            "json",
        ])?
        .ok()?,
    )?;
    assert_eq!(binding["roleRef"]["name"], "team-edit");
    let subjects: Vec<(String, String)> = binding["subjects"]
        .as_array()
        .context("subjects")?
        .iter()
        .map(|s| (s["kind"].to_string(), s["name"].to_string()))
        .collect();
    assert!(
        subjects.contains(&("\"Group\"".into(), "\"analytics-team\"".into()))
            && subjects.contains(&("\"User\"".into(), "\"alice\"".into())),
        "{subjects:?}"
    );
    // Tables as kube-apiserver prints them: the role as Kind/name, and who
    // with -o wide.
    let wide = k
        .run(&[
            "-n",
            "analytics",
            "get",
            "rolebinding",
            "team",
            "-o",
            "wide",
        ])?
        .ok()?;
    let header = wide.lines().next().unwrap_or_default();
    for col in ["ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"] {
        assert!(header.contains(col), "{wide}");
    }
    assert!(
        wide.contains("ClusterRole/team-edit")
            && wide.contains("alice")
            && wide.contains("analytics-team"),
        "{wide}"
    );
    let agg: Value = serde_json::from_str(
        &k.run(&["get", "clusterrole", "team-agg", "-o", "json"])?
            .ok()?,
    )?;
    assert_eq!(
        agg["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]["team"],
        "edit"
    );
    let reader: Value = serde_json::from_str(
        &k.run(&[
            "-n",
            "analytics",
            "get",
            "roles.rbac.authorization.k8s.io",
            "reader",
            "-o",
            "json",
        ])?
        .ok()?,
    )?;
    assert_eq!(reader["rules"][0]["resourceNames"][0], "db");
    let rbac_roles = k
        .run(&[
            "-n",
            "analytics",
            "get",
            "roles.rbac.authorization.k8s.io",
            "-o",
            "name",
        ])?
        .ok()?;
    assert!(
        rbac_roles.contains("role.rbac.authorization.k8s.io/use-analytics")
            && rbac_roles.contains("role.rbac.authorization.k8s.io/reader"),
        "{rbac_roles}"
    );
    // `roles` alone is Corral's Role (cluster-scoped): none exist here.
    k.run_stdin(
        &["apply", "-f", "-"],
        "apiVersion: corral.dev/v1alpha1\nkind: Role\nmetadata: {name: analytics}\nspec: {weight: 1}\n",
    )?
    .ok()?;
    let roles = k.run(&["get", "roles", "-o", "name"])?.ok()?;
    assert_eq!(roles.trim(), "role.corral.dev/analytics");
    let bindings = k.run(&["get", "clusterrolebindings"])?.ok()?;
    assert!(
        bindings.contains("ops") && bindings.contains("team-agg"),
        "{bindings}"
    );
    k.run(&["delete", "clusterrolebinding", "ops"])?.ok()?;
    k.run(&["-n", "analytics", "delete", "rolebinding", "team"])?
        .ok()?;
    assert!(
        k.run(&["-n", "analytics", "get", "rolebindings", "-o", "name"])?
            .ok()?
            .trim()
            .is_empty()
    );
    Ok(())
}

/// Runs kubectl as `user` in `group` (impersonated by the administrator).
fn as_member(k: &Kubectl, user: &str, group: &str, args: &[&str]) -> Result<corral_e2e::Run> {
    let mut all = vec!["--as", user, "--as-group", group];
    all.extend_from_slice(args);
    k.run(&all)
}

#[test]
fn teams_use_their_namespace_and_role_and_nothing_else() -> Result<()> {
    let (_server, k) = setup()?;
    for f in ["01-teams.yaml", "access.yaml"] {
        apply_example(&k, f)?;
    }
    let alice = |args: &[&str]| as_member(&k, "alice", "analytics-team", args);
    let whoami = alice(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ])?
    .ok()?;
    assert_eq!(whoami, "alice");
    let yes = alice(&[
        "-n",
        "analytics",
        "auth",
        "can-i",
        "create",
        "jobs.corral.dev",
    ])?;
    assert_eq!(yes.stdout.trim(), "yes", "{}", yes.stderr);
    let no = alice(&["-n", "web", "auth", "can-i", "create", "jobs.corral.dev"])?;
    assert!(
        no.code == 1 && no.stdout.starts_with("no"),
        "{}{}",
        no.stdout,
        no.stderr
    );
    let list = alice(&["-n", "analytics", "auth", "can-i", "--list"])?.ok()?;
    assert!(list.contains("jobs.corral.dev"), "{list}");

    // Her team's job, on her team's role.
    let created = alice(&["apply", "-f", &s(&examples().join("talk-adhoc-job.yaml"))])?.ok()?;
    assert!(
        created.contains("job.corral.dev/sparkie created"),
        "{created}"
    );
    // Not the other team's namespace, nor its role.
    let refused = alice(&["-n", "web", "get", "jobs"])?;
    assert!(
        refused.code != 0
            && refused.stderr.contains(
                "jobs.corral.dev is forbidden: User \"alice\" cannot list resource \"jobs\" in API group \"corral.dev\" in the namespace \"web\""
            ),
        "{}",
        refused.stderr
    );
    let job = std::fs::read_to_string(examples().join("talk-adhoc-job.yaml"))?
        .replace("name: sparkie", "name: borrowed")
        .replace("role: analytics", "role: web");
    let r = k.run_stdin(
        &[
            "--as",
            "alice",
            "--as-group",
            "analytics-team",
            "apply",
            "-f",
            "-",
        ],
        &job,
    )?;
    assert!(
        r.code != 0 && r.stderr.contains("cannot use role \"web\""),
        "{}",
        r.stderr
    );
    // Nor more power than she holds.
    let r = alice(&[
        "create",
        "clusterrolebinding",
        "mine",
        "--clusterrole=cluster-admin",
        "--user=alice",
    ])?;
    assert!(
        r.code != 0 && r.stderr.contains("forbidden"),
        "{}",
        r.stderr
    );
    Ok(())
}

/// `corral credentials ARGS --out OUT` against `server`'s home.
fn issue_credentials(server: &Server, args: &[&str], out: &std::path::Path) -> Result<()> {
    let issued = std::process::Command::new(corral_bin()?)
        .arg("credentials")
        .args(args)
        .args(["--out", &s(out), "--home", &s(&server.home)])
        .output()?;
    anyhow::ensure!(issued.status.success(), "{issued:?}");
    Ok(())
}

/// Who `k`'s kubeconfig is, as `kubectl auth whoami` says.
fn username(k: &Kubectl) -> Result<String> {
    let me: Value = serde_json::from_str(&k.run(&["auth", "whoami", "-o", "json"])?.ok()?)?;
    Ok(me["status"]["userInfo"]["username"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[test]
fn a_node_credential_reaches_only_its_node() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let (server, admin) = setup()?;
    let n1 = server.home.join("n1.kubeconfig");
    issue_credentials(&server, &["node", "n1"], &n1)?;
    assert_eq!(std::fs::metadata(&n1)?.permissions().mode() & 0o777, 0o600);
    let node = Kubectl::with_kubeconfig(n1)?;
    assert_eq!(username(&node)?, "system:node:n1");
    let can = |what: &str| -> Result<String> {
        let out = node.run(&["auth", "can-i", "patch", what])?.stdout;
        Ok(out.split_whitespace().next().unwrap_or_default().to_owned())
    };
    assert_eq!(can("nodes.corral.dev/n1")?, "yes");
    assert_eq!(can("nodes.corral.dev/n2")?, "no");
    assert_eq!(can("jobs.corral.dev")?, "no");
    // Its own tasks only, listed by its node; no task of its making.
    node.run(&[
        "get",
        "tasks.corral.dev",
        "-A",
        "--field-selector",
        "spec.nodeName=n1",
    ])?
    .ok()?;
    for args in [
        &["get", "tasks.corral.dev", "-A"][..],
        &[
            "get",
            "tasks.corral.dev",
            "-A",
            "--field-selector",
            "spec.nodeName=n2",
        ],
        &["get", "secrets", "-n", "analytics"],
    ] {
        let refused = node.run(args)?;
        assert!(
            refused.code != 0 && refused.stderr.contains("Forbidden"),
            "{args:?}: {refused:?}"
        );
    }
    let task = "apiVersion: corral.dev/v1alpha1\nkind: Task\nmetadata: {name: t-0-0, namespace: analytics}\nspec: {job: t, role: analytics, instanceId: 0, resources: {cpus: 1, memory: 64Mi}, container: {image: x}}\n";
    let refused = node.run_stdin(&["create", "-f", "-"], task)?;
    assert!(
        refused.code != 0 && refused.stderr.contains("cannot create resource \"tasks\""),
        "{refused:?}"
    );
    // The administrator could; the node still cannot bind or report on it.
    admin.corral_role("analytics")?;
    admin.run_stdin(&["create", "-f", "-"], task)?.ok()?;
    let report = node.run(&[
        "-n",
        "analytics",
        "patch",
        "tasks.corral.dev",
        "t-0-0",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"RUNNING"}}"#,
    ])?;
    assert!(
        report.code != 0 && report.stderr.contains("Forbidden"),
        "{report:?}"
    );
    Ok(())
}

#[test]
fn the_audit_log_records_who_did_what_and_the_refusals() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("audit-policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: None\n  nonResourceURLs: [\"/api*\", \"/openapi*\", \"/version\"]\n- level: RequestResponse\n  resources: [{group: corral.dev, resources: [jobs]}]\n- level: Metadata\n",
    )?;
    let log = dir.path().join("audit").join("audit.log");
    let server = Server::start_with(&[
        "--audit-policy-file",
        &s(&policy),
        "--audit-log-path",
        &s(&log),
    ])?;
    let admin = Kubectl::new(&server)?;
    admin.run_stdin(&["apply", "-f", "-"], NAMESPACES)?.ok()?;
    let alice_kc = dir.path().join("alice.kubeconfig");
    issue_credentials(
        &server,
        &["user", "alice", "--group", "analytics-team"],
        &alice_kc,
    )?;
    let alice = Kubectl::with_kubeconfig(alice_kc)?;
    let refused = alice.run(&["-n", "analytics", "get", "jobs.corral.dev"])?;
    assert!(
        refused.code != 0 && refused.stderr.contains("Forbidden"),
        "{refused:?}"
    );
    admin
        .run(&["-n", "analytics", "get", "jobs.corral.dev", "--as", "bob"])
        .map(|r| r.code)?;

    let events: Vec<Value> = std::fs::read_to_string(&log)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let refusal = events
        .iter()
        .find(|e| e["user"]["username"] == "alice" && e["objectRef"]["resource"] == "jobs")
        .context("alice's refused list in the audit log")?;
    assert_eq!(refusal["stage"], "ResponseComplete");
    assert_eq!(refusal["verb"], "list");
    assert_eq!(refusal["level"], "RequestResponse");
    assert_eq!(refusal["objectRef"]["namespace"], "analytics");
    assert_eq!(refusal["responseStatus"]["code"], 403);
    assert_eq!(
        refusal["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
    assert_eq!(refusal["user"]["groups"][0], "analytics-team");
    assert!(
        refusal["userAgent"]
            .as_str()
            .is_some_and(|a| a.starts_with("kubectl"))
    );
    let as_bob = events
        .iter()
        .find(|e| {
            e["impersonatedUser"]["username"] == "bob" && e["objectRef"]["resource"] == "jobs"
        })
        .with_context(|| format!("the impersonated request in {events:?}"))?;
    assert_eq!(as_bob["user"]["username"], "corral-admin");
    assert_eq!(as_bob["responseStatus"]["code"], 403, "{as_bob}");
    // Discovery was left out by the policy; nothing was recorded at a stage it omits.
    assert!(events.iter().all(|e| e["stage"] != "RequestReceived"));
    assert!(
        events.iter().all(|e| !e["requestURI"]
            .as_str()
            .unwrap_or_default()
            .starts_with("/api?")
            && e["requestURI"] != "/api"),
        "{events:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&log)?.permissions().mode() & 0o777, 0o600);
    Ok(())
}

#[test]
fn an_agent_joins_with_a_bootstrap_token_and_runs_as_its_node() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("bootstrap.csv");
    std::fs::write(
        &tokens,
        "bootstrap-e2e-token,system:bootstrap:fleet,fleet,\"system:bootstrappers\"\n",
    )?;
    let server = Server::start_with(&["--token-file", &s(&tokens)])?;
    let admin = Kubectl::new(&server)?;
    // The bootstrap kubeconfig: the cluster's, with the bootstrap token.
    let admin_kc = std::fs::read_to_string(&server.kubeconfig)?;
    let token_line = admin_kc
        .lines()
        .find(|l| l.trim_start().starts_with("token:"))
        .context("the admin kubeconfig's token")?;
    let bootstrap = dir.path().join("bootstrap.kubeconfig");
    std::fs::write(
        &bootstrap,
        admin_kc.replace(token_line, "    token: bootstrap-e2e-token"),
    )?;
    // The token itself reaches nothing else.
    let refused =
        Kubectl::with_kubeconfig(bootstrap.clone())?.run(&["get", "tasks.corral.dev", "-A"])?;
    assert!(
        refused.code != 0 && refused.stderr.contains("Forbidden"),
        "{refused:?}"
    );

    let node_kc = dir.path().join("agent").join("node.kubeconfig");
    let log = std::fs::File::create(dir.path().join("agent.log"))?;
    let mut agent = std::process::Command::new(corral_bin()?)
        .args([
            "agent",
            "--bootstrap-kubeconfig",
            &s(&bootstrap),
            "--kubeconfig",
            &s(&node_kc),
        ])
        .args([
            "--node-name",
            "joined-1",
            "--runtimes",
            "simulated",
            "--log-listen",
            "none",
        ])
        .args([
            "--resources",
            "cpus=2,memory=4Gi,disk=10Gi",
            "--home",
            &s(dir.path()),
        ])
        .args(["--config-dir", &s(&dir.path().join("no-config"))])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let result = (|| -> Result<()> {
        wait_for(
            "the joined node to register",
            Duration::from_secs(30),
            || {
                Ok(admin
                    .run(&["get", "nodes.corral.dev", "joined-1", "-o", "name"])?
                    .code
                    == 0)
            },
        )?;
        assert_eq!(
            std::fs::metadata(&node_kc)?.permissions().mode() & 0o777,
            0o600
        );
        let node = Kubectl::with_kubeconfig(node_kc.clone())?;
        assert_eq!(username(&node)?, "system:node:joined-1");
        let text = std::fs::read_to_string(&node_kc)?;
        assert!(
            !text.contains("bootstrap-e2e-token"),
            "the node's kubeconfig holds no token"
        );
        Ok(())
    })();
    let _ = agent.kill();
    let _ = agent.wait();
    if result.is_err() {
        eprintln!(
            "{}",
            std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
        );
    }
    result
}
