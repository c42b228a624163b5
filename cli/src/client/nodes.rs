//! `corral node cordon|uncordon|drain NODE…` and `corral node maintenance`:
//! fields of the Node any client can write, which the controllers act on.
//! - `cordon` sets `spec.unschedulable`, as kubectl cordons a Kubernetes
//!   node: no new task is placed there (the scheduler leaves it out and
//!   `corral why` counts it among the unschedulable); what runs there runs on.
//! - `drain` sets `spec.drain`: the drain controller moves every task off
//!   within its job's disruption budget; `--wait` follows the node's
//!   `Draining` condition until it says `Drained`.
//! - `uncordon` puts a node back in service: both fields cleared.
//! - `maintenance` schedules (or `--clear`s) `spec.maintenance`.

use anyhow::{Context, Result};
use clap::Subcommand;
use corral_api::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::{Ctx, server_error};

/// `corral node` verbs.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Mark nodes unschedulable: no new task is placed there.
    Cordon {
        /// The nodes.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Put nodes back in service: schedulable, and no longer draining.
    Uncordon {
        /// The nodes.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Move every task off nodes, within each job's disruption budget.
    Drain {
        /// The nodes.
        #[arg(required = true)]
        nodes: Vec<String>,
        /// Wait until every node is empty.
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Schedule a node's maintenance window, or clear it.
    Maintenance {
        /// The node.
        node: String,
        /// When the window opens: an RFC 3339 time, or `+DURATION` from now (`+30m`).
        #[arg(long, required_unless_present = "clear")]
        start: Option<String>,
        /// How long it lasts (`2h`, `90m`).
        #[arg(long, required_unless_present = "clear")]
        duration: Option<String>,
        /// How long before it opens the node is drained (default 10m).
        #[arg(long)]
        drain_ahead: Option<String>,
        /// How long before it opens new services avoid the node (default 1h).
        #[arg(long)]
        avoid_ahead: Option<String>,
        /// Remove the window.
        #[arg(long, conflicts_with_all = ["start", "duration"])]
        clear: bool,
    },
}

/// Seconds in `text` (`2h`, `90m`, `45s`), as a whole number of seconds.
fn seconds(flag: &str, text: &str) -> Result<u32> {
    let d: jiff::SignedDuration = text
        .parse()
        .with_context(|| format!("--{flag} {text:?}: a duration such as 2h, 90m or 45s"))?;
    u32::try_from(d.as_secs())
        .ok()
        .filter(|_| !d.is_negative())
        .with_context(|| format!("--{flag} {text:?}: must be a positive duration"))
}

/// The time `text` names: RFC 3339, or `+DURATION` from `now`.
fn start_time(text: &str, now: jiff::Timestamp) -> Result<jiff::Timestamp> {
    if let Some(after) = text.strip_prefix('+') {
        let d: jiff::SignedDuration = after
            .parse()
            .with_context(|| format!("--start {text:?}: +DURATION such as +30m"))?;
        return Ok(now.checked_add(d)?);
    }
    text.parse()
        .with_context(|| format!("--start {text:?}: an RFC 3339 time or +DURATION"))
}

/// Runs `corral node …`.
pub async fn run(ctx: &Ctx, cmd: &NodeCommand) -> Result<()> {
    match cmd {
        NodeCommand::Cordon { nodes } => {
            set(ctx, nodes, json!({"unschedulable": true}), "cordoned").await
        }
        NodeCommand::Uncordon { nodes } => {
            set(
                ctx,
                nodes,
                json!({"unschedulable": null, "drain": null}),
                "uncordoned",
            )
            .await
        }
        NodeCommand::Drain {
            nodes,
            wait,
            timeout,
        } => {
            set(ctx, nodes, json!({"drain": true}), "draining").await?;
            if *wait {
                for node in nodes {
                    wait_drained(ctx, node, std::time::Duration::from_secs(*timeout)).await?;
                }
            }
            Ok(())
        }
        NodeCommand::Maintenance {
            node,
            start,
            duration,
            drain_ahead,
            avoid_ahead,
            clear,
        } => {
            if *clear {
                return set(
                    ctx,
                    std::slice::from_ref(node),
                    json!({"maintenance": null}),
                    "has no maintenance window",
                )
                .await;
            }
            let (Some(start), Some(duration)) = (start, duration) else {
                anyhow::bail!("--start and --duration are required (or --clear)");
            };
            let now = jiff::Timestamp::now();
            let at = start_time(start, now)?;
            let mut window =
                json!({"start": at.to_string(), "durationSeconds": seconds("duration", duration)?});
            if let Some(d) = drain_ahead {
                window["drainAheadSeconds"] = json!(seconds("drain-ahead", d)?);
            }
            if let Some(d) = avoid_ahead {
                window["avoidAheadSeconds"] = json!(seconds("avoid-ahead", d)?);
            }
            set(
                ctx,
                std::slice::from_ref(node),
                json!({"maintenance": window}),
                &format!("scheduled for maintenance at {at}"),
            )
            .await
        }
    }
}

/// Merges `spec` into each node's spec, saying `verb` of each.
async fn set(ctx: &Ctx, nodes: &[String], spec: serde_json::Value, verb: &str) -> Result<()> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    for name in nodes {
        let before = api.get(name).await.map_err(server_error)?;
        let current = serde_json::to_value(&before.spec)?;
        let unchanged = spec.as_object().is_some_and(|m| {
            m.iter().all(|(k, v)| match v {
                serde_json::Value::Null => current
                    .get(k)
                    .is_none_or(|c| c.is_null() || *c == json!(false)),
                v => current.get(k) == Some(v),
            })
        });
        if unchanged {
            outln!("node.corral.dev/{name} already {verb}");
            continue;
        }
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
        .map_err(server_error)?;
        outln!("node.corral.dev/{name} {verb}");
    }
    Ok(())
}

/// Follows node `name`'s `Draining` condition until it says `Drained`,
/// printing each new account of what is left.
async fn wait_drained(ctx: &Ctx, name: &str, timeout: std::time::Duration) -> Result<()> {
    use corral_api::node::{NodeConditionType, NodeReason};
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let api: Api<Node> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = watcher(api, config).applied_objects().boxed();
    let mut last = String::new();
    let follow = async {
        while let Some(n) = changes.next().await {
            let n = n.context("watching the node")?;
            let Some(c) = n.status.as_ref().and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == NodeConditionType::Draining)
                    .cloned()
            }) else {
                continue;
            };
            if c.message != last {
                outln!("node.corral.dev/{name}: {}", c.message);
                last = c.message.clone();
            }
            if c.reason == NodeReason::Drained {
                outln!("node.corral.dev/{name} drained");
                return Ok(());
            }
        }
        anyhow::bail!("the watch of node {name} ended")
    };
    tokio::time::timeout(timeout, follow)
        .await
        .with_context(|| format!("node {name} was not drained within {}s", timeout.as_secs()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_start_times_read_as_operators_write_them() {
        assert_eq!(seconds("duration", "2h").ok(), Some(7200));
        assert_eq!(seconds("duration", "90m").ok(), Some(5400));
        assert!(seconds("duration", "soon").is_err());
        assert!(seconds("duration", "-5m").is_err());
        let now: jiff::Timestamp = "2026-12-07T12:00:00Z".parse().expect("time");
        assert_eq!(
            start_time("+30m", now).ok().map(|t| t.to_string()),
            Some("2026-12-07T12:30:00Z".to_owned())
        );
        assert_eq!(
            start_time("2026-12-08T01:00:00Z", now)
                .ok()
                .map(|t| t.to_string()),
            Some("2026-12-08T01:00:00Z".to_owned())
        );
        assert!(start_time("tomorrow", now).is_err());
    }
}
