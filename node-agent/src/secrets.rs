//! Environment variables read from Secrets as a task starts: each
//! `valueFrom.secretKeyRef` of its container is read from the task's
//! namespace with the node's credential (the API server lets a node read
//! exactly the Secrets of the tasks bound to it) and becomes a plain value
//! in the launch, never in any object. A Secret or key that is missing
//! fails the start with [`FailureReason::SecretUnavailable`], unless the
//! reference is `optional`, which leaves the variable unset.
//!
//! [`FailureReason::SecretUnavailable`]: corral_api::task::FailureReason

use std::collections::BTreeMap;

use corral_api::job::ContainerSpec;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

/// Fills in `container`'s variables read from Secrets of `namespace`, or
/// says which could not be read.
pub async fn resolve(
    client: &kube::Client,
    namespace: &str,
    container: &mut ContainerSpec,
) -> Result<(), String> {
    if container.env.iter().all(|e| e.secret().is_none()) {
        return Ok(());
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut read: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    let mut env = Vec::with_capacity(container.env.len());
    for mut var in std::mem::take(&mut container.env) {
        let Some(r) = var.secret().cloned() else {
            env.push(var);
            continue;
        };
        if !read.contains_key(&r.name) {
            let secret = api.get_opt(&r.name).await.map_err(|e| match e {
                kube::Error::Api(s) if s.code == 403 => format!(
                    "this node may not read Secret {namespace}/{}: {}",
                    r.name, s.message
                ),
                other => format!("reading Secret {namespace}/{}: {other}", r.name),
            })?;
            read.insert(r.name.clone(), secret);
        }
        let value = match read.get(&r.name).and_then(Option::as_ref) {
            None if r.optional => continue,
            None => return Err(format!("Secret {namespace}/{} does not exist", r.name)),
            Some(s) => match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                None if r.optional => continue,
                None => {
                    return Err(format!(
                        "Secret {namespace}/{} has no key {:?}",
                        r.name, r.key
                    ));
                }
                Some(bytes) => String::from_utf8(bytes.0.clone()).map_err(|_| {
                    format!(
                        "key {:?} of Secret {namespace}/{} is not text, which an environment variable must be",
                        r.key, r.name
                    )
                })?,
            },
        };
        var.value = value;
        var.value_from = None;
        env.push(var);
    }
    container.env = env;
    Ok(())
}
