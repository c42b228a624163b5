//! The API server in-process on 127.0.0.1:0, with TLS and a bearer token,
//! driven by kube-rs, over the embedded store and over a real etcd.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use corral_api::{Job, Task};
use corral_apiserver::testing::TestServer;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, Config};
use serde_json::{Value, json};

/// How long a watch waits for its next event.
const WAIT: Duration = Duration::from_secs(10);

/// A server under test and, over etcd, the etcd it stores into (dropped
/// after the server).
struct Backend {
    ts: TestServer,
    _etcd: Option<corral_store::testing::EtcdServer>,
}

async fn config_for(kubeconfig: &str) -> Result<Config> {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig)?;
    Ok(Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?)
}

async fn client_for(kubeconfig: &str) -> Result<Client> {
    Ok(Client::try_from(config_for(kubeconfig).await?)?)
}

/// The Corral Roles the fixtures name.
const ROLES: &[&str] = &["analytics"];

/// Creates the Corral Roles the fixtures name.
async fn seed_roles(ts: &TestServer) -> Result<()> {
    ts.roles(ROLES).await.map_err(|e| anyhow!(e))
}

async fn embedded() -> Result<Backend> {
    let ts = TestServer::start().await.map_err(|e| anyhow!(e))?;
    seed_roles(&ts).await?;
    Ok(Backend { ts, _etcd: None })
}

async fn etcd() -> Result<Backend> {
    let server =
        corral_store::testing::EtcdServer::start_with(corral_store::testing::Durability::NoFsync)?;
    let store = corral_store::etcd::EtcdStore::connect(&[server.endpoint().to_owned()]).await?;
    let ts = TestServer::start_over(Arc::new(store))
        .await
        .map_err(|e| anyhow!(e))?;
    seed_roles(&ts).await?;
    Ok(Backend {
        ts,
        _etcd: Some(server),
    })
}

fn job(name: &str, instances: u32) -> Result<Job> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default", "labels": {"team": "analytics"}},
        "spec": {"role": "analytics", "environment": "devel", "kind": "adhoc", "instances": instances,
                 "resources": {"cpus": 1, "memory": "5120Mi", "disk": "5120Mi"},
                 "container": {"image": "docker.io/library/sparkie:image"}}
    }))?)
}

fn task(name: &str, node: Option<&str>, owner: Option<(&str, &str)>) -> Result<Task> {
    let mut v = json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"job": "j", "role": "analytics", "instanceId": 0,
                 "resources": {"cpus": "500m", "memory": "1Gi"},
                 "container": {"image": "busybox"}}
    });
    if let Some(n) = node {
        v["spec"]["nodeName"] = json!(n);
    }
    if let Some((owner, uid)) = owner {
        v["metadata"]["ownerReferences"] = json!([{"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "name": owner, "uid": uid}]);
    }
    Ok(serde_json::from_value(v)?)
}

fn api_error(e: kube::Error) -> Result<(u16, String, String)> {
    match e {
        kube::Error::Api(s) => Ok((s.code, s.reason.clone(), s.message.clone())),
        other => bail!("expected an API error, got {other}"),
    }
}

/// Waits for `check` to hold, with anyhow errors (see the shared helper).
async fn eventually<F, Fut>(what: &str, check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    corral_apiserver::testing::eventually(what, check).await
}

mod access;
mod bulk;
mod clients;
mod corpus;
mod crud;
mod deletion;
mod etcd_ha;
mod evictions;
mod gitops;
mod lifecycle;
mod limits;
mod plans;
mod pods;
mod rbac;
mod replicas;
mod ui;
mod watch;

macro_rules! suite {
    ($backend:ident: $($module:ident::$name:ident),* $(,)?) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() -> Result<()> {
                    let backend = super::$backend().await?;
                    $module::$name(&backend.ts).await
                }
            )*
        }
    };
}

