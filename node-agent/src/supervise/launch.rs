//! Launching a task the node was given: its runtime picked (the one its
//! container names, or the node's default; never another), its fields
//! filled in, then — in a task of its own — its Secrets read, the endpoints
//! it looks up waited for, its ports exposed, and the runtime started. A
//! launch that cannot begin ends at once with its reason.

use super::*;

impl Supervisor {
    /// Launches task `key`, bound to `node`.
    pub(super) fn launch(&mut self, key: &str, node: &str) {
        if self.fenced.is_some() {
            // Launched once the lease is renewed (the next sweep).
            return;
        }
        let Some(t) = self.object(key) else { return };
        let ports = t
            .status
            .as_ref()
            .map(|s| s.ports.clone())
            .unwrap_or_default();
        let uid = t.metadata.uid.clone();
        let mut container = t.spec.container.clone();
        if let Err(why) = crate::references::fill_fields(&mut container, &t) {
            let why = Failure::new(FailureReason::LaunchFailed, why);
            return self.not_started(key, uid, node, (128, why));
        }
        let launch = Launch {
            key: key.to_owned(),
            container,
            resources: t.spec.resources.clone(),
            annotations: t.metadata.annotations.clone().unwrap_or_default(),
            uid: t.metadata.uid.clone(),
        };
        let idx = match pick(&self.runtimes, &self.health, &launch, self.default_runtime) {
            Ok(idx) => idx,
            Err(why) => {
                let why = Failure::new(FailureReason::NoRuntime, why);
                return self.not_started(key, uid, node, (127, why));
            }
        };
        self.tasks.insert(key.to_owned(), (idx, node.to_owned()));
        if let Some(uid) = launch.uid.clone() {
            self.uids.insert(key.to_owned(), uid);
        }
        let (rt, tx, key, client, metrics) = (
            self.runtimes[idx].clone(),
            self.events.clone(),
            key.to_owned(),
            self.client.clone(),
            self.metrics.clone(),
        );
        // A task that waits for another job's endpoints can be killed
        // while it waits: dropping its sender abandons the wait.
        let wait = crate::references::looks_up_endpoints(&launch.container).then(|| {
            let (sender, abandon) = tokio::sync::watch::channel(());
            self.waiting.insert(key.to_owned(), sender);
            crate::references::Wait {
                abandon,
                objects: self.objects.clone(),
            }
        });
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut launch = launch;
            let ns = key.split_once('/').map_or("", |(ns, _)| ns).to_owned();
            if let Err(why) = crate::secrets::resolve(&client, &ns, &mut launch.container).await {
                let ev = RuntimeEvent::failed(FailureReason::SecretUnavailable, why);
                let _ = tx.send((key, ev)).await;
                return;
            }
            if let Some(wait) = wait
                && !wait
                    .until_found(&client, &key, &mut launch.container, &tx)
                    .await
            {
                return;
            }
            crate::ports::expose(&mut launch.container, &ports);
            let result = rt.start(launch, tx.clone()).await;
            let outcome = if result.is_ok() {
                crate::metrics::StartResult::success
            } else {
                crate::metrics::StartResult::error
            };
            metrics.started(rt.kind(), started.elapsed().as_secs_f64(), outcome);
            if let Err(e) = result {
                let ev = RuntimeEvent::failed(FailureReason::LaunchFailed, e.to_string());
                let _ = tx.send((key, ev)).await;
            }
        });
    }

    /// Ends a launch that could not begin: reported with its code and why.
    fn not_started(
        &mut self,
        key: &str,
        uid: Option<String>,
        node: &str,
        (code, failure): (i32, Failure),
    ) {
        self.ended.insert(key.to_owned(), uid);
        let failure = Some(failure);
        self.report(key, Event::AgentExited { code, failure }, node);
    }
}
