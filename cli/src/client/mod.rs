//! The kubectl-style verbs of `corral` (`apply`, `get`, `describe`, `delete`,
//! `logs`, `why`, `top`, `events`, `job kill|restart`), as a kube-rs client of the
//! API server.
//!
//! Reads the kubeconfig from `--kubeconfig`, `$KUBECONFIG` or
//! `$CORRAL_HOME/kubeconfig` (in that order). Kind names resolve like
//! kubectl's: plural, singular, kind, short name, `plural.group`, or the
//! `corral` category; the table is the served one ([`Catalog::standard`]).
//! Server errors print as kubectl prints them: `Error from server
//! (NotFound): …`.

pub mod apply;
pub mod describe;
pub mod endpoints;
pub mod get;
pub mod jobs;
pub mod logs;
pub mod nodes;
pub mod plan;
pub mod top;
pub mod why;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use corral_apiserver::Catalog;
use corral_apiserver::kinds::catalog::ResourceDesc;
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use serde_json::Value;

use crate::store_cmd::home_dir;

/// Where the API server is and which namespace to use.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Kubeconfig (default `$KUBECONFIG`, then `$CORRAL_HOME/kubeconfig`).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Corral's state directory (default `~/.corral`).
    #[arg(long, env = "CORRAL_HOME", global = true, hide = true)]
    pub home: Option<PathBuf>,
}

/// A connected client with the kinds it can name.
#[derive(Clone)]
pub struct Ctx {
    /// The kube-rs client.
    pub client: kube::Client,
    /// The served kinds.
    pub registry: Catalog,
    /// The namespace for namespaced kinds.
    pub namespace: String,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// Connects as `args` say.
    pub async fn connect(args: &ClientArgs) -> Result<Ctx> {
        let path = match (&args.kubeconfig, std::env::var_os("KUBECONFIG")) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) if !p.is_empty() => {
                // Like kubectl, the first file of a list.
                std::env::split_paths(&p).next().unwrap_or_default()
            }
            _ => home_dir(args.home.clone())?.join("kubeconfig"),
        };
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading the kubeconfig {} (start a cluster with `corral up`, or pass --kubeconfig)",
                path.display()
            )
        })?;
        let kc = kube::config::Kubeconfig::from_yaml(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using {}", path.display()))?;
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        Ok(Ctx {
            client: corral_controllers::client::connect(config)?,
            registry: Catalog::standard(),
            namespace,
        })
    }

    /// The kinds `name` stands for (several for a category, or a comma list).
    pub fn resolve(&self, name: &str) -> Result<Vec<Arc<ResourceDesc>>> {
        let mut out: Vec<Arc<ResourceDesc>> = Vec::new();
        for part in name.split(',').filter(|p| !p.is_empty()) {
            let found = resolve_one(&self.registry, part)?;
            for d in found {
                if !out.iter().any(|o| Arc::ptr_eq(o, &d)) {
                    out.push(d);
                }
            }
        }
        if out.is_empty() {
            bail!("you must specify the type of resource to get");
        }
        Ok(out)
    }

    /// The one kind `name` stands for.
    pub fn resolve_kind(&self, name: &str) -> Result<Arc<ResourceDesc>> {
        let mut all = self.resolve(name)?;
        if all.len() != 1 {
            bail!("{name:?} names several kinds; name one");
        }
        Ok(all.remove(0))
    }

    /// A dynamic API for `desc`: in `namespace` (or every one when `None`)
    /// for namespaced kinds.
    pub fn api(&self, desc: &ResourceDesc, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = api_resource(desc);
        match (desc.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// The collection URL of `desc` (in `namespace` when namespaced and given).
    pub fn collection_url(&self, desc: &ResourceDesc, namespace: Option<&str>) -> String {
        let base = if desc.group.is_empty() {
            format!("/api/{}", desc.version)
        } else {
            format!("/apis/{}/{}", desc.group, desc.version)
        };
        match (desc.namespaced, namespace) {
            (true, Some(ns)) => format!("{base}/namespaces/{ns}/{}", desc.plural),
            _ => format!("{base}/{}", desc.plural),
        }
    }

    /// GET `url` with `accept`, as JSON.
    pub async fn get_json(&self, url: &str, accept: &str) -> Result<Value> {
        let req = http::Request::get(url)
            .header(http::header::ACCEPT, accept)
            .body(Vec::new())?;
        let text = self.client.request_text(req).await.map_err(server_error)?;
        Ok(serde_json::from_str(&text)?)
    }
}

fn resolve_one(registry: &Catalog, name: &str) -> Result<Vec<Arc<ResourceDesc>>> {
    let lower = name.to_lowercase();
    if lower == "corral" || lower == "all" {
        return Ok(registry
            .all()
            .iter()
            .filter(|d| d.categories.iter().any(|c| c == "corral"))
            .cloned()
            .collect());
    }
    // `tasks.corral.dev`, `task.corral.dev`, `leases.coordination.k8s.io`.
    let (resource, group) = match lower.split_once('.') {
        Some((r, g)) => (r.to_owned(), Some(g.to_owned())),
        None => (lower.clone(), None),
    };
    let mut matches: Vec<Arc<ResourceDesc>> = registry
        .all()
        .iter()
        .filter(|d| group.as_deref().is_none_or(|g| d.group == g))
        .filter(|d| {
            d.plural == resource
                || d.singular == resource
                || d.kind.to_lowercase() == resource
                || d.short_names.contains(&resource)
        })
        .cloned()
        .collect();
    // A bare name shared by a Corral kind and a built-in one means the Corral one.
    if matches.len() > 1 {
        matches.retain(|d| d.group == "corral.dev");
    }
    if matches.is_empty() {
        bail!("the server doesn't have a resource type {name:?}");
    }
    Ok(matches)
}

/// kube-rs's description of a served kind.
pub fn api_resource(desc: &ResourceDesc) -> ApiResource {
    ApiResource {
        group: desc.group.to_owned(),
        version: desc.version.to_owned(),
        api_version: desc.api_version(),
        kind: desc.kind.to_owned(),
        plural: desc.plural.to_owned(),
    }
}

/// A server error as kubectl words it.
pub fn server_error(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => {
            let reason = if s.reason.is_empty() {
                "Unknown".to_owned()
            } else {
                s.reason.clone()
            };
            anyhow::anyhow!("Error from server ({reason}): {}", s.message)
        }
        other => anyhow::Error::new(other).context("talking to the Corral API server"),
    }
}

