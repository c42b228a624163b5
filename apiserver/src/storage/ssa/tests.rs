//! Field ownership, apply conflicts, removals and keyed lists.

use super::*;

/// The lists every kind merges (finalizers, ownerReferences, conditions).
fn lists() -> Lists {
    Lists::from_schema(&json!({}))
}

#[test]
fn managers_own_their_items_of_keyed_lists_and_their_values_of_sets() {
    let base =
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": "j"}});
    let with = |finalizer: &str, condition: &str, status: &str| {
        let mut v = base.clone();
        v["metadata"]["finalizers"] = json!([finalizer]);
        v["status"] = json!({"conditions": [{"type": condition, "status": status}]});
        v
    };
    // Two controllers each apply their own finalizer and condition.
    let one = apply(
        &base,
        &with("a/f", "Ready", "True"),
        "a",
        false,
        "t0",
        &lists(),
    )
    .expect("a");
    let two = apply(
        &one,
        &with("b/f", "Progressing", "False"),
        "b",
        false,
        "t1",
        &lists(),
    )
    .expect("no conflict: other items");
    assert_eq!(two["metadata"]["finalizers"], json!(["a/f", "b/f"]));
    assert_eq!(
        two["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}, {"type": "Progressing", "status": "False"}])
    );
    // Changing another manager's item is a conflict naming the item's field.
    let err = apply(
        &two,
        &with("b/f", "Ready", "False"),
        "b",
        false,
        "t2",
        &lists(),
    )
    .expect_err("conflict");
    assert_eq!(
        err[0].field,
        ".status.conditions.k:{\"type\":\"Ready\"}.status"
    );
    // A manager that stops applying its items removes only those.
    let three = apply(&two, &base, "a", false, "t3", &lists()).expect("a again");
    assert_eq!(three["metadata"]["finalizers"], json!(["b/f"]));
    assert_eq!(
        three["status"]["conditions"],
        json!([{"type": "Progressing", "status": "False"}])
    );
    // The items round-trip through FieldsV1 as Kubernetes writes them.
    let f = leaves(&two, &lists());
    assert_eq!(from_fields_v1(&to_fields_v1(&f)), f);
    assert!(
        to_fields_v1(&f)["f:status"]["f:conditions"]["k:{\"type\":\"Ready\"}"]
            .get(".")
            .is_some()
    );
}

fn job(instances: u32, priority: i32) -> Value {
    json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": "j", "labels": {"a": "1"}},
           "spec": {"instances": instances, "priority": priority, "container": {"image": "busybox", "command": ["sh"]}}})
}

#[test]
fn fields_v1_round_trips() {
    let f = leaves(&job(1, 0), &lists());
    assert!(f.contains(&vec![
        "spec".to_string(),
        "container".to_string(),
        "command".to_string()
    ]));
    assert!(f.contains(&vec![
        "metadata".to_string(),
        "labels".to_string(),
        "a".to_string()
    ]));
    assert_eq!(from_fields_v1(&to_fields_v1(&f)), f);
    // kubectl writes keyed items and "." markers.
    let kubectl = json!({"f:metadata": {"f:labels": {".": {}, "f:a": {}}}, "f:spec": {"f:list": {"k:{\"name\":\"x\"}": {".": {}, "f:name": {}}}}});
    let parsed = from_fields_v1(&kubectl);
    assert_eq!(
        parsed,
        [
            vec![
                "metadata".to_string(),
                "labels".to_string(),
                "a".to_string()
            ],
            vec![
                "spec".to_string(),
                "list".to_string(),
                "k:{\"name\":\"x\"}".to_string(),
                "name".to_string()
            ]
        ]
        .into_iter()
        .collect()
    );
}

#[test]
fn a_second_manager_conflicts_on_a_changed_field_and_force_takes_it() {
    let mut created = job(1, 0);
    record_update(None, &mut created, "alice", None, "t0", &lists());
    let err = apply(&created, &job(2, 0), "bob", false, "t1", &lists()).expect_err("conflict");
    assert_eq!(
        err,
        vec![Conflict {
            manager: "alice".into(),
            api_version: "corral.dev/v1alpha1".into(),
            field: ".spec.instances".into()
        }]
    );
    assert_eq!(
        conflict_message(&err),
        "Apply failed with 1 conflict: conflict with \"alice\" using corral.dev/v1alpha1: .spec.instances"
    );
    // Same value: no conflict, shared ownership.
    assert!(apply(&created, &job(1, 0), "bob", false, "t1", &lists()).is_ok());
    let forced = apply(&created, &job(2, 0), "bob", true, "t1", &lists()).expect("forced");
    assert_eq!(forced["spec"]["instances"], 2);
    let entries = parse_entries(&forced);
    let alice = entries
        .iter()
        .find(|e| e.manager == "alice")
        .expect("alice keeps the rest");
    assert!(
        !alice
            .fields
            .contains(&vec!["spec".to_string(), "instances".to_string()])
    );
    let bob = entries.iter().find(|e| e.manager == "bob").expect("bob");
    assert_eq!(bob.operation, "Apply");
    assert!(
        bob.fields
            .contains(&vec!["spec".to_string(), "instances".to_string()])
    );
}

#[test]
fn fields_no_longer_applied_are_removed_unless_shared() {
    let applied = job(1, 0);
    let live = apply(
        &json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": "j"}}),
        &applied,
        "alice",
        false,
        "t0",
        &lists(),
    )
    .expect("apply");
    let mut smaller = applied.clone();
    smaller["spec"]
        .as_object_mut()
        .map(|m| m.remove("priority"));
    smaller["metadata"]["labels"] = json!({});
    let next = apply(&live, &smaller, "alice", false, "t1", &lists()).expect("apply");
    assert!(next["spec"].get("priority").is_none(), "{next}");
    assert!(next["metadata"]["labels"].get("a").is_none(), "{next}");
    // Another manager's update keeps a field alive.
    let mut updated = live.clone();
    updated["spec"]["priority"] = json!(5);
    record_update(Some(&live), &mut updated, "carol", None, "t2", &lists());
    let next = apply(&updated, &smaller, "alice", false, "t3", &lists()).expect("apply");
    assert_eq!(next["spec"]["priority"], 5);
}

#[test]
fn updates_take_ownership_without_conflicts() {
    let mut created = job(1, 0);
    record_update(None, &mut created, "alice", None, "t0", &lists());
    let mut changed = created.clone();
    changed["spec"]["instances"] = json!(3);
    record_update(Some(&created), &mut changed, "bob", None, "t1", &lists());
    let entries = parse_entries(&changed);
    let bob = entries.iter().find(|e| e.manager == "bob").expect("bob");
    assert_eq!(
        bob.fields,
        [vec!["spec".to_string(), "instances".to_string()]]
            .into_iter()
            .collect()
    );
    let alice = entries
        .iter()
        .find(|e| e.manager == "alice")
        .expect("alice");
    assert!(
        !alice
            .fields
            .contains(&vec!["spec".to_string(), "instances".to_string()])
    );
}
