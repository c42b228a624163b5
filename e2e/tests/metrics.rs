//! Every component's metrics, scraped from the `corral` binary with real
//! clients (kubectl for the API server, curl with client certificates for
//! the agent's and the controllers' own endpoints) and linted with
//! `promtool check metrics` (Prometheus's own naming rules):
//! - `corral up` (API server, controllers and an agent in one process): the
//!   API server's `/metrics` carries the controllers' series and the
//!   cluster's; the agent's shows a running task given against used;
//! - `corral controllers` apart from `corral server --no-controllers`
//!   serves its own `/metrics`;
//! - a monitoring identity (group `system:monitoring`) reads each, a tenant
//!   with a certificate from the same CA reads none (403).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use corral_e2e::{Agent, Corral, Kubectl, Server, TEST_IMAGE, corral_bin, free_address, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

/// A client certificate and key for `user` in `groups`, from `corral
/// credentials` (PEM files in `dir`).
struct Identity {
    cert: PathBuf,
    key: PathBuf,
    kubeconfig: PathBuf,
}

fn identity(server: &Server, dir: &Path, user: &str, groups: &[&str]) -> Result<Identity> {
    let kubeconfig = dir.join(format!("{user}.kubeconfig"));
    let mut args = vec!["credentials", "user", user];
    for g in groups {
        args.extend(["--group", g]);
    }
    let out = kubeconfig.to_string_lossy().into_owned();
    let home = server.home.to_string_lossy().into_owned();
    args.extend(["--out", &out, "--home", &home]);
    let issued = Command::new(corral_bin()?).args(&args).output()?;
    ensure!(issued.status.success(), "{issued:?}");
    let field = |name: &str| -> Result<Vec<u8>> {
        use base64::Engine;
        let k = Kubectl::with_kubeconfig(kubeconfig.clone())?;
        let data = k
            .run(&[
                "config",
                "view",
                "--raw",
                "-o",
                &format!("jsonpath={{.users[0].user.{name}}}"),
            ])?
            .ok()?;
        Ok(base64::engine::general_purpose::STANDARD.decode(data.trim())?)
    };
    let cert = dir.join(format!("{user}.crt"));
    let key = dir.join(format!("{user}.key"));
    std::fs::write(&cert, field("client-certificate-data")?)?;
    std::fs::write(&key, field("client-key-data")?)?;
    Ok(Identity {
        cert,
        key,
        kubeconfig,
    })
}

/// `GET url` with `who`'s certificate (the endpoint's own certificate is
/// self-made: curl does not check it, as the API server pins it instead):
/// (status, body).
fn scrape(url: &str, who: &Identity) -> Result<(u16, String)> {
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg("--cert")
        .arg(&who.cert)
        .arg("--key")
        .arg(&who.key)
        .arg(url)
        .output()
        .context("running curl")?;
    ensure!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let (body, code) = text.rsplit_once('\n').context("no status code")?;
    Ok((code.trim().parse()?, body.to_owned()))
}