/// A kind as kubectl names it in messages: `task.corral.dev`, `configmap`.
pub fn singular_name(desc: &ResourceDesc) -> String {
    if desc.group.is_empty() {
        desc.singular.to_owned()
    } else {
        format!("{}.{}", desc.singular, desc.group)
    }
}

/// `kind/name` as kubectl prints it (`task.corral.dev/web-0-0`).
pub fn ref_name(desc: &ResourceDesc, name: &str) -> String {
    format!("{}/{name}", singular_name(desc))
}

/// Prints rows as kubectl does: left-aligned columns three spaces apart.
pub fn print_columns(rows: &[Vec<String>]) {
    let widths = column_widths(rows);
    for row in rows {
        outln!("{}", format_row(row, &widths));
    }
}

/// The widest cell of each column.
pub fn column_widths(rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            if widths.len() <= i {
                widths.push(w);
            } else if widths[i] < w {
                widths[i] = w;
            }
        }
    }
    widths
}

/// One row padded to `widths` (the last cell unpadded).
pub fn format_row(row: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in row.iter().enumerate() {
        if i + 1 == row.len() {
            line.push_str(cell);
        } else {
            let w = widths.get(i).copied().unwrap_or(0);
            line.push_str(&format!("{cell:<w$}   "));
        }
    }
    line.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_resolve_like_kubectl() -> Result<()> {
        let r = Catalog::standard();
        let one = |n: &str| -> Result<String> {
            let v = resolve_one(&r, n)?;
            anyhow::ensure!(v.len() == 1, "{n}: {} kinds", v.len());
            Ok(v[0].kind.to_owned())
        };
        for (name, kind) in [
            ("tasks", "Task"),
            ("task", "Task"),
            ("Task", "Task"),
            ("tk", "Task"),
            ("tasks.corral.dev", "Task"),
            ("jobs", "Job"),
            ("cj", "Job"),
            ("nodes", "Node"),
            ("cm", "ConfigMap"),
            ("leases.coordination.k8s.io", "Lease"),
            ("pods", "Pod"),
            ("po", "Pod"),
        ] {
            assert_eq!(one(name)?, kind, "{name}");
        }
        assert!(resolve_one(&r, "corral")?.len() >= 6);
        assert!(resolve_one(&r, "deployments").is_err());
        Ok(())
    }

    #[test]
    fn columns_line_up() {
        let rows = vec![
            vec!["NAME".to_owned(), "PHASE".to_owned()],
            vec!["a-long-name".to_owned(), "RUNNING".to_owned()],
        ];
        let w = column_widths(&rows);
        assert_eq!(format_row(&rows[0], &w), "NAME          PHASE");
        assert_eq!(format_row(&rows[1], &w), "a-long-name   RUNNING");
    }
}
