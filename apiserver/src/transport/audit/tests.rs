use super::*;
use crate::transport::auth::AuthMethod;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn the_log_is_private_and_rotates_by_size_keeping_the_newest_backups() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("audit.log");
    let mut log = AuditLog::open(&path, 1, 2).expect("open");
    assert_eq!(
        std::fs::metadata(&path).expect("file").permissions().mode() & 0o777,
        0o600
    );
    let big = json!({"pad": "x".repeat(300 * 1024)});
    for _ in 0..12 {
        log.write(&big).expect("write");
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // The live file and at most two backups, each under a megabyte.
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&"audit.log".to_owned()));
    for n in &names {
        let len = std::fs::metadata(dir.path().join(n)).expect("file").len();
        assert!(len <= 1024 * 1024, "{n}: {len}");
        assert!(
            n == "audit.log" || (n.starts_with("audit-") && n.ends_with(".log")),
            "{n}"
        );
    }
}

fn auditor(path: &Path, policy: &str) -> Arc<Auditor> {
    Auditor::new(
        Policy::from_yaml(policy).expect("policy"),
        AuditLog::open(path, 0, 0).expect("log"),
    )
}

#[test]
fn a_refused_request_is_recorded_with_who_what_and_the_code() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("audit.log");
    let a = auditor(
        &path,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: RequestResponse}]\n",
    );
    let record = Record::new(
        a,
        "/apis/corral.dev/v1alpha1/namespaces/b/jobs".into(),
        &http::Method::POST,
        "127.0.0.1".parse().expect("ip"),
        Some("kubectl/v1.32.3".into()),
    );
    let alice = User {
        name: "alice".into(),
        groups: vec!["team-a".into()],
        method: AuthMethod::Token,
    };
    record.user(&alice, &alice);
    record.attributes(&Attributes {
        verb: "create".into(),
        group: "corral.dev".into(),
        resource: "jobs".into(),
        namespace: Some("b".into()),
        ..Attributes::default()
    });
    record.decision(false);
    let status = json!({"kind": "Status", "status": "Failure", "reason": "Forbidden", "message": "no", "code": 403});
    record.response_complete(403, Some(&status), Some(&status));
    let events = lines(&path);
    let stages: Vec<&str> = events
        .iter()
        .map(|e| e["stage"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(stages, ["RequestReceived", "ResponseComplete"]);
    let done = &events[1];
    assert_eq!(done["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(done["kind"], "Event");
    assert_eq!(done["auditID"], events[0]["auditID"]);
    assert_eq!(done["verb"], "create");
    assert_eq!(done["user"]["username"], "alice");
    assert_eq!(done["objectRef"]["resource"], "jobs");
    assert_eq!(done["objectRef"]["namespace"], "b");
    assert_eq!(done["responseStatus"]["code"], 403);
    assert_eq!(done["responseStatus"]["reason"], "Forbidden");
    assert_eq!(
        done["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
    assert_eq!(done["sourceIPs"][0], "127.0.0.1");
    assert_eq!(done["userAgent"], "kubectl/v1.32.3");
    assert_eq!(done["responseObject"]["reason"], "Forbidden");
}

#[test]
fn the_level_decides_what_is_kept() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("audit.log");
    let a = auditor(
        &path,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules: [{level: None, users: [quiet]}, {level: Metadata, verbs: [get]}, {level: Request}]\n",
    );
    let run = |name: &str, verb: &str, body: &[u8]| {
        let r = Record::new(
            a.clone(),
            "/apis/corral.dev/v1alpha1/jobs".into(),
            &http::Method::POST,
            "::1".parse().expect("ip"),
            None,
        );
        let u = User {
            name: name.into(),
            groups: Vec::new(),
            method: AuthMethod::Token,
        };
        r.user(&u, &u);
        r.attributes(&Attributes {
            verb: verb.into(),
            group: "corral.dev".into(),
            resource: "jobs".into(),
            ..Attributes::default()
        });
        r.decision(true);
        r.request_body(body);
        r.response_complete(201, None, Some(&json!({"kind": "Job"})));
    };
    run("quiet", "create", b"{}");
    run("alice", "get", b"");
    run(
        "alice",
        "create",
        br#"{"kind": "Job", "metadata": {"name": "x"}}"#,
    );
    let events = lines(&path);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["level"], "Metadata");
    assert!(events[0].get("requestObject").is_none());
    assert_eq!(events[1]["level"], "Request");
    assert_eq!(events[1]["requestObject"]["metadata"]["name"], "x");
    assert!(events[1].get("responseObject").is_none());
}