/// `text` (OpenMetrics, as Corral serves it) in the classic Prometheus
/// text format that `promtool check metrics` reads: a counter's family is
/// named with its `_total` there, and there is no `# EOF` or `# UNIT`.
fn classic(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::new();
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Lints `text` with `promtool check metrics` where promtool is installed
/// (`scripts/install-deps.sh` installs it).
fn promtool_lint(what: &str, text: &str) -> Result<()> {
    let text = &classic(text);
    if Command::new("promtool").arg("--version").output().is_err() {
        eprintln!("promtool is not installed; {what} is not linted");
        return Ok(());
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().context("stdin")?, text.as_bytes())?;
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "promtool check metrics on {what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The sample names the families declared in `text` can have (a counter's
/// `_total`, a histogram's `_bucket`, `_sum` and `_count`).
fn exported(text: &str) -> std::collections::HashSet<String> {
    let mut names = std::collections::HashSet::new();
    for line in text.lines() {
        let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|l| l.split_once(' '))
        else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// The series names a query reads (Corral's and the API server's).
fn series_in(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = query.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts = ["corral_", "apiserver_"]
            .iter()
            .any(|p| query[i..].starts_with(p))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let end = query[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(query.len(), |n| i + n);
            out.push(query[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Every query the chart ships (dashboards' panels and variables, alert
/// rules): (where, query, whether it is PromQL).
fn chart_queries() -> Result<Vec<(String, String, bool)>> {
    let helm_home = tempfile::tempdir()?;
    let out = Command::new(corral_e2e::helm_bin()?)
        .args(["template", "corral"])
        .arg(corral_e2e::workspace().join("charts/corral"))
        .args([
            "--set",
            "metrics.dashboards.enabled=true",
            "--set",
            "metrics.alerts.enabled=true",
        ])
        .env("HELM_CACHE_HOME", helm_home.path().join("cache"))
        .env("HELM_CONFIG_HOME", helm_home.path().join("config"))
        .env("HELM_DATA_HOME", helm_home.path().join("data"))
        .output()?;
    ensure!(out.status.success(), "helm template: {out:?}");
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(&String::from_utf8(out.stdout)?)?;
    let mut queries = Vec::new();
    for doc in docs.iter().filter(|d| !d.is_null()) {
        match doc["kind"].as_str() {
            Some("ConfigMap") => {
                for (file, json) in doc["data"].as_object().context("data")? {
                    let dash: Value = serde_json::from_str(json.as_str().context("json")?)?;
                    for panel in dash["panels"].as_array().context("panels")? {
                        let title = panel["title"].as_str().unwrap_or_default();
                        for t in panel["targets"].as_array().context("targets")? {
                            let expr = t["expr"].as_str().context("expr")?;
                            queries.push((format!("{file}: {title}"), expr.to_owned(), true));
                        }
                    }
                    for var in dash["templating"]["list"]
                        .as_array()
                        .context("templating")?
                    {
                        if let Some(q) = var["query"]["query"].as_str() {
                            queries.push((
                                format!("{file}: ${}", var["name"]),
                                q.to_owned(),
                                false,
                            ));
                        }
                    }
                }
            }
            Some("PrometheusRule") => {
                for group in doc["spec"]["groups"].as_array().context("groups")? {
                    for rule in group["rules"].as_array().context("rules")? {
                        let expr = rule["expr"].as_str().context("expr")?;
                        queries.push((format!("alert {}", rule["alert"]), expr.to_owned(), true));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(queries)
}

/// Checks that every query the chart ships reads series in `exported`, and
/// that each PromQL query parses (`promtool check rules`, each as a
/// recording rule, the dashboards' variables given values).
fn check_chart_queries(exported: &std::collections::HashSet<String>) -> Result<()> {
    let queries = chart_queries()?;
    ensure!(
        queries.len() > 20,
        "only {} queries in the chart",
        queries.len()
    );
    for (at, query, _) in &queries {
        let names = series_in(query);
        ensure!(!names.is_empty(), "{at}: {query} reads no Corral series");
        for name in names {
            ensure!(
                exported.contains(&name),
                "{at}: {name} is not a series Corral exports ({query})"
            );
        }
    }
    if Command::new("promtool").arg("--version").output().is_err() {
        eprintln!("promtool is not installed; the chart's queries are not parsed");
        return Ok(());
    }
    let rules: Vec<Value> = queries
        .iter()
        .filter(|(_, _, promql)| *promql)
        .enumerate()
        .map(|(i, (_, q, _))| {
            let q = q
                .replace("$__rate_interval", "5m")
                .replace("$resource", "cpus")
                .replace("$role", "web")
                .replace("$node", "n1");
            serde_json::json!({"record": format!("chart:query{i}"), "expr": q})
        })
        .collect();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("rules.json");
    // JSON is YAML: promtool reads it as a rule file.
    let groups = serde_json::json!({"groups": [{"name": "chart", "rules": rules}]});
    std::fs::write(&file, groups.to_string())?;
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()?;
    ensure!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The value of the first sample of `text` whose line starts with `series`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

fn sleeper(name: &str) -> String {
    format!(
        r#"apiVersion: corral.dev/v1alpha1
kind: Role
metadata: {{name: web}}
spec: {{weight: 1}}
---
apiVersion: corral.dev/v1alpha1
kind: Quota
metadata: {{name: web}}
spec: {{role: web, guarantee: {{cpus: 1}}, limit: {{cpus: 2, memory: 1Gi}}}}
---
apiVersion: corral.dev/v1alpha1
kind: Job
metadata: {{name: {name}, namespace: default}}
spec:
  role: web
  environment: prod
  kind: service
  instances: 1
  resources: {{cpus: 1, memory: 64Mi}}
  container:
    image: {TEST_IMAGE}
    command: [sleep, "300"]
    killGracePeriodSeconds: 1
"#
    )
}

/// A job the role's quota (2 cpus, 1 of them held by the sleeper) keeps
/// pending.
const OVER_QUOTA: &str = "apiVersion: corral.dev/v1alpha1
kind: Job
metadata: {name: big, namespace: default}
spec:
  role: web
  environment: prod
  kind: adhoc
  instances: 1
  resources: {cpus: 2, memory: 64Mi}
  container: {image: busybox}
";

#[test]
fn the_api_server_and_the_agent_serve_metrics_to_monitoring_only() -> Result<()> {
    let home = tempfile::tempdir()?;
    let server = Server::up_in(
        home.path(),
        &[
            "--runtimes",
            "process",
            "--resources",
            "cpus=2,memory=2Gi,disk=1Gi",
        ],
        &[("CORRAL_AGENT_SAMPLE_SECONDS", "1")],
    )?;
    let c = Corral::new(&server);
    let k = Kubectl::new(&server)?;
    c.run_stdin(&["apply", "-f", "-"], &sleeper("spin"))?.ok()?;
    wait_for("the task to run", WAIT, || {
        Ok(c.run(&["get", "task", "spin-0-0", "--no-headers"])?
            .stdout
            .contains("RUNNING"))
    })
    .with_context(|| server.log())?;
    c.run_stdin(&["apply", "-f", "-"], OVER_QUOTA)?.ok()?;
    let certs = tempfile::tempdir()?;
    let monitoring = identity(&server, certs.path(), "prometheus", &["system:monitoring"])?;
    let tenant = identity(&server, certs.path(), "alice", &[])?;

    // The API server's, with the controllers' and the cluster's series in
    // the same scrape.
    let as_monitoring = Kubectl::with_kubeconfig(monitoring.kubeconfig.clone())?;
    let mut text = String::new();
    wait_for(
        "the cluster's figures in the API server's metrics",
        WAIT,
        || {
            text = as_monitoring.run(&["get", "--raw", "/metrics"])?.ok()?;
            Ok(
                value(&text, r#"corral_tasks{role="web",phase="RUNNING"}"#) == Some(1.0)
                    && value(
                        &text,
                        r#"corral_scheduler_pending_tasks{role="web",reason="QuotaExceeded"}"#,
                    ) == Some(1.0)
                    && value(
                        &text,
                        r#"corral_role_resource_allocated{role="web",resource="cpus""#,
                    ) == Some(1.0),
            )
        },
    )?;
    for series in [
        "apiserver_request_total{",
        r#"corral_scheduler_schedule_attempts_total{result="scheduled"}"#,
        "corral_scheduler_cycle_duration_seconds_bucket{",
        r#"corral_task_time_to_running_seconds_count{role="web"}"#,
        r#"corral_job_reconciles_total{result="success"}"#,
        "corral_node_ready{",
        r#"corral_cluster_resource_allocated{resource="cpus",unit="core"}"#,
        r#"corral_role_resource_limit{role="web",resource="cpus",unit="core"}"#,
        r#"corral_role_resource_guarantee{role="web",resource="cpus",unit="core"}"#,
    ] {
        ensure!(
            value(&text, series).is_some(),
            "{series} missing from:\n{text}"
        );
    }
    promtool_lint("the API server's metrics", &text)?;
    let denied =
        Kubectl::with_kubeconfig(tenant.kubeconfig.clone())?.run(&["get", "--raw", "/metrics"])?;
    ensure!(
        denied.code != 0,
        "a tenant read the metrics: {}",
        denied.stdout
    );

    // The agent's, at the endpoint its Node advertises.
    let node: Value =
        serde_json::from_str(&k.run(&["get", "nodes.corral.dev", "-o", "json"])?.ok()?)?;
    let url = node["items"][0]["status"]["logEndpoint"]["url"]
        .as_str()
        .context("the node advertises no endpoint")?
        .to_owned();
    let metrics_url = format!("{url}/metrics");
    let mut agent_text = String::new();
    wait_for("the task's use in the agent's metrics", WAIT, || {
        let (code, body) = scrape(&metrics_url, &monitoring)?;
        ensure!(code == 200, "{code}: {body}");
        agent_text = body;
        Ok(value(
            &agent_text,
            r#"corral_agent_task_resource_used{namespace="default",task="spin-0-0",role="web",resource="cpus""#,
        )
        .is_some()
            && value(
                &agent_text,
                r#"corral_agent_task_resource_used{namespace="default",task="spin-0-0",role="web",resource="memory""#,
            )
            .is_some_and(|v| v > 0.0)
            // Its sandbox, measured though it names no disk.
            && value(
                &agent_text,
                r#"corral_agent_task_resource_used{namespace="default",task="spin-0-0",role="web",resource="disk""#,
            )
            .is_some())
    })?;
    for series in [
        r#"corral_agent_task_resource_allocated{namespace="default",task="spin-0-0",role="web",resource="cpus",unit="core"} 1.0"#,
        r#"corral_agent_runtime_healthy{runtime="process"} 1"#,
        r#"corral_agent_container_starts_total{runtime="process",result="success"}"#,
        "corral_agent_container_start_duration_seconds_bucket{",
    ] {
        ensure!(
            agent_text.lines().any(|l| l.starts_with(series)),
            "{series} missing from:\n{agent_text}"
        );
    }
    promtool_lint("the agent's metrics", &agent_text)?;
    // A tenant's certificate is from the same CA: it reaches the agent, and
    // the API server says no, to the metrics and to the logs alike.
    assert_eq!(scrape(&metrics_url, &tenant)?.0, 403);
    assert_eq!(
        scrape(&format!("{url}/logs/default/spin-0-0"), &tenant)?.0,
        403
    );
    // The chart's dashboards and alerts read only what these serve.
    let mut all = exported(&text);
    all.extend(exported(&agent_text));
    check_chart_queries(&all)?;
    c.run(&["job", "kill", "spin", "--wait", "--timeout", "60"])?
        .ok()?;
    Ok(())
}

/// A `corral controllers` process, stopped on drop.
struct Controllers(Child);

impl Drop for Controllers {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn corral_controllers_serves_its_own_metrics() -> Result<()> {
    let server = Server::start_with(&["--no-controllers"])?;
    let listen = free_address()?;
    let log = server.home.join("controllers.log");
    let _controllers = Controllers(
        Command::new(corral_bin()?)
            .args(["controllers", "--metrics-listen", &listen, "--kubeconfig"])
            .arg(&server.kubeconfig)
            .env("CORRAL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(server.home.join("controllers.err"))?)
            .spawn()?,
    );
    let _agent = Agent::simulated(&server, "sim", 3, "cpus=2,memory=2Gi")?;
    let c = Corral::new(&server);
    c.run_stdin(&["apply", "-f", "-"], &sleeper("svc"))?.ok()?;
    let certs = tempfile::tempdir()?;
    let monitoring = identity(&server, certs.path(), "prometheus", &["system:monitoring"])?;
    let tenant = identity(&server, certs.path(), "alice", &[])?;
    let url = format!("https://{listen}/metrics");
    let mut text = String::new();
    wait_for("the controllers' metrics to show the task", WAIT, || {
        let (code, body) = match scrape(&url, &monitoring) {
            Ok(r) => r,
            // Not listening yet.
            Err(e) => {
                text = e.to_string();
                return Ok(false);
            }
        };
        if code != 200 {
            bail!("{code}: {body}");
        }
        text = body;
        Ok(value(
            &text,
            r#"corral_scheduler_schedule_attempts_total{result="scheduled"}"#,
        )
        .is_some_and(|v| v >= 1.0)
            && value(
                &text,
                r#"corral_node_resource_allocatable{node="sim-0",resource="cpus""#,
            ) == Some(2.0))
    })
    .with_context(|| {
        format!(
            "{}\nlast scrape: {text}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    })?;
    promtool_lint("the controllers' metrics", &text)?;
    assert_eq!(scrape(&url, &tenant)?.0, 403);
    // The API server apart from them shows its own series only.
    let own = Kubectl::new(&server)?
        .run(&["get", "--raw", "/metrics"])?
        .ok()?;
    ensure!(own.contains("apiserver_request_total{"));
    ensure!(!own.contains("corral_scheduler_"), "{own}");
    Ok(())
}
