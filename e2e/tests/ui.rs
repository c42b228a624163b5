//! The web UI in a real browser: `corral up` with the examples applied,
//! then `e2e/ui/ui.test.mjs` drives Debian's headless Chromium through
//! Playwright: a wrong token refused, sign-in with the admin token, the
//! cluster at a glance, the jobs, a job created meanwhile whose task moves
//! through its phases without a reload, its timeline with actors and
//! latency and its logs, a pending task's explanation, nodes, events. The
//! screenshots are kept in `target/ui-screenshots/`.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use corral_e2e::{Corral, Kubectl, Server, examples, s, wait_for, workspace};

#[test]
fn the_ui_shows_a_live_cluster_in_a_real_browser() -> Result<()> {
    let script = workspace().join("e2e/ui/ui.test.mjs");
    ensure!(
        workspace()
            .join("e2e/ui/node_modules/playwright-core")
            .exists(),
        "Playwright is not installed: run scripts/install-tools.sh"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    ensure!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} not found: run scripts/install-deps.sh"
    );
    let home = tempfile::tempdir()?;
    let up = Server::up_in(
        home.path(),
        &[
            "--resources",
            // Ports apart from other tests' (the frontends serve on the host).
            "cpus=4,memory=16Gi,disk=20Gi,ports=[33000-33099]",
            "--containerd-address",
            "/nonexistent/containerd.sock",
        ],
        &[],
    )?;
    let c = Corral::new(&up);
    c.run(&["apply", "-f", &s(&examples())])?.ok()?;
    wait_for("the examples' tasks", Duration::from_secs(60), || {
        Ok(c.run(&["get", "tasks", "-A"])?
            .stdout
            .contains("frontend-1-0"))
    })?;
    let (token, url) = Kubectl::new(&up)?.token_and_url()?;
    let shots = workspace().join("target/ui-screenshots");
    std::fs::create_dir_all(&shots)?;
    let out = Command::new("node")
        .arg(&script)
        .env("CORRAL_URL", &url)
        .env("CORRAL_TOKEN", &token)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .context("running node")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "the browser test failed (screenshots in {}):\n{stdout}{}\n{}",
        shots.display(),
        String::from_utf8_lossy(&out.stderr),
        up.log()
    );
    println!("UI timings: {stdout}");
    for shot in [
        "overview",
        "charts",
        "jobs",
        "job-running",
        "timeline",
        "pending",
        "nodes",
    ] {
        ensure!(shots.join(format!("{shot}.png")).exists(), "no {shot}.png");
    }
    Ok(())
}
