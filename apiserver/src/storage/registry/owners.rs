//! A Task made for a Job is created only while that Job exists: its
//! controlling owner reference must name a Job present, with the same uid,
//! and not being deleted (422 on `metadata.ownerReferences` otherwise). The
//! job controller acts on what its watch has seen, which may be a job
//! deleted a moment ago; a task it made for it then would outlive it, since
//! the job's dependents were collected when it went.
//!
//! The watch cache answers when it holds the job; the store when it does
//! not (a job created a moment ago may not be cached yet). Checked on
//! create, for requests (the server's own writes carry no requester).

use corral_api::validation::{FieldError, FieldErrorType};
use serde_json::Value;

use super::{Api, WriteOptions};
use crate::error::ApiError;
use crate::kinds::catalog::ResourceDesc;
use crate::storage::objects::meta_str;

/// The controlling owner reference of `obj` to a Corral Job: (name, uid).
fn job_owner(obj: &Value) -> Option<(&str, &str)> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| {
            r["kind"] == "Job"
                && r["apiVersion"] == "corral.dev/v1alpha1"
                && r["controller"] == true
        })
        .and_then(|r| Some((r["name"].as_str()?, r["uid"].as_str()?)))
}

impl Api {
    /// Admits the creation of `obj` (see the module doc).
    pub(super) async fn admit_owner(
        &self,
        desc: &ResourceDesc,
        obj: &Value,
        opts: &WriteOptions,
    ) -> Result<(), ApiError> {
        if opts.requester.is_none() || desc.group != "corral.dev" || desc.kind != "Task" {
            return Ok(());
        }
        let Some((job, uid)) = job_owner(obj) else {
            return Ok(());
        };
        let ns = meta_str(obj, "namespace").unwrap_or("default");
        let jobs = self
            .registry
            .find("corral.dev", "v1alpha1", "jobs")
            .ok_or_else(|| ApiError::Internal("jobs are not registered".into()))?;
        let why = match self.cached_or_stored(&jobs, Some(ns), job).await? {
            None => format!("its Job {job:?} does not exist"),
            Some(j) if meta_str(&j, "uid") != Some(uid) => {
                format!("its Job {job:?} is another one than the uid {uid} it names")
            }
            Some(j) if meta_str(&j, "deletionTimestamp").is_some() => {
                format!("its Job {job:?} is being deleted")
            }
            Some(_) => return Ok(()),
        };
        Err(ApiError::Invalid {
            kind: "Task.corral.dev".into(),
            name: meta_str(obj, "name").unwrap_or_default().to_owned(),
            errors: vec![FieldError {
                type_: FieldErrorType::NotFound,
                field: "metadata.ownerReferences".into(),
                value: Some(format!("{job:?}")),
                detail: format!("a task is created for a job that exists: {why}"),
            }],
        })
    }
}
