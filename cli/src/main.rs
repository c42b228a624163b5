//! `corral`: the one binary of Corral.
//!
//! `corral up` runs a whole single-machine cluster; `corral server` and
//! `corral agent` run the control plane and a node agent separately; the
//! kubectl-style verbs (`apply`, `get`, `describe`, `delete`, `logs`, `why`, `top`,
//! `events`, `job kill|restart`) are clients of the API server
//! ([`client`]); `crds`, `validate` and `store` are tools for operators.

/// mimalloc: the API server allocates many small JSON values per request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `println!` for command output: a closed pipe (`corral get … | head`)
/// ends the program quietly instead of panicking.
macro_rules! outln {
    () => { $crate::write_out(format_args!("\n")) };
    ($($t:tt)*) => { $crate::write_out(format_args!("{}\n", format_args!($($t)*))) };
}

/// `print!` for command output; see [`outln!`].
macro_rules! out {
    ($($t:tt)*) => { $crate::write_out(format_args!($($t)*)) };
}

/// Writes to stdout; exits quietly when the reader has gone away.
fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args)
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

mod agent_cmd;
mod client;
mod controllers_cmd;
mod credentials_cmd;
mod down_cmd;
mod manifests;
mod server_cmd;
mod store_cmd;
mod up_cmd;

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
    #[command(flatten)]
    client: client::ClientArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole cluster on this machine: API server, controllers and one agent.
    Up(Box<up_cmd::UpArgs>),
    /// Stop `corral up` and every task it started on this machine (the cluster's state is kept).
    Down(down_cmd::DownArgs),
    /// Create or update objects from manifests (server-side apply).
    Apply(client::apply::ApplyArgs),
    /// List objects as tables (`-o wide|yaml|json|name`, `-w` to watch).
    Get(client::get::GetArgs),
    /// Show an object in detail: a task's timeline, a job's tasks, a node's allocation.
    Describe {
        /// Kind (`task`, `job`, `node`, …).
        kind: String,
        /// Names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Delete objects by kind and name, or those in manifests.
    Delete(client::apply::DeleteArgs),
    /// A task's output (stdout, or `--stderr`), from wherever it runs; `-f` follows it.
    Logs(client::logs::LogsArgs),
    /// What running these Jobs (or setting these Quotas) would do now:
    /// placements, preemptions, waits, quota use. Nothing is created.
    Plan(client::plan::PlanArgs),
    /// Why a task is pending, or who preempted it.
    Why {
        /// The task's name.
        task: String,
    },
    /// Where a service job's instances are reached: address, ports and
    /// readiness of each, from its EndpointSlices.
    Endpoints {
        /// The job's name.
        job: String,
    },
    /// Allocated vs total (nodes, roles), used vs allocated (nodes, tasks).
    Top {
        /// `nodes`, `tasks` or `roles`.
        what: client::top::TopWhat,
        /// Every namespace (tasks).
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// The timeline of task events (and Kubernetes Events).
    Events(client::jobs::EventsArgs),
    /// Kill or restart a job's tasks, or steer its update.
    #[command(subcommand)]
    Job(client::jobs::JobCommand),
    /// Cordon, uncordon or drain nodes, or schedule their maintenance.
    #[command(subcommand)]
    Node(client::nodes::NodeCommand),
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
    Store(Box<store_cmd::StoreArgs>),
    /// Run the Kubernetes-compatible API server and the controllers.
    Server(Box<server_cmd::ServerArgs>),
    /// Run the controllers alone against an API server, with leader election.
    Controllers(controllers_cmd::ControllersArgs),
    /// Run a node agent (containerd, process or simulated runtime), or import an image.
    Agent(Box<agent_cmd::AgentArgs>),
    /// Issue a node's or a user's kubeconfig, signed by the cluster's CA
    /// (on the control-plane machine).
    #[command(subcommand)]
    Credentials(credentials_cmd::CredentialsCommand),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CORRAL_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs redirected to files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, as kubectl reports errors; the chain of causes after colons.
            let text = format!("{e:#}");
            if text.starts_with("Error from server") {
                eprintln!("{text}");
            } else {
                eprintln!("error: {text}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let Cli {
        command,
        client: client_args,
    } = Cli::parse_from(args()?);
    let ctx = || client::Ctx::connect(&client_args);
    match command {
        Command::Up(args) => up_cmd::run(*args).await,
        Command::Down(args) => down_cmd::run(args).await,
        Command::Credentials(cmd) => credentials_cmd::run(cmd),
        Command::Crds { out, check } => crds(out, check),
        Command::Validate { files } => validate(&files),
        Command::Store(args) => store_cmd::run(*args).await,
        Command::Server(args) => server_cmd::run(*args).await,
        Command::Controllers(args) => controllers_cmd::run(args).await,
        Command::Agent(args) => agent_cmd::run(*args).await,
        Command::Apply(a) => client::apply::apply(&ctx().await?, &a).await,
        Command::Get(a) => client::get::run(&ctx().await?, &a).await,
        Command::Describe { kind, names } => {
            client::describe::describe(&ctx().await?, &kind, &names).await
        }
        Command::Delete(a) => client::apply::delete(&ctx().await?, &a).await,
        Command::Why { task } => client::why::run(&ctx().await?, &task).await,
        Command::Plan(a) => client::plan::run(&ctx().await?, &a).await,
        Command::Endpoints { job } => client::endpoints::run(&ctx().await?, &job).await,
        Command::Logs(a) => client::logs::run(&ctx().await?, &a).await,
        Command::Top {
            what,
            all_namespaces,
        } => client::top::run(&ctx().await?, what, all_namespaces).await,
        Command::Events(a) => client::jobs::events(&ctx().await?, &a).await,
        Command::Job(j) => client::jobs::run(&ctx().await?, &j).await,
        Command::Node(n) => client::nodes::run(&ctx().await?, &n).await,
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
            outln!("---\n{yaml}");
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
        outln!("{} CRDs up to date in {}", rendered.len(), dir.display());
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (file, yaml) in &rendered {
        std::fs::write(dir.join(file), yaml).with_context(|| format!("writing {file}"))?;
        outln!("wrote {}", dir.join(file).display());
    }
    Ok(())
}

fn validate(files: &[PathBuf]) -> Result<()> {
    let (docs, skipped) = manifests::read_corral(files)?;
    for (source, kind) in &skipped {
        outln!("{source}: {kind} is a built-in kind, checked by the API server");
    }
    let mut bad = 0;
    for doc in &docs {
        let errors = doc.object.validate();
        if errors.is_empty() {
            outln!("{}: {} valid", doc.source, doc.describe());
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
