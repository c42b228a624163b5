//! `charts/corral`: `helm lint`, and `helm template` under several value
//! sets, with every rendered manifest validated against the Kubernetes API
//! types (k8s-openapi, Kubernetes 1.33): each document must decode into its
//! kind and encode back to exactly what was rendered, so a misspelled or
//! misplaced field (which the typed decode drops) or a wrong type fails.
//! Bad values must fail the render with a clear message.

use std::process::Command;

use anyhow::{Context, Result, bail};
use corral_e2e::{helm_bin, s, workspace};
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use serde_json::Value;

fn helm(args: &[&str]) -> Result<std::process::Output> {
    let dirs = tempfile::tempdir()?;
    Ok(Command::new(helm_bin()?)
        .args(args)
        .env("HELM_CACHE_HOME", dirs.path().join("cache"))
        .env("HELM_CONFIG_HOME", dirs.path().join("config"))
        .env("HELM_DATA_HOME", dirs.path().join("data"))
        .output()?)
}

fn chart() -> String {
    s(&workspace().join("charts/corral"))
}

/// Renders the chart with `--set` values; the documents, by kind.
fn render(sets: &[&str]) -> Result<Vec<Value>> {
    let chart = chart();
    let mut args = vec![
        "template",
        "corral",
        chart.as_str(),
        "--namespace",
        "corral",
    ];
    for v in sets {
        args.extend(["--set", v]);
    }
    let out = helm(&args)?;
    if !out.status.success() {
        bail!(
            "helm template {sets:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let docs: Vec<Value> = serde_saphyr_docs(&String::from_utf8(out.stdout)?)?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn serde_saphyr_docs(text: &str) -> Result<Vec<Value>> {
    Ok(serde_saphyr::from_str_multiple(text)?)
}

/// Drops nulls, which the typed encoding leaves out.
fn prune(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), prune(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(prune).collect()),
        other => other.clone(),
    }
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Result<()> {
    let typed: T = serde_json::from_value(doc.clone())
        .with_context(|| format!("{} does not decode", doc["kind"]))?;
    let back = serde_json::to_value(&typed)?;
    let want = prune(doc);
    if back != want {
        bail!(
            "{} {} has fields the Kubernetes API does not know or types it does not accept:\nrendered: {want}\ntyped:    {back}",
            doc["kind"],
            doc["metadata"]["name"]
        );
    }
    Ok(())
}

/// Validates every document; returns the kinds seen.
fn validate(docs: &[Value]) -> Result<Vec<String>> {
    let mut kinds = Vec::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or_default();
        match (d["apiVersion"].as_str().unwrap_or_default(), kind) {
            ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(d)?,
            ("v1", "Secret") => round_trip::<Secret>(d)?,
            ("v1", "Service") => round_trip::<Service>(d)?,
            ("apps/v1", "StatefulSet") => round_trip::<StatefulSet>(d)?,
            ("apps/v1", "DaemonSet") => round_trip::<DaemonSet>(d)?,
            ("v1", "ConfigMap") => round_trip::<ConfigMap>(d)?,
            // The Prometheus Operator's kinds: not Kubernetes API types.
            ("monitoring.coreos.com/v1", "ServiceMonitor" | "PodMonitor" | "PrometheusRule") => {
                monitoring_kind(d)?
            }
            (v, k) => bail!("unexpected kind {v}/{k} in the chart"),
        }
        kinds.push(kind.to_owned());
    }
    Ok(kinds)
}

