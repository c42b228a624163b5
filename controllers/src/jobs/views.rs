//! The job controller's view of every job's tasks, kept up to date change
//! by change, so that a reconcile of a job of 50,000 instances reads 50,000
//! small views side by side instead of walking 50,000 task objects.
//!
//! Watches: the shared cache's Task changes, the same stream that requeues
//! each task's job ([`feed`] applies a change here before it passes the
//! task on, so the reconcile it triggers sees it).
//! Keeps: per job (`namespace/job`, the task's `corral.dev/job` label) each
//! task's [`TaskView`] and latency [`Sample`], computed once per change of
//! the task; a resync recomputes them all from the cache's store.
//! Guarantees: once ready (the store had listed every task when the views
//! were last rebuilt), a job's views are those of the tasks the cache held
//! when it sent the last change applied here; nothing is kept beyond the
//! cache's own objects, so a restarted controller rebuilds the same views.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use corral_api::Task;
use corral_api::job::JOB_LABEL;
use corral_core::jobs::{self, TaskView};
use corral_core::latency::{Sample, TaskHistory};
use futures::{FutureExt, Stream};
use kube::runtime::reflector::Store;

use crate::cache::{self, Change, Shared};

/// One job's tasks: their views and latency samples, side by side, in no
/// particular order.
#[derive(Debug, Default)]
pub struct JobTasks {
    /// Each task's view.
    pub views: Vec<TaskView>,
    /// Each task's latency sample (`samples[i]` is `views[i]`'s).
    pub samples: Vec<Sample>,
    /// Where each task, by name, is in `views`.
    at: HashMap<String, usize>,
}

impl JobTasks {
    fn upsert(&mut self, view: TaskView, sample: Sample) {
        if let Some(&i) = self.at.get(&view.name) {
            self.views[i] = view;
            self.samples[i] = sample;
            return;
        }
        self.at.insert(view.name.clone(), self.views.len());
        self.views.push(view);
        self.samples.push(sample);
    }

    fn remove(&mut self, name: &str) {
        let Some(i) = self.at.remove(name) else {
            return;
        };
        self.views.swap_remove(i);
        self.samples.swap_remove(i);
        // The last view moved into the hole.
        if let Some(moved) = self.views.get(i)
            && let Some(slot) = self.at.get_mut(&moved.name)
        {
            *slot = i;
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<String, JobTasks>,
    /// The job key each task (`namespace/name`) is kept under.
    job_of: HashMap<String, String>,
    /// Whether the views were last rebuilt from a store that had listed
    /// every task.
    ready: bool,
}

impl Inner {
    fn forget(&mut self, task_key: &str) {
        if let Some(job) = self.job_of.remove(task_key) {
            let name = task_key.split_once('/').map_or(task_key, |(_, n)| n);
            if let Some(tasks) = self.jobs.get_mut(&job) {
                tasks.remove(name);
                if tasks.views.is_empty() {
                    self.jobs.remove(&job);
                }
            }
        }
    }

    fn upsert(&mut self, task: &Task) {
        let (Some(ns), Some(name)) = (
            task.metadata.namespace.as_deref(),
            task.metadata.name.as_deref(),
        ) else {
            return;
        };
        let task_key = format!("{ns}/{name}");
        let label = task.metadata.labels.as_ref().and_then(|l| l.get(JOB_LABEL));
        // A task of no job, or not named as one of its job's, has no view
        // (as the job's reconcile never counted it).
        let view = label.and_then(|job| jobs::view(job, task).map(|v| (job, v)));
        let Some((job, view)) = view else {
            self.forget(&task_key);
            return;
        };
        let job_key = cache::job_key(ns, job);
        if self.job_of.get(&task_key) != Some(&job_key) {
            self.forget(&task_key);
            self.job_of.insert(task_key, job_key.clone());
        }
        let sample = TaskHistory::of(task).map_or_else(Sample::default, |h| h.sample());
        self.jobs.entry(job_key).or_default().upsert(view, sample);
    }

    fn rebuild(&mut self, store: &Store<Task>) {
        self.jobs.clear();
        self.job_of.clear();
        for task in store.state() {
            self.upsert(&task);
        }
        self.ready = matches!(store.wait_until_ready().now_or_never(), Some(Ok(())));
    }
}

/// Every job's task views (cheap to clone: one shared state).
#[derive(Debug, Default, Clone)]
pub struct Views {
    inner: Arc<Mutex<Inner>>,
}

impl Views {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one change of the cache whose store is `store`.
    pub fn apply(&self, change: &Change<Task>, store: &Store<Task>) {
        let mut inner = self.lock();
        match change {
            Change::Applied(task) => inner.upsert(task),
            Change::Deleted(task) => {
                if let (Some(ns), Some(name)) = (
                    task.metadata.namespace.as_deref(),
                    task.metadata.name.as_deref(),
                ) {
                    inner.forget(&format!("{ns}/{name}"));
                }
            }
            Change::Resynced => inner.rebuild(store),
        }
    }

    /// `f` over job `job_key`'s tasks (none yet: empty); `None` until the
    /// views have been built from a store that listed every task.
    pub fn with<R>(&self, job_key: &str, f: impl FnOnce(&JobTasks) -> R) -> Option<R> {
        let inner = self.lock();
        if !inner.ready {
            return None;
        }
        static NONE: std::sync::OnceLock<JobTasks> = std::sync::OnceLock::new();
        let tasks = inner
            .jobs
            .get(job_key)
            .unwrap_or_else(|| NONE.get_or_init(JobTasks::default));
        Some(f(tasks))
    }
}

/// The tasks that changed, as [`Shared::touched`] gives them, each change
/// first applied to `views`: the job controller's trigger stream.
pub fn feed(tasks: &Shared<Task>, views: Views) -> impl Stream<Item = Arc<Task>> + Send + 'static {
    let store = tasks.store();
    tasks.touched_after(move |change| views.apply(change, &store))
}

#[cfg(test)]
mod tests;
