//! `corral`: the one binary of Corral.
//!
//! Today it runs the API server (`corral server`), generates the CRDs,
//! validates manifests, and loads and lists objects in a store (embedded
//! under `$CORRAL_HOME`, or etcd). `agent`, `up` and the kubectl-style verbs
//! join it as their issues land.

/// mimalloc: the API server allocates many small JSON values per request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agent_cmd;
mod manifests;
mod server_cmd;
mod store_cmd;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "corral",
    version,
    about = "Corral: a declarative cluster manager for services, batch and cron jobs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the CustomResourceDefinitions generated from the types.
    Crds {
        /// Directory to write `<plural>.corral.dev.yaml` files into; stdout when absent.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only check that `--out` already holds exactly the generated files.
        #[arg(long, requires = "out")]
        check: bool,
    },
    /// Check manifests against Corral's schemas and validation rules.
    Validate {
        /// Files or directories of YAML manifests (`-` for stdin).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Work directly with the store (for operators; clients use the API server).
    Store(store_cmd::StoreArgs),
    /// Run the Kubernetes-compatible API server and the controllers.
    Server(server_cmd::ServerArgs),
    /// Run a node agent (containerd, process or simulated runtime), or import an image.
    Agent(Box<agent_cmd::AgentArgs>),
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CORRAL_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse_from(args()?).command {
        Command::Crds { out, check } => crds(out, check),
        Command::Validate { files } => validate(&files),
        Command::Store(args) => store_cmd::run(args).await,
        Command::Server(args) => server_cmd::run(args).await,
        Command::Agent(args) => agent_cmd::run(*args).await,
    }
}

/// The command line, with `corral agent`'s flags resolved from the
/// environment, `file://` values and the configuration directory.
fn args() -> Result<Vec<std::ffi::OsString>> {
    let mut all: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if all.get(1).is_none_or(|a| a != "agent") {
        return Ok(all);
    }
    let rest = all.split_off(2);
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let config_dir = rest
        .iter()
        .zip(rest.iter().skip(1))
        .find(|(a, _)| *a == "--config-dir")
        .map(|(_, v)| PathBuf::from(v))
        .or_else(|| {
            rest.iter()
                .find_map(|a| a.to_str()?.strip_prefix("--config-dir=").map(PathBuf::from))
        })
        .or_else(|| env.get("CORRAL_AGENT_CONFIG_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(agent_cmd::DEFAULT_CONFIG_DIR));
    let dir = config_dir.is_dir().then_some(config_dir.as_path());
    all.extend(agent_cmd::resolve_args(rest, &env, dir)?);
    Ok(all)
}

fn crds(out: Option<PathBuf>, check: bool) -> Result<()> {
    let rendered = corral_api::crds::render_all()?;
    let Some(dir) = out else {
        for (_, yaml) in rendered {
            println!("---\n{yaml}");
        }
        return Ok(());
    };
    if check {
        let stale: Vec<_> = rendered
            .iter()
            .filter(|(f, y)| {
                std::fs::read_to_string(dir.join(f)).ok().as_deref() != Some(y.as_str())
            })
            .map(|(f, _)| f.clone())
            .collect();
        anyhow::ensure!(
            stale.is_empty(),
            "out of date in {}: {}",
            dir.display(),
            stale.join(", ")
        );
        println!("{} CRDs up to date in {}", rendered.len(), dir.display());
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (file, yaml) in &rendered {
        std::fs::write(dir.join(file), yaml).with_context(|| format!("writing {file}"))?;
        println!("wrote {}", dir.join(file).display());
    }
    Ok(())
}

fn validate(files: &[PathBuf]) -> Result<()> {
    let docs = manifests::read_all(files)?;
    let mut bad = 0;
    for doc in &docs {
        let errors = doc.object.validate();
        if errors.is_empty() {
            println!("{}: {} valid", doc.source, doc.describe());
        } else {
            bad += 1;
            eprintln!("{}: {} is invalid:", doc.source, doc.describe());
            for e in errors {
                eprintln!("  * {e}");
            }
        }
    }
    anyhow::ensure!(bad == 0, "{bad} of {} objects are invalid", docs.len());
    Ok(())
}
