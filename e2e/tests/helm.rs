//! Stock Helm 3.17.2 (and kubectl's protobuf-typed commands) against the
//! `corral server` binary: a chart of Corral resources plus a ConfigMap is
//! installed, upgraded, rolled back, listed and uninstalled.

use std::process::Command;

use anyhow::{Result, bail};
use corral_e2e::{Kubectl, Server, helm_bin, s, workspace};

struct Helm {
    bin: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
    dirs: tempfile::TempDir,
}

impl Helm {
    fn new(server: &Server) -> Result<Self> {
        Ok(Helm {
            bin: helm_bin()?,
            kubeconfig: server.kubeconfig.clone(),
            dirs: tempfile::tempdir()?,
        })
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let d = self.dirs.path();
        let out = Command::new(&self.bin)
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("HELM_CACHE_HOME", d.join("cache"))
            .env("HELM_CONFIG_HOME", d.join("config"))
            .env("HELM_DATA_HOME", d.join("data"))
            .output()?;
        if !out.status.success() {
            bail!(
                "helm {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

#[test]
fn kubectl_create_sends_protobuf_and_it_is_understood() -> Result<()> {
    let server = Server::start()?;
    let k = Kubectl::new(&server)?;
    assert_eq!(
        k.run(&["create", "namespace", "team-a"])?.ok()?.trim(),
        "namespace/team-a created"
    );
    k.run(&[
        "create",
        "configmap",
        "c9",
        "-n",
        "team-a",
        "--from-literal=k=v",
    ])?
    .ok()?;
    k.run(&[
        "create",
        "secret",
        "generic",
        "s1",
        "-n",
        "team-a",
        "--from-literal=password=hunter2",
    ])?
    .ok()?;
    assert_eq!(
        k.run(&[
            "get",
            "cm",
            "c9",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.k}"
        ])?
        .ok()?,
        "v"
    );
    assert_eq!(
        k.run(&[
            "get",
            "secret",
            "s1",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.password}"
        ])?
        .ok()?,
        "aHVudGVyMg=="
    );
    let cms = k.run(&["get", "configmaps", "-n", "team-a"])?.ok()?;
    assert!(
        cms.lines().next().is_some_and(|h| h.contains("DATA")),
        "{cms}"
    );
    k.run(&["describe", "configmap", "c9", "-n", "team-a"])?
        .ok()?;
    k.run(&["delete", "namespace", "team-a"])?.ok()?;
    assert_eq!(k.run(&["get", "cm", "c9", "-n", "team-a"])?.code, 1);
    Ok(())
}

#[test]
fn helm_installs_upgrades_rolls_back_and_uninstalls_a_chart() -> Result<()> {
    let server = Server::start()?;
    let k = Kubectl::new(&server)?;
    let helm = Helm::new(&server)?;
    let chart = s(&workspace().join("e2e/fixtures/team-chart"));
    helm.run(&[
        "install",
        "r1",
        &chart,
        "-n",
        "analytics",
        "--create-namespace",
    ])?;
    assert_eq!(
        k.run(&[
            "-n",
            "analytics",
            "get",
            "job",
            "analytics-report",
            "-o",
            "jsonpath={.spec.instances}"
        ])?
        .ok()?,
        "1"
    );
    assert_eq!(
        k.run(&[
            "get",
            "role",
            "analytics",
            "-o",
            "jsonpath={.metadata.labels.app\\.kubernetes\\.io/managed-by}"
        ])?
        .ok()?,
        "Helm"
    );
    // The chart's RBAC objects: the team's access travels with it.
    assert_eq!(
        k.run(&[
            "-n",
            "analytics",
            "get",
            "rolebinding",
            "analytics-edit",
            "-o",
            "jsonpath={.roleRef.name}/{.subjects[0].name}"
        ])?
        .ok()?,
        "edit/analytics-team"
    );
    assert_eq!(
        k.run(&[
            "-n",
            "analytics",
            "get",
            "roles.rbac.authorization.k8s.io",
            "use-analytics",
            "-o",
            "jsonpath={.rules[0].verbs[0]}"
        ])?
        .ok()?,
        "use"
    );
    let list = helm.run(&["list", "-A"])?;
    assert!(list.contains("r1") && list.contains("deployed"), "{list}");
    helm.run(&[
        "upgrade",
        "r1",
        &chart,
        "-n",
        "analytics",
        "--set",
        "instances=3",
    ])?;
    assert_eq!(
        k.run(&[
            "-n",
            "analytics",
            "get",
            "job",
            "analytics-report",
            "-o",
            "jsonpath={.spec.instances}"
        ])?
        .ok()?,
        "3"
    );
    assert_eq!(
        k.run(&[
            "-n",
            "analytics",
            "get",
            "cm",
            "analytics-settings",
            "-o",
            "jsonpath={.data.instances}"
        ])?
        .ok()?,
        "3"
    );
    helm.run(&["rollback", "r1", "1", "-n", "analytics"])?;
    assert_eq!(
        k.run(&[
            "-n",
            "analytics",
            "get",
            "job",
            "analytics-report",
            "-o",
            "jsonpath={.spec.instances}"
        ])?
        .ok()?,
        "1"
    );
    let status = helm.run(&["status", "r1", "-n", "analytics"])?;
    assert!(
        status.contains("REVISION: 3") && status.contains("STATUS: deployed"),
        "{status}"
    );
    helm.run(&["uninstall", "r1", "-n", "analytics"])?;
    assert_eq!(
        k.run(&["-n", "analytics", "get", "job", "analytics-report"])?
            .code,
        1
    );
    assert_eq!(
        k.run(&["-n", "analytics", "get", "rolebinding", "analytics-edit"])?
            .code,
        1,
        "uninstall removes the chart's RBAC objects"
    );
    assert_eq!(k.run(&["get", "role", "analytics"])?.code, 1);
    let after = helm.run(&["list", "-A"])?;
    assert!(!after.contains("r1"), "{after}");
    assert_eq!(
        k.run(&["-n", "analytics", "get", "secrets", "-o", "name"])?
            .ok()?
            .trim(),
        "",
        "release secrets remain"
    );
    Ok(())
}
