//! A job's tasks grouped by instance, built once per reconcile.
//!
//! A job of 50,000 instances is looked at up to five times a second while
//! its tasks move, and every pass of a reconcile asks "this instance's
//! tasks" for each instance in turn. The groups are one sorted array of
//! references and the start of each group: two allocations however many
//! instances there are, a lookup by binary search, and every group in
//! attempt order.

use super::TaskView;

/// The tasks of a job by instance, each instance's in attempt order.
#[derive(Debug, Clone, Default)]
pub struct ByInstance<'v> {
    /// Every task, ordered by (instance, attempt).
    sorted: Vec<&'v TaskView>,
    /// Each instance that has a task, with where its group starts in
    /// `sorted`, in instance order.
    starts: Vec<(u32, usize)>,
}

impl<'v> ByInstance<'v> {
    /// Groups `tasks`.
    pub fn new(tasks: impl IntoIterator<Item = &'v TaskView>) -> Self {
        let mut sorted: Vec<&TaskView> = tasks.into_iter().collect();
        sorted.sort_unstable_by_key(|t| (t.instance, t.attempt));
        let mut starts: Vec<(u32, usize)> = Vec::new();
        for (i, t) in sorted.iter().enumerate() {
            if starts
                .last()
                .is_none_or(|(instance, _)| *instance != t.instance)
            {
                starts.push((t.instance, i));
            }
        }
        ByInstance { sorted, starts }
    }

    /// The range of `sorted` that group `g` covers.
    fn group(&self, g: usize) -> &[&'v TaskView] {
        let start = self.starts[g].1;
        let end = self.starts.get(g + 1).map_or(self.sorted.len(), |s| s.1);
        &self.sorted[start..end]
    }

    /// Instance `instance`'s tasks, oldest attempt first (empty when it has none).
    pub fn get(&self, instance: u32) -> &[&'v TaskView] {
        match self.starts.binary_search_by_key(&instance, |s| s.0) {
            Ok(g) => self.group(g),
            Err(_) => &[],
        }
    }

    /// Every instance that has a task, in order, with its tasks.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[&'v TaskView])> + '_ {
        (0..self.starts.len()).map(|g| (self.starts[g].0, self.group(g)))
    }

    /// Every task, by instance then attempt.
    pub fn tasks(&self) -> impl Iterator<Item = &'v TaskView> + '_ {
        self.sorted.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_api::TaskPhase;

    fn t(instance: u32, attempt: u32) -> TaskView {
        TaskView {
            name: super::super::task_name("j", instance, attempt),
            instance,
            attempt,
            phase: TaskPhase::Running,
            displaced: false,
            assigned: None,
            flapped: false,
            ended: None,
            template: None,
            healthy_since: None,
            leaving: false,
        }
    }

    fn names(ts: &[&TaskView]) -> Vec<String> {
        ts.iter().map(|t| t.name.clone()).collect()
    }

    #[test]
    fn groups_by_instance_in_attempt_order() {
        let tasks = [t(3, 1), t(0, 0), t(3, 0), t(7, 2), t(3, 2)];
        let by = ByInstance::new(&tasks);
        assert_eq!(names(by.get(3)), ["j-3-0", "j-3-1", "j-3-2"]);
        assert_eq!(names(by.get(0)), ["j-0-0"]);
        assert_eq!(names(by.get(7)), ["j-7-2"]);
        assert!(by.get(1).is_empty());
        assert!(by.get(8).is_empty());
        assert!(by.get(u32::MAX).is_empty());
        let groups: Vec<(u32, usize)> = by.iter().map(|(i, ts)| (i, ts.len())).collect();
        assert_eq!(groups, [(0, 1), (3, 3), (7, 1)]);
        assert_eq!(by.tasks().count(), 5);
    }

    #[test]
    fn no_tasks_no_groups() {
        let by = ByInstance::new(&[]);
        assert!(by.get(0).is_empty());
        assert_eq!(by.iter().count(), 0);
    }
}
