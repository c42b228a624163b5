//! Test support (feature `testing`): the API server in-process on
//! 127.0.0.1:0 with TLS and the admin token, a kube client for it, Corral
//! Roles for the fixtures to name, and simulated nodes (Node objects that
//! report themselves Ready).

use std::sync::Arc;

use corral_store::Store;
use serde_json::json;

use crate::transport::pki::{Pki, Tokens};
use crate::{Api, Authn, Catalog, RunningServer};

/// Any error of the helpers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A running in-process server and a client for it.
pub struct TestServer {
    /// An admin client.
    pub client: kube::Client,
    /// The REST layer it serves (its store, registry and watch cache).
    pub api: Api,
    /// Its TLS material and token.
    pub pki: Pki,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    server: RunningServer,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// How a test server authorizes.
enum Authorization {
    /// With this authorizer.
    Given(Arc<dyn crate::Authorizer>),
    /// With RBAC over its own watch cache, as `corral server` does.
    Rbac,
}

impl TestServer {
    /// A server over a fresh in-memory embedded store.
    pub async fn start() -> Result<Self, BoxError> {
        Self::start_over(Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?)).await
    }

    /// A server over `store`.
    pub async fn start_over(store: Arc<dyn Store>) -> Result<Self, BoxError> {
        Self::start_with(
            store,
            Arc::new(crate::AllowAuthenticated),
            crate::ServeOptions::default(),
        )
        .await
    }

    /// A server over `store` that authorizes with `authz`, with `options`
    /// (the admin certificate links it to agents unless `options` does).
    pub async fn start_with(
        store: Arc<dyn Store>,
        authz: Arc<dyn crate::Authorizer>,
        options: crate::ServeOptions,
    ) -> Result<Self, BoxError> {
        Self::serve(store, &[], Authorization::Given(authz), options).await
    }

    /// A server over `store` that authorizes with `authz`, with `options`,
    /// whose token file also holds `users`: (token, user name, groups).
    pub async fn start_with_users(
        store: Arc<dyn Store>,
        authz: Arc<dyn crate::Authorizer>,
        users: &[(&str, &str, &[&str])],
        options: crate::ServeOptions,
    ) -> Result<Self, BoxError> {
        Self::serve(store, users, Authorization::Given(authz), options).await
    }

    /// A server over `store` that authorizes with RBAC (the bootstrap policy
    /// reconciled, as `corral server` does), whose token file also holds
    /// `users`: (token, user name, groups). See [`TestServer::client_as`].
    pub async fn start_rbac(
        store: Arc<dyn Store>,
        users: &[(&str, &str, &[&str])],
    ) -> Result<Self, BoxError> {
        Self::serve(
            store,
            users,
            Authorization::Rbac,
            crate::ServeOptions::default(),
        )
        .await
    }

