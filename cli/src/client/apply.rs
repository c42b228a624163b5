//! `corral apply` (server-side apply, field manager `corral`) and `corral
//! delete`.
//!
//! `apply -f FILE|DIR|-` reads every YAML document, applies Namespaces
//! first (so the objects in them can follow in the same run), then the rest
//! in file order, printing one line per object as it goes and a summary with
//! the time taken. A document that fails is reported and the others still
//! apply; the command then exits non-zero.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use super::{Ctx, ref_name, server_error};

/// `corral apply` options.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Files or directories of YAML manifests (`-` for stdin).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Take over fields another manager owns instead of failing with a conflict.
    #[arg(long)]
    pub force_conflicts: bool,
    /// Ask the server to check everything without persisting it.
    #[arg(long)]
    pub dry_run: bool,
}

/// One document from a manifest file.
#[derive(Debug, Clone)]
pub struct Doc {
    /// `file.yaml#2`.
    pub source: String,
    /// The object.
    pub value: Value,
}

/// Reads the documents under `paths` (see [`crate::manifests::read_documents`]);
/// a `List` (as `get -o yaml` writes) applies item by item.
pub fn read_docs(paths: &[PathBuf]) -> Result<Vec<Doc>> {
    Ok(unfold(crate::manifests::read_documents(paths)?))
}

fn unfold(docs: Vec<(String, Value)>) -> Vec<Doc> {
    let mut out = Vec::new();
    for (source, value) in docs {
        if value["kind"] == "List" {
            for item in value["items"].as_array().cloned().unwrap_or_default() {
                out.push(Doc {
                    source: source.clone(),
                    value: item,
                });
            }
        } else {
            out.push(Doc { source, value });
        }
    }
    out
}

/// Namespaces first, then everything else in its original order.
pub fn apply_order(docs: &mut [Doc]) {
    docs.sort_by_key(|d| d.value["kind"] != "Namespace");
}

/// Runs `corral apply`.
pub async fn apply(ctx: &Ctx, args: &ApplyArgs) -> Result<()> {
    let started = Instant::now();
    let mut docs = read_docs(&args.files)?;
    if docs.is_empty() {
        bail!("no objects passed to apply");
    }
    apply_order(&mut docs);
    let mut params = PatchParams::apply("corral");
    params.force = args.force_conflicts;
    params.dry_run = args.dry_run;
    let (mut ok, mut failed) = (0usize, 0usize);
    let total = docs.len();
    for doc in &docs {
        match apply_one(ctx, doc, &params).await {
            Ok(line) => {
                ok += 1;
                let suffix = if args.dry_run {
                    " (server dry run)"
                } else {
                    ""
                };
                outln!("{line} serverside-applied{suffix}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e:#}", doc.source);
            }
        }
    }
    if total > 1 {
        eprintln!(
            "applied {ok} of {total} objects in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    if failed > 0 {
        bail!("{failed} of {total} objects failed to apply");
    }
    Ok(())
}

async fn apply_one(ctx: &Ctx, doc: &Doc, params: &PatchParams) -> Result<String> {
    let v = &doc.value;
    let (Some(api_version), Some(kind)) = (v["apiVersion"].as_str(), v["kind"].as_str()) else {
        bail!("apiVersion and kind are required");
    };
    let Some(desc) = ctx.registry.find_kind(api_version, kind) else {
        bail!("no matches for kind {kind:?} in version {api_version:?}");
    };
    let Some(name) = v["metadata"]["name"].as_str() else {
        bail!("metadata.name is required");
    };
    let ns = if desc.namespaced {
        Some(
            v["metadata"]["namespace"]
                .as_str()
                .unwrap_or(&ctx.namespace)
                .to_owned(),
        )
    } else {
        None
    };
    let api = ctx.api(&desc, ns.as_deref());
    let obj: DynamicObject = serde_json::from_value(v.clone())?;
    api.patch(name, params, &Patch::Apply(&obj))
        .await
        .map_err(server_error)?;
    Ok(ref_name(&desc, name))
}

/// `corral delete` options.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kind, then names (or `-f` alone).
    pub args: Vec<String>,
    /// Delete the objects these manifests name.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// Return at once instead of waiting for the objects to be gone.
    #[arg(long = "wait", default_value_t = true, action = clap::ArgAction::Set)]
    pub wait: bool,
    /// Delete dependents first (`foreground`), after (`background`), or never (`orphan`).
    #[arg(long, default_value = "background", value_parser = ["background", "foreground", "orphan"])]
    pub cascade: String,
}

