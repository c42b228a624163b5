//! Stock kubectl 1.32.3 against the `corral server` binary, one file per
//! concern: writes, reads, and the server binary itself.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use corral_e2e::{Kubectl, Server, examples, s, wait_for};

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

/// The jobs under `examples/`.
const EXAMPLE_JOBS: usize = 5;

mod reads;
mod server;
mod writes;
