//! State reconciliation on a node, as a pure decision.
//!
//! Compares what a node's runtimes actually run with what the cluster's
//! Task objects say should run there, and says what to do about every
//! difference (Aurora's reconciliation, run by each agent every few seconds
//! and whenever it (re)lists its tasks):
//! - a copy that runs although its task ended (a network split: the control
//!   plane declared it LOST and replaced it), or whose task the cluster does
//!   not bind to this node at all (deleted meanwhile, or never known), is
//!   errant and is killed;
//! - a copy whose task is being killed (KILLING, PREEMPTING, RESTARTING,
//!   DRAINING) gets its kill carried out;
//! - an ASSIGNED task with no copy and no launch under way is launched
//!   (also when the watch missed the binding, or fencing held it back);
//! - a PARTITIONED task whose copy still runs is reported running again;
//! - a task the cluster believes starts or runs here, with no copy and no
//!   launch under way, is reported as having no copy (it becomes LOST and
//!   is replaced).
//!
//! Task names are keys `<namespace>/<name>`. A task's `spec.nodeName` never
//! changes, so "reassigned elsewhere" shows as an ended task (LOST) plus a
//! new task. Should a new task get the name of a deleted one, the agent
//! tells their copies apart by uid and leaves the old copy out of `bound`
//! here, so it is killed as unknown.

use std::collections::{BTreeMap, BTreeSet};

use corral_api::TaskPhase;

/// Why a running copy must not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errant {
    /// Its task already ended (in this phase).
    Ended(TaskPhase),
    /// No task bound to this node has this key.
    Unknown,
}

/// What to do about one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Launch it: it is bound here and nothing runs it yet.
    Launch,
    /// Kill the copy: it must not run.
    KillErrant(Errant),
    /// Kill the copy: its task is being killed.
    CarryOutKill,
    /// Report the copy running: its task is PARTITIONED but the copy runs.
    ReportRunning,
    /// Report that no copy runs: the cluster believes it starts or runs here.
    ReportNoCopy,
}

/// What the agent knows about its node.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    /// Keys of the copies the node's runtimes run now.
    pub running: &'a BTreeSet<String>,
    /// Keys the agent launched and has not seen end (a launch may not show
    /// in `running` yet).
    pub launched: &'a BTreeSet<String>,
    /// Keys whose end the agent reported already (its write may still be
    /// on its way, so the task object can lag behind).
    pub reported_ended: &'a BTreeSet<String>,
    /// The phase of every task the cluster binds to this node, by key.
    pub bound: &'a BTreeMap<String, TaskPhase>,
}

/// The verdict for a task that runs here (`running`) or is bound here in
/// `phase` (None: not bound here), or None when all is as it should be.
pub fn verdict(running: bool, in_hand: bool, phase: Option<TaskPhase>) -> Option<Verdict> {
    use TaskPhase::*;
    match (running, phase) {
        (true, None) => Some(Verdict::KillErrant(Errant::Unknown)),
        (true, Some(p @ (Finished | Failed | Killed | Lost))) => {
            Some(Verdict::KillErrant(Errant::Ended(p)))
        }
        (true, Some(Killing | Preempting | Restarting | Draining)) => Some(Verdict::CarryOutKill),
        (true, Some(Partitioned)) => Some(Verdict::ReportRunning),
        // Bound and live: as it should be. (A PENDING or THROTTLED task is
        // never bound; a copy of one would have been started by mistake, but
        // its phase will move on with the binding.)
        (true, Some(Pending | Throttled | Assigned | Starting | Running)) => None,
        (false, Some(Assigned)) if !in_hand => Some(Verdict::Launch),
        (false, Some(Starting | Running | Partitioned)) if !in_hand => Some(Verdict::ReportNoCopy),
        (false, Some(Killing | Preempting | Restarting | Draining)) if !in_hand => {
            Some(Verdict::ReportNoCopy)
        }
        (false, _) => None,
    }
}

