use super::*;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;
use proptest::prelude::*;
use serde_json::json;

fn task(ns: &str, job: Option<&str>, name: &str, phase: &str) -> Task {
    let labels = job.map_or(json!({}), |j| json!({ JOB_LABEL: j }));
    serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": name, "namespace": ns, "labels": labels,
                     "creationTimestamp": "2026-12-07T00:00:00Z"},
        "spec": {"job": job.unwrap_or("none"), "role": "r", "environment": "prod", "instanceId": 0,
                 "resources": {"cpus": 1, "memory": "1Gi"}, "container": {"image": "x"}},
        "status": {"phase": phase, "taskEvents": [
            {"timestamp": "2026-12-07T00:00:00.250000Z", "status": "ASSIGNED", "message": "", "actor": "x"},
            {"timestamp": "2026-12-07T00:00:01Z", "status": phase, "message": "", "actor": "x"}]}}))
    .expect("task")
}

/// A store that has listed `tasks`, and its writer.
fn listed(tasks: &[Task]) -> (Store<Task>, Writer<Task>) {
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&Event::Init);
    for t in tasks {
        writer.apply_watcher_event(&Event::InitApply(t.clone()));
    }
    writer.apply_watcher_event(&Event::InitDone);
    (store, writer)
}

/// What the reconcile read before views were kept: every task of the job
/// in the store, viewed on the spot.
fn walked(store: &Store<Task>, ns: &str, job: &str) -> Vec<(TaskView, Sample)> {
    let mut all: Vec<(TaskView, Sample)> = store
        .state()
        .iter()
        .filter(|t| t.metadata.namespace.as_deref() == Some(ns))
        .filter(|t| {
            t.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(JOB_LABEL))
                .map(String::as_str)
                == Some(job)
        })
        .filter_map(|t| {
            let sample = TaskHistory::of(t).map_or_else(Sample::default, |h| h.sample());
            jobs::view(job, t).map(|v| (v, sample))
        })
        .collect();
    all.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    all
}

fn kept(views: &Views, ns: &str, job: &str) -> Option<Vec<(TaskView, Sample)>> {
    views.with(&cache::job_key(ns, job), |t| {
        let mut all: Vec<(TaskView, Sample)> = t
            .views
            .iter()
            .cloned()
            .zip(t.samples.iter().copied())
            .collect();
        all.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        all
    })
}

#[test]
fn not_ready_until_rebuilt_from_a_store_that_listed_every_task() {
    let views = Views::default();
    let (store, _writer) = reflector::store::<Task>();
    views.apply(&Change::Resynced, &store);
    assert!(
        kept(&views, "ns", "j").is_none(),
        "the store has not listed"
    );
    let (store, _writer) = listed(&[task("ns", Some("j"), "j-0-0", "RUNNING")]);
    views.apply(&Change::Resynced, &store);
    let all = kept(&views, "ns", "j").expect("ready");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0.phase, corral_api::TaskPhase::Running);
    assert_eq!(all[0].1.assigned, Some(250));
    assert_eq!(kept(&views, "ns", "other"), Some(Vec::new()));
}

#[test]
fn changes_keep_each_job_s_views_as_the_store_has_them() {
    let (store, mut writer) = listed(&[]);
    let views = Views::default();
    views.apply(&Change::Resynced, &store);
    let mut apply = |t: Task| {
        writer.apply_watcher_event(&Event::Apply(t.clone()));
        views.apply(&Change::Applied(Arc::new(t)), &store);
    };
    for i in 0..4 {
        apply(task("ns", Some("j"), &format!("j-{i}-0"), "PENDING"));
    }
    // Another namespace's job of the same name is another job.
    apply(task("other", Some("j"), "j-0-0", "RUNNING"));
    // Changed: the view follows.
    apply(task("ns", Some("j"), "j-1-0", "RUNNING"));
    // Not named as its job's task, or of no job: no view.
    apply(task("ns", Some("j"), "stray", "RUNNING"));
    apply(task("ns", None, "j-9-0", "RUNNING"));
    assert_eq!(kept(&views, "ns", "j"), Some(walked(&store, "ns", "j")));
    assert_eq!(kept(&views, "ns", "j").map(|v| v.len()), Some(4));
    // Deleted from the middle: the view that moves into its place is
    // still found by name.
    let gone = task("ns", Some("j"), "j-0-0", "PENDING");
    writer.apply_watcher_event(&Event::Delete(gone.clone()));
    views.apply(&Change::Deleted(Arc::new(gone)), &store);
    let moved = task("ns", Some("j"), "j-3-0", "FINISHED");
    writer.apply_watcher_event(&Event::Apply(moved.clone()));
    views.apply(&Change::Applied(Arc::new(moved)), &store);
    assert_eq!(kept(&views, "ns", "j"), Some(walked(&store, "ns", "j")));
    assert_eq!(kept(&views, "ns", "j").map(|v| v.len()), Some(3));
    assert_eq!(kept(&views, "other", "j").map(|v| v.len()), Some(1));
}

#[test]
fn a_task_relabelled_to_another_job_leaves_the_first() {
    let first = task("ns", Some("a"), "a-0-0", "RUNNING");
    let (store, mut writer) = listed(std::slice::from_ref(&first));
    let views = Views::default();
    views.apply(&Change::Resynced, &store);
    assert_eq!(kept(&views, "ns", "a").map(|v| v.len()), Some(1));
    // Relabelled: a task of job b named as a's has no view in either.
    let moved = task("ns", Some("b"), "a-0-0", "RUNNING");
    writer.apply_watcher_event(&Event::Apply(moved.clone()));
    views.apply(&Change::Applied(Arc::new(moved)), &store);
    assert_eq!(kept(&views, "ns", "a"), Some(Vec::new()));
    assert_eq!(kept(&views, "ns", "b"), Some(Vec::new()));
}

#[derive(Debug, Clone)]
enum Step {
    Put { job: u8, instance: u8, phase: u8 },
    Delete { job: u8, instance: u8 },
    Resync,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..2, 0u8..12, 0u8..4).prop_map(|(job, instance, phase)| Step::Put { job, instance, phase }),
        3 => (0u8..2, 0u8..12).prop_map(|(job, instance)| Step::Delete { job, instance }),
        1 => Just(Step::Resync),
    ]
}

proptest! {
    /// After any sequence of changes, each job's views are what walking
    /// the store's tasks of that job gives.
    #[test]
    fn views_equal_a_walk_of_the_store(steps in proptest::collection::vec(step(), 1..80)) {
        let (store, mut writer) = listed(&[]);
        let views = Views::default();
        views.apply(&Change::Resynced, &store);
        let phases = ["PENDING", "RUNNING", "FINISHED", "FAILED"];
        for s in steps {
            match s {
                Step::Put { job, instance, phase } => {
                    let j = format!("j{job}");
                    let t = task("ns", Some(&j), &format!("{j}-{instance}-0"), phases[usize::from(phase)]);
                    writer.apply_watcher_event(&Event::Apply(t.clone()));
                    views.apply(&Change::Applied(Arc::new(t)), &store);
                }
                Step::Delete { job, instance } => {
                    let j = format!("j{job}");
                    let t = task("ns", Some(&j), &format!("{j}-{instance}-0"), "PENDING");
                    writer.apply_watcher_event(&Event::Delete(t.clone()));
                    views.apply(&Change::Deleted(Arc::new(t)), &store);
                }
                Step::Resync => views.apply(&Change::Resynced, &store),
            }
            for j in ["j0", "j1"] {
                prop_assert_eq!(kept(&views, "ns", j), Some(walked(&store, "ns", j)));
            }
        }
    }
}
