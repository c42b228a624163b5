//! Authentication (tokens, client certificates) and authorization.

use super::*;

pub async fn requests_without_credentials_are_unauthorized(ts: &TestServer) -> Result<()> {
    let kubeconfig = ts
        .pki
        .kubeconfig(&ts.url)
        .replace(&ts.pki.admin_token, "not-a-token");
    let client = client_for(&kubeconfig).await?;
    let jobs: Api<Job> = Api::namespaced(client, "default");
    let (code, reason, _) = api_error(
        jobs.list(&ListParams::default())
            .await
            .err()
            .context("listed")?,
    )?;
    assert_eq!((code, reason.as_str()), (401, "Unauthorized"));
    Ok(())
}

pub async fn client_certificates_authenticate(ts: &TestServer) -> Result<()> {
    let client = client_for(&ts.pki.kubeconfig_with_client_cert(&ts.url)).await?;
    let jobs: Api<Job> = Api::namespaced(client, "default");
    jobs.create(&PostParams::default(), &job("by-cert", 1)?)
        .await?;
    assert_eq!(jobs.list(&ListParams::default()).await?.items.len(), 1);
    Ok(())
}

/// A server over a fresh in-memory store that authorizes with `authz`.
async fn serve_with(authz: Arc<dyn corral_apiserver::Authorizer>) -> Result<TestServer> {
    serve_custom(
        Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?),
        authz,
        corral_apiserver::ServeOptions::default(),
    )
    .await
}

/// Authorization is its own layer: a refusing authorizer turns writes into 403s.
#[tokio::test]
async fn an_authorizer_can_refuse_requests() -> Result<()> {
    #[derive(Debug)]
    struct ReadOnly;
    impl corral_apiserver::Authorizer for ReadOnly {
        fn allows(
            &self,
            _: &corral_apiserver::transport::auth::User,
            a: &corral_apiserver::transport::auth::Attributes,
        ) -> bool {
            matches!(a.verb.as_str(), "get" | "list" | "watch")
        }
    }
    let ts = serve_with(Arc::new(ReadOnly)).await?;
    let client = client_for(&ts.pki.kubeconfig(&ts.url)).await?;
    // `kubectl auth can-i` asks the same layer, and `whoami` who it is.
    let can_i = |verb: &str| {
        let client = client.clone();
        let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": verb, "group": "corral.dev", "resource": "jobs", "namespace": "default"}}});
        async move {
            let req = http::Request::post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&review)?)?;
            let answer: Value = serde_json::from_str(&client.request_text(req).await?)?;
            anyhow::Ok(answer["status"]["allowed"].as_bool())
        }
    };
    assert_eq!(can_i("list").await?, Some(true));
    assert_eq!(can_i("create").await?, Some(false));
    // This authorizer cannot list its rules: `can-i --list` hears so.
    let req = http::Request::post("/apis/authorization.k8s.io/v1/selfsubjectrulesreviews")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(
            &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                    "spec": {"namespace": "default"}}),
        )?)?;
    let rules: Value = serde_json::from_str(&client.request_text(req).await?)?;
    assert_eq!(rules["status"]["incomplete"], true, "{rules}");
    let req = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
        )?)?;
    let me: Value = serde_json::from_str(&client.request_text(req).await?)?;
    assert_eq!(me["status"]["userInfo"]["username"], "corral-admin");
    let jobs: Api<Job> = Api::namespaced(client, "default");
    assert!(jobs.list(&ListParams::default()).await?.items.is_empty());
    let (code, reason, message) = api_error(
        jobs.create(&PostParams::default(), &job("nope", 1)?)
            .await
            .err()
            .context("created")?,
    )?;
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert!(
        message.contains("User \"corral-admin\" cannot create resource \"jobs\""),
        "{message}"
    );
    ts.shutdown().await;
    Ok(())
}