/// Runs `corral delete`.
pub async fn delete(ctx: &Ctx, args: &DeleteArgs) -> Result<()> {
    let mut targets: Vec<(
        std::sync::Arc<corral_apiserver::kinds::catalog::ResourceDesc>,
        Option<String>,
        String,
    )> = Vec::new();
    if !args.files.is_empty() {
        for doc in read_docs(&args.files)? {
            let v = &doc.value;
            let desc = ctx
                .registry
                .find_kind(
                    v["apiVersion"].as_str().unwrap_or_default(),
                    v["kind"].as_str().unwrap_or_default(),
                )
                .with_context(|| format!("{}: unknown kind", doc.source))?;
            let name = v["metadata"]["name"]
                .as_str()
                .with_context(|| format!("{}: metadata.name is required", doc.source))?
                .to_owned();
            let ns = v["metadata"]["namespace"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| Some(ctx.namespace.clone()));
            targets.push((desc, ns, name));
        }
    } else {
        let Some((kind, names)) = args.args.split_first() else {
            bail!("name a kind and objects, or pass -f");
        };
        // `corral delete task/a job/b` also works.
        if names.is_empty() && kind.contains('/') {
            for a in &args.args {
                let (k, n) = a.split_once('/').context("expected KIND/NAME")?;
                targets.push((
                    ctx.resolve_kind(k)?,
                    Some(ctx.namespace.clone()),
                    n.to_owned(),
                ));
            }
        } else {
            if names.is_empty() {
                bail!("name the {kind} to delete");
            }
            let desc = ctx.resolve_kind(kind)?;
            for n in names {
                targets.push((desc.clone(), Some(ctx.namespace.clone()), n.clone()));
            }
        }
    }
    let dp = match args.cascade.as_str() {
        "foreground" => DeleteParams::foreground(),
        "orphan" => DeleteParams::orphan(),
        _ => DeleteParams::background(),
    };
    let mut failed = 0;
    for (desc, ns, name) in &targets {
        let api = ctx.api(desc, if desc.namespaced { ns.as_deref() } else { None });
        match api.delete(name, &dp).await {
            Ok(deleted) => {
                if args.wait {
                    // The object as it was when deletion began (absent: already gone).
                    let uid = deleted.left().and_then(|o| o.metadata.uid);
                    wait_gone(api.clone(), name, uid).await?;
                }
                outln!("{} \"{name}\" deleted", super::singular_name(desc));
            }
            Err(e) => {
                failed += 1;
                eprintln!("{:#}", server_error(e));
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} deletions failed", targets.len());
    }
    Ok(())
}

/// Waits (on a watch) until the object with `uid` is gone: finalizers and
/// foreground deletion can keep it a while.
async fn wait_gone(api: kube::Api<DynamicObject>, name: &str, uid: Option<String>) -> Result<()> {
    let Some(uid) = uid else {
        return Ok(());
    };
    let gone = kube::runtime::wait::await_condition(
        api,
        name,
        kube::runtime::wait::conditions::is_deleted(&uid),
    );
    match tokio::time::timeout(std::time::Duration::from_secs(60), gone).await {
        Ok(r) => r.map(|_| ()).context("watching the deletion"),
        Err(_) => bail!("{name} was not gone within 60s (finalizers may be pending)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_apply_first_and_lists_unfold() -> Result<()> {
        let mut raw = Vec::new();
        crate::manifests::decode(
            "apiVersion: corral.dev/v1alpha1\nkind: Role\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns}\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n",
            "x.yaml",
            &mut raw,
        )?;
        let mut docs = unfold(raw);
        apply_order(&mut docs);
        let kinds: Vec<&str> = docs
            .iter()
            .map(|d| d.value["kind"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(kinds, ["Namespace", "Role", "ConfigMap"]);
        assert_eq!(docs[0].source, "x.yaml#1");
        Ok(())
    }

    #[test]
    fn bad_yaml_names_its_file() {
        let mut docs = Vec::new();
        let err = crate::manifests::decode("a: [", "bad.yaml", &mut docs)
            .err()
            .map(|e| format!("{e:#}"));
        assert!(err.is_some_and(|e| e.contains("bad.yaml")));
    }
}
