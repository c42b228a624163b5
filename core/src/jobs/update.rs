//! Rolling updates: a change of a job's task template reaches its running
//! instances a batch at a time.
//!
//! Every task carries the hash of the template it was made from
//! ([`TEMPLATE_ANNOTATION`]). When the job's template changes, instances
//! whose live task is outdated are moved onto the current template:
//! - an outdated task not yet on a node (PENDING, THROTTLED) is killed at
//!   once, since nothing runs it yet;
//! - an outdated task on a node is restarted (RESTARTING → KILLED, then
//!   replaced from the current template) while fewer than `batchSize`
//!   instances are in flight: their old task being killed, their new task
//!   not yet RUNNING, or their replacement about to be created.
//!
//! Lower instances go first. Tasks without the annotation (made before it
//! existed) count as current, so upgrading Corral rolls nothing.

use std::collections::BTreeMap;

use corral_api::TaskPhase;
use corral_api::job::JobSpec;
use sha2::{Digest, Sha256};

use super::TaskView;

/// Set on every Task: the hash of the job's task template it was made from.
pub const TEMPLATE_ANNOTATION: &str = "corral.dev/template-hash";

/// The hash of what a job's tasks are made of: role, resources, tier,
/// priority, container, constraints, ports, health check and fencing. Changing any of
/// them rolls the job;
/// `instances`, timeouts and policies do not.
pub fn template_hash(spec: &JobSpec) -> String {
    let mut template = serde_json::json!({
        "role": spec.role, "resources": spec.resources, "tier": spec.tier,
        "priority": spec.priority, "container": spec.container, "constraints": spec.constraints,
    });
    // Only when on, so that the hashes of existing jobs stay as they were.
    if spec.fenced {
        template["fenced"] = serde_json::Value::Bool(true);
    }
    if !spec.ports.is_empty() {
        template["ports"] = serde_json::json!(spec.ports);
    }
    if let Some(hc) = &spec.health_check {
        template["healthCheck"] = serde_json::json!(hc);
    }
    let digest = Sha256::digest(template.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// What a rolling update needs now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roll {
    /// Outdated tasks not yet on a node: kill them (they are replaced).
    pub kill: Vec<String>,
    /// Outdated tasks on a node to restart in this batch.
    pub restart: Vec<String>,
    /// Instances whose live task runs the current template.
    pub updated: u32,
    /// True while any live task runs an older template.
    pub rolling: bool,
}

/// Decides the next step of the update of instances `0..instances`, given
/// each instance's tasks, the current template and the instances about to
/// get a new task anyway (`replacing`).
pub fn roll(
    instances: u32,
    batch_size: u32,
    by_instance: &BTreeMap<u32, Vec<&TaskView>>,
    current: &str,
    replacing: &[u32],
) -> Roll {
    let outdated = |t: &TaskView| t.template.as_deref().is_some_and(|h| h != current);
    let mut roll = Roll::default();
    let mut in_flight = 0u32;
    let mut candidates = Vec::new();
    for instance in 0..instances {
        let live = by_instance
            .get(&instance)
            .and_then(|h| h.iter().find(|t| !t.phase.is_terminal()));
        let Some(t) = live else {
            in_flight += u32::from(replacing.contains(&instance));
            continue;
        };
        if !outdated(t) {
            roll.updated += 1;
            in_flight += u32::from(t.phase != TaskPhase::Running);
            continue;
        }
        roll.rolling = true;
        match t.phase {
            TaskPhase::Pending | TaskPhase::Throttled => roll.kill.push(t.name.clone()),
            TaskPhase::Assigned
            | TaskPhase::Starting
            | TaskPhase::Running
            | TaskPhase::Partitioned => candidates.push(t.name.clone()),
            // Being killed already (the update's restart, or a preemption).
            _ => in_flight += 1,
        }
    }
    let room = usize::try_from(batch_size.max(1).saturating_sub(in_flight)).unwrap_or(0);
    roll.restart = candidates.into_iter().take(room).collect();
    roll
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskPhase::*;

    fn t(instance: u32, attempt: u32, phase: TaskPhase, template: &str) -> TaskView {
        TaskView {
            name: format!("j-{instance}-{attempt}"),
            instance,
            attempt,
            phase,
            displaced: false,
            assigned: None,
            flapped: false,
            ended: None,
            template: Some(template.to_owned()),
        }
    }

    fn roll_of(tasks: &[TaskView], batch: u32, replacing: &[u32]) -> Roll {
        let mut by: BTreeMap<u32, Vec<&TaskView>> = BTreeMap::new();
        for t in tasks {
            by.entry(t.instance).or_default().push(t);
        }
        let instances = tasks.iter().map(|t| t.instance + 1).max().unwrap_or(0);
        roll(instances, batch, &by, "new", replacing)
    }

    #[test]
    fn the_template_covers_what_tasks_are_made_of_and_nothing_else() {
        let job = |extra: serde_json::Value| -> JobSpec {
            let mut v = serde_json::json!({"role": "r", "environment": "prod", "kind": "service",
                "instances": 2, "resources": {"cpus": 1}, "container": {"image": "busybox"}});
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            serde_json::from_value(v).expect("spec")
        };
        let base = template_hash(&job(serde_json::json!({})));
        assert_eq!(base.len(), 16);
        assert_eq!(base, template_hash(&job(serde_json::json!({}))), "stable");
        for same in [
            serde_json::json!({"instances": 7}),
            serde_json::json!({"maxTaskFailures": 3}),
            serde_json::json!({"timeouts": {"assignSeconds": 30}}),
            serde_json::json!({"ports": []}),
        ] {
            assert_eq!(template_hash(&job(same.clone())), base, "{same}");
        }
        for changed in [
            serde_json::json!({"container": {"image": "busybox:2"}}),
            serde_json::json!({"resources": {"cpus": 2}}),
            serde_json::json!({"priority": 5}),
            serde_json::json!({"tier": "preferred"}),
            serde_json::json!({"role": "other"}),
            serde_json::json!({"ports": [{"name": "http"}]}),
            serde_json::json!({"healthCheck": {"exec": {"command": ["true"]}}}),
        ] {
            assert_ne!(template_hash(&job(changed.clone())), base, "{changed}");
        }
    }

    #[test]
    fn outdated_instances_restart_a_batch_at_a_time_lowest_first() {
        let tasks = [
            t(0, 0, Running, "old"),
            t(1, 0, Running, "old"),
            t(2, 0, Running, "old"),
            t(3, 0, Running, "old"),
        ];
        let r = roll_of(&tasks, 2, &[]);
        assert_eq!(r.restart, vec!["j-0-0", "j-1-0"]);
        assert!(r.kill.is_empty() && r.rolling);
        assert_eq!(r.updated, 0);
    }

    #[test]
    fn instances_in_flight_hold_the_next_batch_back() {
        // Instance 0's new task is not running yet, 1's old task is being
        // restarted, 2's replacement is about to be created: with a batch
        // of 3, nothing more starts.
        let tasks = [
            t(0, 0, Killed, "old"),
            t(0, 1, Starting, "new"),
            t(1, 0, Restarting, "old"),
            t(2, 0, Killed, "old"),
            t(3, 0, Running, "old"),
        ];
        let r = roll_of(&tasks, 3, &[2]);
        assert!(r.restart.is_empty(), "{r:?}");
        assert_eq!(r.updated, 1);
        // Once instance 0 runs, one slot opens.
        let tasks = [
            t(0, 1, Running, "new"),
            t(1, 0, Restarting, "old"),
            t(2, 1, Pending, "new"),
            t(3, 0, Running, "old"),
        ];
        assert_eq!(roll_of(&tasks, 3, &[]).restart, vec!["j-3-0"]);
    }

    #[test]
    fn outdated_tasks_not_on_a_node_are_replaced_at_once_and_done_means_done() {
        let tasks = [
            t(0, 0, Pending, "old"),
            t(1, 0, Throttled, "old"),
            t(2, 0, Running, "new"),
        ];
        let r = roll_of(&tasks, 1, &[]);
        assert_eq!(r.kill, vec!["j-0-0", "j-1-0"]);
        assert!(r.restart.is_empty());
        let done = roll_of(&[t(0, 3, Running, "new"), t(1, 1, Running, "new")], 1, &[]);
        assert_eq!(
            done,
            Roll {
                updated: 2,
                ..Roll::default()
            }
        );
        // Tasks made before templates were recorded count as current.
        let mut legacy = t(0, 0, Running, "x");
        legacy.template = None;
        assert!(!roll_of(&[legacy], 1, &[]).rolling);
    }
}