/// The fields of a Prometheus Operator object that the operator needs,
/// with the types its CRDs give them.
fn monitoring_kind(d: &Value) -> Result<()> {
    let spec = &d["spec"];
    let ok = match d["kind"].as_str() {
        Some("ServiceMonitor") => {
            spec["selector"]["matchLabels"].is_object()
                && spec["endpoints"].as_array().is_some_and(|e| {
                    e.iter().all(|e| {
                        e["port"].is_string()
                            && e["scheme"] == "https"
                            && e["tlsConfig"]["keySecret"]["name"].is_string()
                            && e["tlsConfig"]["cert"]["secret"]["name"].is_string()
                    })
                })
        }
        Some("PodMonitor") => {
            spec["selector"]["matchLabels"].is_object()
                && spec["podMetricsEndpoints"].as_array().is_some_and(|e| {
                    e.iter().all(|e| {
                        e["port"].is_string() && e["tlsConfig"]["keySecret"]["key"] == "tls.key"
                    })
                })
        }
        Some("PrometheusRule") => spec["groups"].as_array().is_some_and(|g| {
            g.iter().all(|g| {
                g["rules"].as_array().is_some_and(|r| {
                    r.iter()
                        .all(|r| r["alert"].is_string() && r["expr"].is_string())
                })
            })
        }),
        _ => false,
    };
    anyhow::ensure!(
        ok,
        "{} is missing fields the operator needs: {d}",
        d["kind"]
    );
    Ok(())
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .with_context(|| format!("no {kind}"))
}

fn args_of(workload: &Value) -> Vec<String> {
    workload["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_chart_lints() -> Result<()> {
    let out = helm(&["lint", &chart()])?;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn the_default_render_is_valid_and_complete() -> Result<()> {
    let docs = render(&[])?;
    let mut kinds = validate(&docs)?;
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "DaemonSet",
            "Secret",
            "Service",
            "ServiceAccount",
            "StatefulSet"
        ]
    );
    let server = find(&docs, "StatefulSet")?;
    let args = args_of(server);
    assert!(args.contains(&"--store=embedded".to_owned()), "{args:?}");
    assert_eq!(
        server["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "10Gi"
    );
    let agent = find(&docs, "DaemonSet")?;
    let agent_args = args_of(agent);
    assert!(
        agent_args.contains(&"--runtimes=containerd".to_owned()),
        "{agent_args:?}"
    );
    assert!(agent_args.contains(&"--log-listen=0.0.0.0:7450".to_owned()));
    let socket = agent["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "containerd"))
        .context("containerd volume")?;
    assert_eq!(
        socket["hostPath"]["path"],
        "/run/containerd/containerd.sock"
    );
    // The agents' kubeconfig names the Service and carries the CA and a token.
    let kubeconfig = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "corral-agent-kubeconfig")
        .context("agent kubeconfig")?;
    let text = kubeconfig["stringData"]["kubeconfig"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("server: https://corral.corral.svc:6443"),
        "{text}"
    );
    assert!(text.contains("certificate-authority-data: LS0t"), "{text}");
    // ... for the bootstrap token, which only obtains the node's own
    // certificate: the agent runs with that, kept in its work directory.
    assert!(text.contains("user: corral-bootstrap"), "{text}");
    assert!(agent_args.contains(&"--bootstrap-kubeconfig=/etc/corral/agent/kubeconfig".to_owned()));
    assert!(agent_args.contains(&"--kubeconfig=/var/lib/corral-agent/node.kubeconfig".to_owned()));
    let tokens = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "corral-tokens")
        .context("token file")?;
    use base64::Engine;
    let csv = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(tokens["data"]["tokens.csv"].as_str().unwrap_or_default())?,
    )?;
    assert!(
        csv.contains(",system:bootstrap:corral-agents,corral-agents,\"system:bootstrappers\""),
        "{csv}"
    );
    let pki = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "corral-pki")
        .context("pki")?;
    assert!(
        pki["data"]["ca.key"].is_string(),
        "the server signs node certificates"
    );
    Ok(())
}

