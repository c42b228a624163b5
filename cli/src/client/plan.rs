//! `corral plan -f FILE…`: what running these Jobs (or setting these
//! Quotas) would do now, asked of the server as a PlanReview (which any
//! client, kubectl included, can create). Nothing is created. Prints each
//! instance's node, the tasks it would preempt and why, what would wait and
//! why, the pending tasks a quota change would start, and each role's use
//! before and after beside its quota.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use corral_api::plan::{PlanReview, PlanStatus};
use serde_json::{Value, json};

use super::{Ctx, server_error};

/// `corral plan` options.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Files or directories of Job and Quota manifests (`-` for stdin).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Print the PlanReview's answer as JSON.
    #[arg(short = 'o', long = "output", value_parser = ["json"])]
    pub output: Option<String>,
}

fn quantities(r: &corral_api::Resources) -> String {
    if r.is_empty() {
        return "-".into();
    }
    r.0.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The plan as a person reads it.
pub fn format_plan(status: &PlanStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan over {} node(s); nothing was created.",
        status.nodes
    );
    if !status.instances.is_empty() {
        let _ = writeln!(out, "Instances:");
        for i in &status.instances {
            let place = match (&i.node, &i.pending) {
                (Some(n), _) if i.preempts.is_empty() => format!("on {n}"),
                (Some(n), _) => format!(
                    "on {n}, once it preempts {}",
                    i.preempts
                        .iter()
                        .map(|v| format!("{} ({}, {})", v.task, v.role, v.rule))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                (None, Some(p)) => p.summary.clone(),
                (None, None) => "pending".into(),
            };
            let _ = writeln!(out, "  {} #{}: {place}", i.job, i.instance);
        }
    }
    if !status.started.is_empty() {
        let _ = writeln!(out, "Pending tasks that would start:");
        for s in &status.started {
            let _ = writeln!(out, "  {} on {}", s.task, s.node);
        }
    }
    if !status.roles.is_empty() {
        let _ = writeln!(out, "Roles (held, with children):");
        for r in &status.roles {
            let mut line = format!(
                "  {}: {} -> {}",
                r.role,
                quantities(&r.before),
                quantities(&r.after)
            );
            if !r.limit.is_empty() {
                let _ = write!(line, " (limit {})", quantities(&r.limit));
            }
            if !r.guarantee.is_empty() {
                let _ = write!(line, " (guarantee {})", quantities(&r.guarantee));
            }
            if !r.over_limit.is_empty() {
                let _ = write!(line, "; over its limit in {}", r.over_limit.join(", "));
            }
            if !r.beyond_limit.is_empty() {
                let _ = write!(
                    line,
                    " (beyond it: {}; a limit ends nothing, it stops new tasks)",
                    r.beyond_limit.join(", ")
                );
            }
            if !r.reclaimable.is_empty() {
                let _ = write!(
                    line,
                    "; beyond its guarantee in {} (reclaimable)",
                    r.reclaimable.join(", ")
                );
            }
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// Runs `corral plan`.
pub async fn run(ctx: &Ctx, args: &PlanArgs) -> Result<()> {
    let mut jobs: Vec<Value> = Vec::new();
    let mut quotas: Vec<Value> = Vec::new();
    for doc in super::apply::read_docs(&args.files)? {
        let mut v = doc.value;
        match v["kind"].as_str() {
            Some("Job") => {
                if v["metadata"]["namespace"].is_null() {
                    v["metadata"]["namespace"] = json!(ctx.namespace);
                }
                jobs.push(v);
            }
            Some("Quota") => quotas.push(v),
            other => bail!(
                "{}: corral plan takes Jobs and Quotas, not {}",
                doc.source,
                other.unwrap_or("an object without a kind")
            ),
        }
    }
    let review = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "PlanReview",
        "spec": {"jobs": jobs, "quotas": quotas}});
    let req = http::Request::post("/apis/corral.dev/v1alpha1/planreviews")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&review)?)?;
    let answer: Value = ctx.client.request(req).await.map_err(server_error)?;
    if args.output.is_some() {
        outln!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let review: PlanReview = serde_json::from_value(answer)?;
    out!("{}", format_plan(&review.status.unwrap_or_default()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_reads_as_placements_victims_waits_and_quotas() {
        let status: PlanStatus = serde_json::from_value(json!({
            "nodes": 2,
            "instances": [
                {"job": "web/api", "instance": 0, "node": "n2"},
                {"job": "web/api", "instance": 1, "node": "n1",
                 "preempts": [{"task": "batch/etl-0-0", "role": "batch", "rule": "lower tier"}]},
                {"job": "web/api", "instance": 2, "pending": {"summary": "pending: 0/2 nodes fit: cpus exhausted", "reasons": []}}],
            "started": [{"task": "batch/q-0-0", "node": "n1"}],
            "roles": [{"role": "web", "before": {}, "after": {"cpus": 4}, "limit": {"cpus": 3}, "overLimit": ["cpus"]}]
        }))
        .expect("status");
        let text = format_plan(&status);
        for want in [
            "Plan over 2 node(s); nothing was created.",
            "web/api #0: on n2",
            "web/api #1: on n1, once it preempts batch/etl-0-0 (batch, lower tier)",
            "web/api #2: pending: 0/2 nodes fit: cpus exhausted",
            "batch/q-0-0 on n1",
            "web: - -> cpus 4 (limit cpus 3); over its limit in cpus",
        ] {
            assert!(text.contains(want), "{want:?} in:\n{text}");
        }
    }
}
