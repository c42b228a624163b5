//! Services on real containerd: named ports assigned per node and read from
//! the environment, HTTP and command health checks run by the agent, the
//! EndpointSlices stock clients read, and health-gated updates. Each test's
//! agent offers ports of its own: tests run side by side on one machine's
//! network.

use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::{Context, Result};
use corral_e2e::wait_for;
use serde_json::Value;

use super::{Cluster, WAIT};

/// `kubectl -n analytics get ARGS -o json`, read.
fn get_json(c: &Cluster, args: &[&str]) -> Result<Value> {
    let mut all = vec!["-n", "analytics", "get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    Ok(serde_json::from_str(&c.k.run(&all)?.ok()?)?)
}

/// `GET path` on `127.0.0.1:port`: the status line and the body.
fn get(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn port_of(task: &Value, name: &str) -> Option<u16> {
    task["status"]["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
}

fn healthy(task: &Value) -> bool {
    task["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Healthy" && c["status"] == "True")
}

/// (task, ready) of every endpoint of job `job`, sorted.
fn endpoints(c: &Cluster, job: &str) -> Result<Vec<(String, bool)>> {
    let list = get_json(
        c,
        &[
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={job}"),
        ],
    )?;
    let mut out: Vec<(String, bool)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["targetRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["conditions"]["ready"] == true,
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

#[test]
fn two_instances_serve_on_their_own_ports_and_a_failing_health_check_replaces_one() -> Result<()> {
    let c = Cluster::start_offering("ctd-svc", "containerd", "31100-31199")?;
    // busybox httpd serves the task's sandbox; its health file is there.
    c.job(
        "web",
        "service",
        "32Mi",
        "mkdir -p $CORRAL_SANDBOX/www && echo ok > $CORRAL_SANDBOX/www/health && echo $PORT0 > $CORRAL_SANDBOX/www/port && exec httpd -f -p $(PORT_HTTP) -h $CORRAL_SANDBOX/www",
        "\n  ports: [{name: http}]\n  healthCheck: {http: {port: http, path: /health}, periodSeconds: 1, failureThreshold: 2}",
    )?;
    c.k.run(&["-n", "analytics", "scale", "job/web", "--replicas=2"])?
        .ok()?;
    let mut tasks = Vec::new();
    for name in ["web-0-0", "web-1-0"] {
        c.wait_phase(name, "RUNNING")?;
        wait_for(&format!("{name} healthy"), WAIT, || {
            Ok(c.task(name)?.is_some_and(|t| healthy(&t)))
        })
        .with_context(|| c.logs())?;
        tasks.push(c.task(name)?.context("the task")?);
    }
    let ports: Vec<u16> = tasks
        .iter()
        .map(|t| port_of(t, "http").context("an http port"))
        .collect::<Result<_>>()?;
    assert_ne!(ports[0], ports[1], "one node, two ports");
    assert!(
        ports.iter().all(|p| (31000..=32000).contains(p)),
        "{ports:?}"
    );
    for (t, port) in tasks.iter().zip(&ports) {
        assert_eq!(t["spec"]["nodeName"], "ctd-svc");
        assert!(
            t["status"]["hostIP"]
                .as_str()
                .is_some_and(|a| !a.is_empty()),
            "{t}"
        );
        // Each serves on its own port, which it read from its environment.
        let answer = get(*port, "/port")?;
        assert!(
            answer.starts_with("HTTP/1.") && answer.contains(" 200 "),
            "{answer}"
        );
        assert!(answer.trim_end().ends_with(&port.to_string()), "{answer}");
    }
    wait_for("both endpoints ready", WAIT, || {
        Ok(endpoints(&c, "web")? == vec![("web-0-0".into(), true), ("web-1-0".into(), true)])
    })?;
    let table =
        c.k.run(&["-n", "analytics", "get", "endpointslices"])?
            .ok()?;
    assert!(table.contains("IPv4") || table.contains("FQDN"), "{table}");

    // web-0-0's health endpoint goes away: it fails its check, is killed
    // with the reason, and its replacement serves.
    let sandbox = corral_node_agent::runtime::sandbox_dir(
        &c.server.home.join("agent").join(&c.node).join("sandboxes"),
        "analytics/web-0-0",
    );
    std::fs::remove_file(sandbox.join("www").join("health"))?;
    let failed = c.wait_phase("web-0-0", "FAILED")?;
    assert_eq!(
        failed["status"]["failureReason"], "HealthCheckFailed",
        "{failed}"
    );
    let message = failed["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("404"),
        "the probe's last output: {message}"
    );
    wait_for("web-0-0 gone from the endpoints", WAIT, || {
        Ok(!endpoints(&c, "web")?.iter().any(|(t, _)| t == "web-0-0"))
    })?;
    let replacement = wait_for("a replacement of instance 0, healthy", WAIT, || {
        let list = get_json(&c, &["tasks", "-l", "corral.dev/instance=0"])?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["metadata"]["name"] != "web-0-0" && healthy(t)))
    });
    replacement.with_context(|| c.logs())?;

    // A command check, run in the container: healthy while the file is
    // there, failed with the command's output once it is gone.
    c.job(
        "cmd",
        "service",
        "16Mi",
        "touch /tmp/healthy; sleep 4; rm /tmp/healthy; exec sleep 600",
        "\n  healthCheck: {exec: {command: [cat, /tmp/healthy]}, periodSeconds: 1, failureThreshold: 2}",
    )?;
    wait_for("cmd-0-0 healthy", WAIT, || {
        Ok(c.task("cmd-0-0")?.is_some_and(|t| healthy(&t)))
    })
    .with_context(|| c.logs())?;
    let failed = c.wait_phase("cmd-0-0", "FAILED")?;
    assert_eq!(
        failed["status"]["failureReason"], "HealthCheckFailed",
        "{failed}"
    );
    let message = failed["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("/tmp/healthy"), "{message}");
    Ok(())
}

#[test]
fn an_update_whose_health_check_never_passes_rolls_back_by_itself() -> Result<()> {
    let c = Cluster::start_offering("ctd-upd", "containerd", "31200-31299")?;
    let serve = "mkdir -p $CORRAL_SANDBOX/www && echo ok > $CORRAL_SANDBOX/www/health && exec httpd -f -p $(PORT_HTTP) -h $CORRAL_SANDBOX/www";
    let spec = |path: &str| {
        format!(
            "\n  ports: [{{name: http}}]\n  healthCheck: {{http: {{port: http, path: {path}}}, periodSeconds: 1, failureThreshold: 2}}\n  update: {{batchSize: 1, minHealthySeconds: 1, rollbackOnFailure: true}}"
        )
    };
    c.job("web", "service", "32Mi", serve, &spec("/health"))?;
    c.k.run(&["-n", "analytics", "scale", "job/web", "--replicas=2"])?
        .ok()?;
    let job = |c: &Cluster| -> Result<Value> { get_json(c, &["job.corral.dev", "web"]) };
    let live_healthy = |c: &Cluster| -> Result<Vec<(String, bool)>> {
        let list = get_json(c, &["tasks", "-l", "corral.dev/job=web"])?;
        let mut out: Vec<(String, bool)> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| {
                !matches!(
                    t["status"]["phase"].as_str(),
                    Some("FINISHED" | "FAILED" | "KILLED" | "LOST")
                )
            })
            .map(|t| {
                (
                    t["metadata"]["annotations"]["corral.dev/template-hash"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    healthy(t),
                )
            })
            .collect();
        out.sort();
        Ok(out)
    };
    wait_for("two healthy instances", WAIT, || {
        let live = live_healthy(&c)?;
        Ok(live.len() == 2 && live.iter().all(|(_, h)| *h))
    })
    .with_context(|| c.logs())?;
    let original = live_healthy(&c)?[0].0.clone();
    // The release checks a path its server does not have: never healthy.
    c.k.run(&[
        "-n",
        "analytics",
        "patch",
        "job.corral.dev",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec": {"healthCheck": {"http": {"port": "http", "path": "/missing"}}}}"#,
    ])?
    .ok()?;
    wait_for("the update rolled back by itself", WAIT, || {
        Ok(job(&c)?["status"]["update"]["state"] == "RolledBack")
    })
    .with_context(|| {
        format!(
            "{}\n{}",
            job(&c).map(|j| j.to_string()).unwrap_or_default(),
            c.logs()
        )
    })?;
    wait_for(
        "every instance healthy on the original template",
        WAIT,
        || {
            let live = live_healthy(&c)?;
            Ok(live.len() == 2 && live.iter().all(|(h, ok)| *h == original && *ok))
        },
    )
    .with_context(|| c.logs())?;
    let j = job(&c)?;
    let u = &j["status"]["update"];
    assert_eq!(u["fromTemplate"], original.as_str());
    assert_eq!(u["id"], 1);
    let actions: Vec<&str> = u["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"Updating") && actions.contains(&"Failed"),
        "{actions:?}"
    );
    assert!(actions.contains(&"RolledBack"), "{actions:?}");
    assert_eq!(
        j["status"]["template"]["healthCheck"]["http"]["path"],
        "/health"
    );
    // The whole update, as a user reads it.
    let text = corral_e2e::Corral::new(&c.server)
        .run(&["-n", "analytics", "describe", "job", "web"])?
        .ok()?;
    assert!(
        text.contains("RolledBack") && text.contains("Update events"),
        "{text}"
    );
    let endpoints = corral_e2e::Corral::new(&c.server)
        .run(&["-n", "analytics", "endpoints", "web"])?
        .ok()?;
    assert_eq!(
        endpoints.lines().count(),
        3,
        "a header and two endpoints: {endpoints}"
    );
    Ok(())
}

#[test]
fn an_update_is_paused_resumed_and_aborted_from_the_command_line() -> Result<()> {
    let c = Cluster::start_offering("ctd-steer", "containerd", "31300-31399")?;
    let corral = corral_e2e::Corral::new(&c.server);
    let release = |version: &str| {
        format!(
            "\n    env: [{{name: RELEASE, value: {version}}}]\n  update: {{batchSize: 1, minHealthySeconds: 4}}"
        )
    };
    c.job("steer", "service", "16Mi", "exec sleep 600", &release("v1"))?;
    c.k.run(&["-n", "analytics", "scale", "job/steer", "--replicas=3"])?
        .ok()?;
    let job = |c: &Cluster| -> Result<Value> { get_json(c, &["job.corral.dev", "steer"]) };
    wait_for("three instances running", WAIT, || {
        Ok(job(&c)?["status"]["tasks"]["RUNNING"] == 3)
    })?;
    c.k.run(&[
        "-n",
        "analytics",
        "patch",
        "job.corral.dev",
        "steer",
        "--type=merge",
        "-p",
        r#"{"spec": {"container": {"env": [{"name": "RELEASE", "value": "v2"}]}}}"#,
    ])?
    .ok()?;
    wait_for("update 1 under way", WAIT, || {
        Ok(job(&c)?["status"]["update"]["state"] == "RollingForward")
    })?;
    let paused = corral
        .run(&["-n", "analytics", "job", "update", "pause", "steer"])?
        .ok()?;
    assert!(paused.contains("update 1 pause requested"), "{paused}");
    wait_for("update 1 paused", WAIT, || {
        Ok(job(&c)?["status"]["update"]["state"] == "Paused")
    })?;
    let described = corral
        .run(&["-n", "analytics", "describe", "job", "steer"])?
        .ok()?;
    assert!(described.contains("Paused"), "{described}");
    corral
        .run(&["-n", "analytics", "job", "update", "resume", "steer"])?
        .ok()?;
    wait_for("update 1 rolling again", WAIT, || {
        Ok(job(&c)?["status"]["update"]["state"] == "RollingForward")
    })?;
    corral
        .run(&["-n", "analytics", "job", "update", "abort", "steer"])?
        .ok()?;
    wait_for("update 1 aborted", WAIT, || {
        Ok(job(&c)?["status"]["update"]["state"] == "Aborted")
    })?;
    let j = job(&c)?;
    let conditions = j["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "UpdateAborted"),
        "{j}"
    );
    // Nothing is under way now: a further request is refused, clearly.
    let refused = corral.run(&["-n", "analytics", "job", "update", "pause", "steer"])?;
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("no update under way"),
        "{}",
        refused.stderr
    );
    Ok(())
}