#[test]
fn etcd_nodeport_and_no_agent_render_valid_manifests() -> Result<()> {
    let docs = render(&[
        "server.store.type=etcd",
        "server.store.etcd.endpoints={etcd-0:2379,etcd-1:2379}",
        "service.type=NodePort",
        "service.nodePort=30643",
        "agent.enabled=false",
    ])?;
    validate(&docs)?;
    let server = find(&docs, "StatefulSet")?;
    assert!(args_of(server).contains(&"--store=etcd://etcd-0:2379,etcd-1:2379".to_owned()));
    assert!(
        !args_of(server).contains(&"--leader-elect".to_owned()),
        "one server"
    );
    let ha = render(&[
        "server.store.type=etcd",
        "server.store.etcd.endpoints={etcd-0:2379}",
        "server.replicas=3",
    ])?;
    validate(&ha)?;
    let servers = find(&ha, "StatefulSet")?;
    assert_eq!(servers["spec"]["replicas"], 3);
    assert!(args_of(servers).contains(&"--leader-elect".to_owned()));
    assert!(server["spec"]["volumeClaimTemplates"].is_null());
    assert!(docs.iter().all(|d| d["kind"] != "DaemonSet"));
    assert_eq!(
        find(&docs, "Service")?["spec"]["ports"][0]["nodePort"],
        30643
    );
    let docs = render(&[
        "tls.existingSecret=my-pki",
        "auth.existingSecret=my-tokens",
        "agent.kubeconfigSecret=my-agent",
        "agent.resources=cpus=4\\,memory=8Gi",
    ])?;
    validate(&docs)?;
    assert!(
        docs.iter().all(|d| d["kind"] != "Secret"),
        "no generated secrets"
    );
    assert!(
        args_of(find(&docs, "DaemonSet")?).contains(&"--resources=cpus=4,memory=8Gi".to_owned())
    );
    Ok(())
}

#[test]
fn monitoring_renders_scrapers_alerts_and_dashboards() -> Result<()> {
    let docs = render(&[
        "metrics.serviceMonitor.enabled=true",
        "metrics.podMonitor.enabled=true",
        "metrics.alerts.enabled=true",
        "metrics.dashboards.enabled=true",
    ])?;
    let kinds = validate(&docs)?;
    for kind in [
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
        "ConfigMap",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind}: {kinds:?}");
    }
    // The scrapers' certificate: user corral-monitoring, signed by the CA.
    let cert = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "corral-monitoring")
        .context("no monitoring Secret")?;
    assert_eq!(cert["type"], "kubernetes.io/tls");
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(cert["data"][key].is_string(), "{key} missing");
    }
    // One ConfigMap per dashboard, with the sidecar's label and valid JSON.
    let dashboards: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "ConfigMap").collect();
    assert_eq!(dashboards.len(), 4);
    for d in dashboards {
        assert_eq!(d["metadata"]["labels"]["grafana_dashboard"], "1");
        for json in d["data"].as_object().context("data")?.values() {
            let dash: Value = serde_json::from_str(json.as_str().context("text")?)?;
            assert!(dash["panels"].as_array().is_some_and(|p| !p.is_empty()));
        }
    }
    // The alerts' templates reach Prometheus unexpanded by Helm.
    let rules = find(&docs, "PrometheusRule")?.to_string();
    assert!(rules.contains("{{ $labels.node }}"), "{rules}");
    // Off by default; with a given PKI, a certificate must be given too.
    assert!(
        render(&[
            "metrics.serviceMonitor.enabled=true",
            "tls.existingSecret=mine"
        ])
        .is_err_and(|e| e.to_string().contains("metrics.clientCertSecret"))
    );
    Ok(())
}

#[test]
fn bad_values_fail_with_a_clear_message() -> Result<()> {
    for (sets, message) in [
        (
            vec!["server.store.type=zookeeper"],
            "server.store.type must be embedded or etcd",
        ),
        (
            vec!["server.store.type=etcd"],
            "server.store.etcd.endpoints must list at least one endpoint",
        ),
        (vec!["tls.existingSecret=x"], "set agent.kubeconfigSecret"),
        (
            vec!["server.replicas=2"],
            "server.replicas above 1 needs server.store.type=etcd",
        ),
    ] {
        let err = render(&sets)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains(message), "{sets:?}: {err}");
    }
    Ok(())
}
