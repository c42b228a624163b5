//! `corral node cordon|uncordon NODE…`: a node's `spec.unschedulable`, as
//! kubectl cordons a Kubernetes node. A cordoned node takes no new task
//! (the scheduler leaves it out and `corral why` counts it among the
//! unschedulable); what runs there runs on.

use anyhow::Result;
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
    /// Mark nodes schedulable again.
    Uncordon {
        /// The nodes.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
}

/// Runs `corral node …`.
pub async fn run(ctx: &Ctx, cmd: &NodeCommand) -> Result<()> {
    let (nodes, unschedulable, verb) = match cmd {
        NodeCommand::Cordon { nodes } => (nodes, true, "cordoned"),
        NodeCommand::Uncordon { nodes } => (nodes, false, "uncordoned"),
    };
    let api: Api<Node> = Api::all(ctx.client.clone());
    for name in nodes {
        let before = api.get(name).await.map_err(server_error)?;
        if before.spec.unschedulable == unschedulable {
            outln!("node.corral.dev/{name} already {verb}");
            continue;
        }
        // `false` is written as null: the field's default, as kubectl does.
        let value = if unschedulable {
            json!(true)
        } else {
            json!(null)
        };
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": value}})),
        )
        .await
        .map_err(server_error)?;
        outln!("node.corral.dev/{name} {verb}");
    }
    Ok(())
}