    async fn serve(
        store: Arc<dyn Store>,
        users: &[(&str, &str, &[&str])],
        authz: Authorization,
        mut options: crate::ServeOptions,
    ) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        let pki = Pki::load_or_create(&dir.path().join("pki"), &[])?;
        if !users.is_empty() {
            let mut tokens = std::fs::read_to_string(&pki.token_file)?;
            for (token, name, groups) in users {
                tokens.push_str(&format!("{token},{name},{name},\"{}\"\n", groups.join(",")));
            }
            crate::transport::pki::write_private(&pki.token_file, tokens.as_bytes())?;
        }
        let api = Api::new(store, Catalog::standard());
        crate::storage::registry::ensure_default_namespaces(&api).await?;
        let authz = match authz {
            Authorization::Given(a) => a,
            Authorization::Rbac => {
                crate::transport::rbac::bootstrap::reconcile(&api).await?;
                crate::transport::rbac::node_and_rbac(&api).await?
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        if options.signer.is_none() {
            options.signer = Some(Arc::new(pki.clone()));
        }
        if options.agents.is_none() {
            options.agents = Some(crate::transport::logs::AgentLink::from_pem(
                &pki.admin_cert_pem,
                &pki.admin_key_pem,
            )?);
        }
        let server = crate::serve_with_options(
            api.clone(),
            listener,
            Some(pki.server_config()?),
            Authn::Required(Arc::new(Tokens::load(&pki.token_file)?)),
            authz,
            options,
        )?;
        let url = format!("https://{}", server.local_addr);
        let kc = kube::config::Kubeconfig::from_yaml(&pki.kubeconfig(&url))?;
        let client = kube::Client::try_from(
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?,
        )?;
        Ok(TestServer {
            client,
            api,
            pki,
            url,
            server,
            _dir: dir,
        })
    }

    /// A client that authenticates with bearer `token` (no retries, so a
    /// refusal shows as it comes).
    pub async fn client_as(&self, token: &str) -> Result<kube::Client, BoxError> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.pki.kubeconfig(&self.url))?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.to_owned().into()),
            ..Default::default()
        };
        config.default_retry = false;
        Ok(kube::Client::try_from(config)?)
    }

    /// An admin client that does not retry 429, 503 or 504 answers.
    pub async fn admin_without_retries(&self) -> Result<kube::Client, BoxError> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.pki.kubeconfig(&self.url))?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        config.default_retry = false;
        Ok(kube::Client::try_from(config)?)
    }

    /// An admin client that reaches the server at `url` (a [`Relay`]'s).
    pub async fn admin_via(&self, url: &str) -> Result<kube::Client, BoxError> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.pki.kubeconfig(url))?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Creates the Corral Roles `names` (weight 1) that do not exist yet, as
    /// the server's own write (no requester to authorize): a Job or Task may
    /// name only a Role that exists.
    pub async fn roles(&self, names: &[&str]) -> Result<(), BoxError> {
        let desc = self
            .api
            .registry
            .find("corral.dev", "v1alpha1", "roles")
            .ok_or("roles are not registered")?;
        for name in names {
            let role = json!({
                "apiVersion": "corral.dev/v1alpha1", "kind": "Role",
                "metadata": {"name": name}, "spec": {"weight": 1}
            });
            match self
                .api
                .create(
                    &desc,
                    None,
                    role,
                    &crate::storage::registry::WriteOptions::default(),
                )
                .await
            {
                Ok(_) | Err(crate::ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.to_string().into()),
            }
        }
        Ok(())
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Creates a Ready node with `cpus` CPUs and 8 GiB, attribute `rack: r1`.
pub async fn simulated_node(client: &kube::Client, name: &str, cpus: i64) -> Result<(), BoxError> {
    use kube::api::{Patch, PatchParams, PostParams};
    let nodes: kube::Api<corral_api::Node> = kube::Api::all(client.clone());
    let n: corral_api::Node = serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Node", "metadata": {"name": name}, "spec": {"attributes": {"rack": "r1"}}}),
    )?;
    nodes.create(&PostParams::default(), &n).await?;
    let status = json!({"status": {"allocatable": {"cpus": cpus, "memory": "8Gi"}, "total": {"cpus": cpus, "memory": "8Gi"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady"}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(())
}

/// How long [`eventually`] waits for its condition.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// A condition that did not hold within [`WAIT`].
#[derive(Debug, thiserror::Error)]
#[error("timed out after {:?} waiting for {what}", WAIT)]
pub struct TimedOut {
    /// What was awaited.
    pub what: String,
}

/// Polls `check` until it returns `true`, fails, or [`WAIT`] passes.
pub async fn eventually<F, Fut, E>(what: &str, mut check: F) -> Result<(), E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, E>>,
    E: From<TimedOut>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(TimedOut { what: what.into() }.into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A TCP relay on 127.0.0.1 to a server, which a test cuts and restores as
/// a network partition would: while cut, open connections are dropped and
/// new ones closed at once.
#[derive(Debug)]
pub struct Relay {
    /// `https://127.0.0.1:PORT`, the relay's address.
    pub url: String,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays to `target` (`https://HOST:PORT`, a [`TestServer`]'s `url`).
    pub async fn start(target: &str) -> Result<Relay, BoxError> {
        let addr: std::net::SocketAddr = target.trim_start_matches("https://").parse()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}", listener.local_addr()?);
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *cut_rx.borrow() {
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(addr).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Ok(Relay { url, cut, task })
    }

    /// Cuts (`true`) or restores (`false`) the relay.
    pub fn cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.cut(true);
    }
}
