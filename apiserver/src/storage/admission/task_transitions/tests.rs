use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::kinds::catalog::Catalog;
use crate::storage::registry::Requester;
use crate::transport::auth::{AuthMethod, Authorizer, User};

/// Allows everything but `create` on `tasks/binding` unless `binder`.
#[derive(Debug)]
struct Binders;

impl Authorizer for Binders {
    fn allows(&self, user: &User, a: &Attributes) -> bool {
        a.subresource.as_deref() != Some("binding") || user.name == "scheduler"
    }
}

fn user(name: &str, groups: &[&str]) -> WriteOptions {
    WriteOptions {
        requester: Some(Requester {
            user: User {
                name: name.into(),
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                method: AuthMethod::Token,
            },
            authz: Arc::new(Binders),
        }),
        ..WriteOptions::default()
    }
}

fn task(node: Option<&str>, phase: &str) -> Value {
    json!({"metadata": {"name": "t", "namespace": "a"},
           "spec": {"nodeName": node}, "status": {"phase": phase}})
}

#[test]
fn phases_move_as_the_state_machine_does_at_the_hands_of_their_reporters() {
    let registry = Catalog::standard();
    let desc = registry
        .find("corral.dev", "v1alpha1", "tasks")
        .expect("tasks");
    let n1 = user("system:node:n1", &["system:nodes"]);
    let n2 = user("system:node:n2", &["system:nodes"]);
    let admin = user("corral-admin", &["system:masters"]);
    let team = user("alice", &["team-a"]);
    let server = WriteOptions::default();
    let on = |p: &str| task(Some("n1"), p);
    // (writer, from, to, expected HTTP code or 0 for admitted)
    let cases: Vec<(&WriteOptions, Value, Value, u16)> = vec![
        (&n1, on("ASSIGNED"), on("STARTING"), 0),
        (&n1, on("STARTING"), on("RUNNING"), 0),
        (&n1, on("RUNNING"), on("FINISHED"), 0),
        (&n1, on("RUNNING"), on("RUNNING"), 0),
        (&n2, on("RUNNING"), on("FINISHED"), 403),
        (&n2, on("RUNNING"), on("RUNNING"), 403),
        (&n1, on("RUNNING"), on("KILLING"), 403),
        (&n1, on("RUNNING"), on("PARTITIONED"), 403),
        (&n1, on("RUNNING"), on("LOST"), 0),
        (&n1, on("RUNNING"), on("STARTING"), 422),
        (&n1, on("FINISHED"), on("RUNNING"), 422),
        (&admin, on("RUNNING"), on("KILLING"), 0),
        (&admin, on("ASSIGNED"), on("RUNNING"), 0),
        (&admin, on("FAILED"), on("RUNNING"), 422),
        (&team, on("RUNNING"), on("FINISHED"), 403),
        (&team, on("RUNNING"), on("KILLING"), 0),
        (&server, on("FINISHED"), on("RUNNING"), 0),
    ];
    for (who, old, next, want) in cases {
        let got = check(&desc, &next, Some(&old), who)
            .err()
            .map_or(0, |e| e.code().as_u16());
        let name = who
            .requester
            .as_ref()
            .map_or("server", |r| r.user.name.as_str());
        assert_eq!(
            got, want,
            "{name}: {} -> {}",
            old["status"]["phase"], next["status"]["phase"]
        );
    }
}

#[test]
fn only_a_binding_or_a_binder_puts_a_task_on_a_node() {
    let registry = Catalog::standard();
    let desc = registry
        .find("corral.dev", "v1alpha1", "tasks")
        .expect("tasks");
    let admin = user("corral-admin", &["system:masters"]);
    let scheduler = user("scheduler", &[]);
    let pending = task(None, "PENDING");
    let placed = task(Some("n1"), "PENDING");
    let err = check(&desc, &placed, Some(&pending), &admin).expect_err("plain write");
    assert_eq!(err.code().as_u16(), 422);
    assert_eq!(
        err.status()["details"]["causes"][0]["field"],
        "spec.nodeName"
    );
    let binding = WriteOptions {
        binding: true,
        ..scheduler.clone()
    };
    let assigned = task(Some("n1"), "ASSIGNED");
    assert!(check(&desc, &assigned, Some(&pending), &binding).is_ok());
    // Created bound: only by whoever may bind.
    assert_eq!(
        check(&desc, &placed, None, &admin)
            .expect_err("not a binder")
            .code()
            .as_u16(),
        403
    );
    assert!(check(&desc, &placed, None, &scheduler).is_ok());
    assert!(check(&desc, &pending, None, &admin).is_ok());
}
