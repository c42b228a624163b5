//! Stock kubectl 1.32.3 against the `corral server` binary, one file per
//! concern: writes, reads, and the server binary itself.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use corral_e2e::{Kubectl, Server, corral_bin, examples, s, wait_for};

const NAMESPACES: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: analytics}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: web}\n";

fn setup() -> Result<(Server, Kubectl)> {
    let server = Server::start()?;
    let k = Kubectl::new(&server)?;
    k.run_stdin(&["apply", "-f", "-"], NAMESPACES)?.ok()?;
    Ok((server, k))
}

/// The API server alone (`--no-controllers`), for tests that write status by
/// hand as a controller would.
fn setup_api_only() -> Result<(Server, Kubectl)> {
    let server = Server::start_with(&["--no-controllers"])?;
    let k = Kubectl::new(&server)?;
    k.run_stdin(&["apply", "-f", "-"], NAMESPACES)?.ok()?;
    Ok((server, k))
}

/// Applies `examples/<file>`.
fn apply_example(k: &Kubectl, file: &str) -> Result<String> {
    if file == "talk-adhoc-job.yaml" {
        k.corral_role("analytics")?;
    }
    k.run(&["apply", "-f", &s(&examples().join(file))])?.ok()
}

/// Starts `kubectl wait --for=<condition> job/sparkie`, writes `status`
/// through the status subresource as a controller would, and checks that
/// the wait ends with the condition met.
fn wait_while_status_is_written(k: &Kubectl, condition: &str, status: &str) -> Result<()> {
    wait_by_while_status_is_written(k, k.command(), condition, status).map(|_| ())
}

/// [`wait_while_status_is_written`] with `kubectl` (a command that may carry
/// its own environment and flags) running the wait; returns the wait's
/// stderr.
fn wait_by_while_status_is_written(
    k: &Kubectl,
    mut kubectl: std::process::Command,
    condition: &str,
    status: &str,
) -> Result<String> {
    let waiter = kubectl
        .args([
            "-n",
            "analytics",
            "wait",
            &format!("--for={condition}"),
            "job/sparkie",
            "--timeout=30s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    k.run(&[
        "-n",
        "analytics",
        "patch",
        "job",
        "sparkie",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ])?
    .ok()?;
    let out = waiter.wait_with_output()?;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("kubectl wait failed: {log}");
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));
    Ok(log)
}

/// The jobs under `examples/`.
const EXAMPLE_JOBS: usize = 4;

mod rbac;
mod reads;
mod server;
mod writes;
