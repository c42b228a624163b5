//! Who the agent is: its node credential (joined with a bootstrap
//! kubeconfig and renewed), its node name, the CA it trusts, and its
//! clients of the API server.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::args::RunArgs;

/// Obtains node `node`'s credential into `kubeconfig` with the bootstrap
/// kubeconfig, unless it already holds one with life left in it.
pub(super) async fn join(kubeconfig: &Path, bootstrap: &Path, node: &str) -> Result<()> {
    use corral_node_agent::join;
    if !join::needs_certificate(kubeconfig, node, jiff::Timestamp::now())? {
        return Ok(());
    }
    let text = std::fs::read_to_string(bootstrap)
        .with_context(|| format!("reading {}", bootstrap.display()))?;
    let bootstrap_kc = kube::config::Kubeconfig::from_yaml(&text)
        .with_context(|| format!("reading {}", bootstrap.display()))?;
    // A node renews with its own credential while it is valid (its
    // bootstrap token may have been revoked since it joined).
    let still_valid = join::held(kubeconfig)
        .is_some_and(|h| h.not_after > jiff::Timestamp::now() + jiff::SignedDuration::from_mins(1));
    let client = if still_valid {
        client_from(kubeconfig).await?
    } else {
        client_from(bootstrap).await?
    };
    let (cert, key) = match join::request_certificate(&client, node).await {
        Ok(issued) => issued,
        // Renewing can wait while the credential lasts.
        Err(e) if still_valid => {
            tracing::warn!(error = %e, "renewing this node's credential failed; trying again later");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    join::write_kubeconfig(
        kubeconfig,
        &join::node_kubeconfig(&bootstrap_kc, node, &cert, &key),
    )?;
    tracing::info!(node, kubeconfig = %kubeconfig.display(), "obtained this node's credential");
    Ok(())
}

/// Who the API server says the agent's credential is: its user name, or
/// None where the server does not answer SelfSubjectReview.
pub(super) async fn whoami(client: &kube::Client) -> Result<Option<String>> {
    let body = serde_json::to_vec(
        &serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    )?;
    let req = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)?;
    match client.request::<serde_json::Value>(req).await {
        Ok(review) => Ok(review["status"]["userInfo"]["username"]
            .as_str()
            .map(str::to_owned)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e).context("asking the API server who this agent's credential is"),
    }
}

/// The node this agent runs: the one its credential names (a node's
/// credential, user `system:node:NAME`, serves that node only), else
/// `--node-name`.
pub(super) fn node_name_of(args: &RunArgs, user: Option<String>) -> Result<String> {
    let credential_node = user
        .as_deref()
        .and_then(|u| u.strip_prefix(corral_apiserver::transport::auth::NODE_USER_PREFIX))
        .map(str::to_owned);
    match (credential_node, &args.node_name) {
        (Some(_), _) if args.simulate_nodes.is_some() => {
            bail!("--simulate-nodes needs a credential for many nodes; this one is a single node's")
        }
        (Some(mine), Some(asked)) if &mine != asked => {
            bail!("--node-name {asked} does not match the credential, which is node {mine}'s")
        }
        (Some(mine), _) => Ok(mine),
        (None, Some(asked)) => Ok(asked.clone()),
        (None, None) => bail!(
            "--node-name is required (or CORRAL_AGENT_NODE_NAME), unless the kubeconfig holds a node credential (corral credentials node NAME)"
        ),
    }
}

/// The CA certificate (PEM) of the kubeconfig's cluster: the agent's log
/// endpoint accepts clients with certificates it signed.
pub(crate) fn kubeconfig_ca(home: &Path, kubeconfig: Option<&Path>) -> Result<Vec<u8>> {
    use base64::Engine;
    let path = kubeconfig.map_or_else(|| home.join("kubeconfig"), Path::to_owned);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let kc = kube::config::Kubeconfig::from_yaml(&text)?;
    let cluster = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .with_context(|| format!("{} names no cluster", path.display()))?;
    if let Some(data) = cluster.certificate_authority_data {
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .with_context(|| {
                format!(
                    "{}: certificate-authority-data is not base64",
                    path.display()
                )
            });
    }
    if let Some(file) = cluster.certificate_authority {
        return std::fs::read(&file).with_context(|| format!("reading {file}"));
    }
    bail!(
        "{} has no certificate authority; the log endpoint needs one (or pass --log-listen none)",
        path.display()
    )
}

/// A client for the API server a kubeconfig file names.
pub async fn client_from(kubeconfig: &Path) -> Result<kube::Client> {
    Ok(corral_controllers::client::connect(
        config_from(kubeconfig).await?,
    )?)
}

/// The same, without kube's retries of 429, 503 and 504: for lease
/// renewals, whose every outcome the agent must see as it comes.
pub(super) async fn client_without_retries(kubeconfig: &Path) -> Result<kube::Client> {
    let mut config = config_from(kubeconfig).await?;
    config.default_retry = false;
    Ok(corral_controllers::client::connect(config)?)
}

pub(super) async fn config_from(kubeconfig: &Path) -> Result<kube::Config> {
    let text = std::fs::read_to_string(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let kc = kube::config::Kubeconfig::from_yaml(&text)?;
    Ok(kube::config::Config::from_custom_kubeconfig(kc, &Default::default()).await?)
}