suite!(embedded:
    clients::discovery_finds_every_kind,
    evictions::evictions_honour_the_disruption_budget,
    evictions::racing_evictions_spend_a_budget_once,
    plans::a_plan_names_placements_and_victims_and_creates_nothing,
    bulk::tasks_are_created_and_bound_in_bulk_each_on_its_own,
    crud::a_task_is_created_with_its_first_status,
    crud::a_task_is_created_only_for_a_job_that_exists,
    crud::jobs_scale_through_their_scale_subresource,
    crud::jobs_are_created_read_listed_patched_and_deleted,
    crud::invalid_objects_are_rejected_with_field_paths,
    crud::a_stale_resource_version_is_a_conflict_and_writes_nothing,
    crud::lists_match_resource_versions,
    crud::writes_outside_the_registry_do_not_hold_reads_back,
    crud::generation_follows_the_spec_and_no_op_writes_change_nothing,
    crud::finalizers_hold_deletion_until_removed,
    watch::watch_sees_additions_changes_and_deletions,
    watch::tasks_are_selected_by_node_name,
    watch::streaming_lists_and_watches_from_now_start_where_asked,
    watch::uncached_watches_start_where_asked,
    watch::a_watch_whose_client_left_is_released,
    crud::server_side_apply_creates_then_updates,
    deletion::deleting_an_owner_collects_its_dependents,
    deletion::foreground_deletion_waits_for_dependents,
    deletion::orphan_deletion_releases_dependents,
    crud::bad_requests_get_the_right_status,
    deletion::deleting_a_namespace_removes_its_contents,
    access::requests_without_credentials_are_unauthorized,
    access::client_certificates_authenticate,
    clients::core_kinds_work_for_clients,
    clients::core_kinds_follow_their_kubernetes_rules,
    clients::events_are_one_store_seen_through_both_apis,
    clients::metadata_only_reads_carry_only_metadata,
    clients::strategic_merge_patches_follow_list_types,
    corpus::the_corpus_gets_the_answers_it_expects,
    corpus::mutated_corpus_entries_never_get_a_5xx_or_a_partial_write,
    gitops::flux_applies_detects_drift_recreates_and_prunes,
    gitops::argo_cd_lists_every_resource_in_pages_and_watches_from_there,
);

suite!(etcd:
    bulk::tasks_are_created_and_bound_in_bulk_each_on_its_own,
    evictions::racing_evictions_spend_a_budget_once,
    crud::jobs_are_created_read_listed_patched_and_deleted,
    crud::a_task_is_created_with_its_first_status,
    clients::events_are_one_store_seen_through_both_apis,
    crud::lists_match_resource_versions,
    crud::writes_outside_the_registry_do_not_hold_reads_back,
    crud::a_stale_resource_version_is_a_conflict_and_writes_nothing,
    crud::generation_follows_the_spec_and_no_op_writes_change_nothing,
    watch::watch_sees_additions_changes_and_deletions,
    watch::tasks_are_selected_by_node_name,
    watch::streaming_lists_and_watches_from_now_start_where_asked,
    watch::uncached_watches_start_where_asked,
    deletion::deleting_an_owner_collects_its_dependents,
    gitops::flux_applies_detects_drift_recreates_and_prunes,
    gitops::argo_cd_lists_every_resource_in_pages_and_watches_from_there,
);

/// A server over `store` with `authz` and `options`.
async fn serve_custom(
    store: Arc<dyn corral_store::Store>,
    authz: Arc<dyn corral_apiserver::Authorizer>,
    options: corral_apiserver::ServeOptions,
) -> Result<TestServer> {
    let ts = TestServer::start_with(store, authz, options)
        .await
        .map_err(|e| anyhow!(e))?;
    seed_roles(&ts).await?;
    Ok(ts)
}

/// A client that shows each answer as it comes (kube-rs retries 429, 503
/// and 504 on its own, for minutes).
async fn client_without_retries(kubeconfig: &str) -> Result<Client> {
    let mut config = config_for(kubeconfig).await?;
    config.default_retry = false;
    Ok(Client::try_from(config)?)
}