/// A client certificate's subject is the caller: CN the user, O the groups.
#[tokio::test]
async fn a_certificates_subject_names_the_user_and_groups() -> Result<()> {
    /// Lets only the certificate's `corral-admin` of `system:masters` write.
    #[derive(Debug)]
    struct CertAdminsWrite;
    impl corral_apiserver::Authorizer for CertAdminsWrite {
        fn allows(
            &self,
            u: &corral_apiserver::transport::auth::User,
            a: &corral_apiserver::transport::auth::Attributes,
        ) -> bool {
            matches!(a.verb.as_str(), "get" | "list" | "watch")
                || (u.method == corral_apiserver::transport::auth::AuthMethod::ClientCertificate
                    && u.name == "corral-admin"
                    && u.groups.iter().any(|g| g == "system:masters"))
        }
    }
    let ts = serve_with(Arc::new(CertAdminsWrite)).await?;
    let (pki, url) = (&ts.pki, &ts.url);
    let by_cert: Api<Job> = Api::namespaced(
        client_for(&pki.kubeconfig_with_client_cert(url)).await?,
        "default",
    );
    by_cert
        .create(&PostParams::default(), &job("by-cert", 1)?)
        .await?;
    let by_token: Api<Job> = Api::namespaced(client_for(&pki.kubeconfig(url)).await?, "default");
    let (code, _, _) = api_error(
        by_token
            .create(&PostParams::default(), &job("by-token", 1)?)
            .await
            .err()
            .context("a token is not a certificate")?,
    )?;
    assert_eq!(code, 403);
    ts.shutdown().await;
    Ok(())
}

/// `/metrics` counts requests by verb, resource and code, shows the moment's
/// in-flight requests and stored objects, and, like the API, wants
/// credentials.
#[tokio::test]
async fn metrics_count_requests_and_need_credentials() -> Result<()> {
    let ts = TestServer::start().await.map_err(|e| anyhow!(e))?;
    seed_roles(&ts).await?;
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    jobs.create(&PostParams::default(), &job("counted", 1)?)
        .await?;
    jobs.list(&ListParams::default()).await?;
    assert!(jobs.get("missing").await.is_err());
    let scrape = || async {
        let req = http::Request::get("/metrics").body(Vec::new())?;
        anyhow::Ok(ts.client.request_text(req).await?)
    };
    let text = scrape().await?;
    let value = |series: &str| -> Result<f64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .with_context(|| format!("{series} not in:\n{text}"))?;
        Ok(line.rsplit(' ').next().context("no value")?.parse()?)
    };
    let jobs_series = |verb: &str, code: u16| {
        format!(
            r#"apiserver_request_total{{verb="{verb}",group="corral.dev",resource="jobs",subresource="",code="{code}"}}"#
        )
    };
    assert_eq!(value(&jobs_series("POST", 201))?, 1.0);
    assert_eq!(value(&jobs_series("LIST", 200))?, 1.0);
    assert_eq!(value(&jobs_series("GET", 404))?, 1.0);
    assert_eq!(
        value(
            r#"apiserver_request_duration_seconds_count{verb="LIST",group="corral.dev",resource="jobs",subresource=""}"#
        )?,
        1.0
    );
    // The scrape itself is a read in flight.
    assert!(value(r#"apiserver_current_inflight_requests{request_kind="readOnly"}"#)? >= 1.0);
    // The object count comes from the watch cache, which follows the store.
    tokio::time::timeout(WAIT, async {
        loop {
            let text = scrape().await?;
            if text
                .lines()
                .any(|l| l == r#"apiserver_storage_objects{resource="jobs.corral.dev"} 1"#)
            {
                return anyhow::Ok(());
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .context("the job was never counted")??;

    let kubeconfig = ts
        .pki
        .kubeconfig(&ts.url)
        .replace(&ts.pki.admin_token, "not-a-token");
    let stranger = client_for(&kubeconfig).await?;
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let (code, _, _) = api_error(
        stranger
            .request_text(req)
            .await
            .err()
            .context("metrics without credentials")?,
    )?;
    assert_eq!(code, 401);
    Ok(())
}