/// Every difference between what runs and what should, in key order.
pub fn reconcile(view: NodeView<'_>) -> Vec<(String, Verdict)> {
    let keys: BTreeSet<&String> = view.running.iter().chain(view.bound.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let running = view.running.contains(k);
            let in_hand = view.launched.contains(k) || view.reported_ended.contains(k);
            verdict(running, in_hand, view.bound.get(k).copied()).map(|v| (k.clone(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskPhase::*;

    fn set(keys: &[&str]) -> BTreeSet<String> {
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    /// Every phase (and "not bound here") for a task that runs, one that is
    /// being launched, and one with neither.
    #[test]
    fn every_phase_has_a_verdict_for_a_copy_that_runs_and_one_that_does_not() {
        let kill = Some(Verdict::KillErrant(Errant::Unknown));
        let ended = |p| Some(Verdict::KillErrant(Errant::Ended(p)));
        let cases: Vec<(Option<TaskPhase>, Option<Verdict>, Option<Verdict>)> = vec![
            // phase, running, neither running nor in hand
            (None, kill, None),
            (Some(Pending), None, None),
            (Some(Throttled), None, None),
            (Some(Assigned), None, Some(Verdict::Launch)),
            (Some(Starting), None, Some(Verdict::ReportNoCopy)),
            (Some(Running), None, Some(Verdict::ReportNoCopy)),
            (
                Some(Partitioned),
                Some(Verdict::ReportRunning),
                Some(Verdict::ReportNoCopy),
            ),
            (
                Some(Killing),
                Some(Verdict::CarryOutKill),
                Some(Verdict::ReportNoCopy),
            ),
            (
                Some(Preempting),
                Some(Verdict::CarryOutKill),
                Some(Verdict::ReportNoCopy),
            ),
            (
                Some(Restarting),
                Some(Verdict::CarryOutKill),
                Some(Verdict::ReportNoCopy),
            ),
            (
                Some(Draining),
                Some(Verdict::CarryOutKill),
                Some(Verdict::ReportNoCopy),
            ),
            (Some(Finished), ended(Finished), None),
            (Some(Failed), ended(Failed), None),
            (Some(Killed), ended(Killed), None),
            (Some(Lost), ended(Lost), None),
        ];
        assert_eq!(cases.len(), TaskPhase::ALL.len() + 1, "every phase");
        for (phase, when_running, when_absent) in cases {
            assert_eq!(
                verdict(true, true, phase),
                when_running,
                "{phase:?} running"
            );
            assert_eq!(
                verdict(true, false, phase),
                when_running,
                "{phase:?} running"
            );
            assert_eq!(verdict(false, true, phase), None, "{phase:?} in hand");
            assert_eq!(
                verdict(false, false, phase),
                when_absent,
                "{phase:?} absent"
            );
        }
    }

    #[test]
    fn a_healed_partition_kills_what_the_cluster_replaced_and_forgot() {
        // The node ran a/web-0-0 and a/web-1-0 through a partition; the
        // cluster lost both, replaced them elsewhere and deleted web-0-0.
        // Meanwhile a/batch-0-0 was bound here and is being launched, and
        // a/cron-0-0 ended by itself (reported, the write still under way).
        let running = set(&["a/web-0-0", "a/web-1-0", "a/api-0-0"]);
        let launched = set(&["a/batch-0-0", "a/api-0-0"]);
        let reported = set(&["a/cron-0-0"]);
        let bound: BTreeMap<String, TaskPhase> = [
            ("a/web-1-0", Lost),
            ("a/api-0-0", Running),
            ("a/batch-0-0", Assigned),
            ("a/cron-0-0", Running),
            ("a/gone-0-0", Running),
        ]
        .into_iter()
        .map(|(k, p)| (k.to_owned(), p))
        .collect();
        let got = reconcile(NodeView {
            running: &running,
            launched: &launched,
            reported_ended: &reported,
            bound: &bound,
        });
        assert_eq!(
            got,
            vec![
                ("a/gone-0-0".to_owned(), Verdict::ReportNoCopy),
                ("a/web-0-0".to_owned(), Verdict::KillErrant(Errant::Unknown)),
                (
                    "a/web-1-0".to_owned(),
                    Verdict::KillErrant(Errant::Ended(Lost))
                ),
            ]
        );
    }
}
