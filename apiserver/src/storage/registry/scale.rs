//! The `/scale` subresource (an autoscaling/v1 `Scale`) of the kinds that
//! declare one: a Job's `spec.instances` as `spec.replicas`, its running
//! tasks as `status.replicas`. This is what `kubectl scale` and autoscalers
//! speak.
//!
//! A write of the Scale is carried out as an update of the object itself,
//! so the object's validation (at most `MAX_INSTANCES`…), admission,
//! resourceVersion preconditions and managedFields apply as for any other
//! write; the answer is the Scale after it.

use serde_json::{Value, json};

use super::{Api, WriteOptions, Written};
use crate::error::ApiError;
use crate::kinds::catalog::{ResourceDesc, ScalePaths};
use crate::storage::objects::{meta_str, parse_rv};
use crate::storage::patch::{PatchKind, apply_patch};
use crate::storage::ssa::Lists;
use corral_api::validation::{FieldError, FieldErrorType};

/// How a Scale write changes the replicas.
#[derive(Debug, Clone)]
pub enum ScaleWrite {
    /// A whole Scale (PUT).
    Replace(Value),
    /// A patch of the Scale (PATCH); server-side apply is not offered.
    Patch(PatchKind, Value),
}

fn paths(desc: &ResourceDesc) -> Result<&ScalePaths, ApiError> {
    desc.scale.as_ref().ok_or(ApiError::PathNotFound)
}

fn at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, field| v.get(field))
}

/// The Scale of `obj`.
pub fn scale_of(obj: &Value, paths: &ScalePaths) -> Value {
    let count = |path: &[String]| at(obj, path).and_then(Value::as_u64).unwrap_or(0);
    let mut metadata = serde_json::Map::new();
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = obj.get("metadata").and_then(|m| m.get(field)) {
            metadata.insert(field.to_owned(), v.clone());
        }
    }
    let mut status = json!({"replicas": count(&paths.status)});
    if let Some(selector) = paths
        .selector
        .as_deref()
        .and_then(|p| at(obj, p))
        .and_then(Value::as_str)
    {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": count(&paths.spec)},
        "status": status,
    })
}

fn invalid_replicas(name: &str, value: Option<&Value>) -> ApiError {
    ApiError::Invalid {
        kind: "Scale.autoscaling".into(),
        name: name.to_owned(),
        errors: vec![FieldError {
            type_: FieldErrorType::Invalid,
            field: "spec.replicas".into(),
            value: value.map(Value::to_string),
            detail: "must be a whole number, greater than or equal to 0".into(),
        }],
    }
}

/// `obj` with its replicas set from `scale`.
fn with_replicas(
    mut obj: Value,
    scale: &Value,
    paths: &ScalePaths,
    name: &str,
) -> Result<Value, ApiError> {
    if let Some(kind) = scale.get("kind").and_then(Value::as_str)
        && kind != "Scale"
    {
        return Err(ApiError::BadRequest(format!(
            "the kind in the data ({kind}) does not match the expected kind (Scale)"
        )));
    }
    if let Some(n) = meta_str(scale, "name").filter(|n| !n.is_empty() && *n != name) {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    let replicas = scale.pointer("/spec/replicas");
    let count = replicas
        .and_then(Value::as_u64)
        .filter(|n| i32::try_from(*n).is_ok())
        .ok_or_else(|| invalid_replicas(name, replicas))?;
    let Some((last, parents)) = paths.spec.split_last() else {
        return Err(ApiError::Internal("a scale without a replica path".into()));
    };
    let mut cur = &mut obj;
    for field in parents {
        if !cur.get(field).is_some_and(Value::is_object) {
            cur[field.as_str()] = json!({});
        }
        cur = &mut cur[field.as_str()];
    }
    cur[last.as_str()] = json!(count);
    Ok(obj)
}

impl Api {
    /// GET `.../<name>/scale`.
    pub async fn get_scale(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let paths = paths(desc)?;
        Ok(scale_of(&self.get(desc, ns, name).await?, paths))
    }

    /// PUT or PATCH `.../<name>/scale`; returns the Scale written.
    pub async fn write_scale(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
        write: ScaleWrite,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let paths = paths(desc)?;
        let precondition = match &write {
            ScaleWrite::Replace(body) => meta_str(body, "resourceVersion")
                .map(parse_rv)
                .transpose()?,
            ScaleWrite::Patch(PatchKind::Apply, _) => {
                return Err(ApiError::UnsupportedMediaType(
                    "server-side apply of a scale subresource is not supported; use a merge or JSON patch".into(),
                ));
            }
            ScaleWrite::Patch(..) => None,
        };
        let written = self
            .modify(
                desc,
                ns,
                name,
                precondition,
                opts,
                |current| {
                    let scale = match &write {
                        ScaleWrite::Replace(body) => body.clone(),
                        ScaleWrite::Patch(kind, patch) => {
                            let mut scale = scale_of(current, paths);
                            apply_patch(*kind, &mut scale, patch, &Lists::default())?;
                            scale
                        }
                    };
                    with_replicas(current.clone(), &scale, paths, name)
                },
                false,
                "Update",
            )
            .await?;
        Ok(Written {
            object: scale_of(&written.object, paths),
            ..written
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_paths() -> ScalePaths {
        ScalePaths {
            spec: vec!["spec".into(), "instances".into()],
            status: vec!["status".into(), "tasks".into(), "RUNNING".into()],
            selector: Some(vec!["status".into(), "selector".into()]),
        }
    }

    #[test]
    fn a_job_reads_as_a_scale_and_takes_its_replicas() {
        let job = json!({"metadata": {"name": "web", "namespace": "a", "uid": "u", "resourceVersion": "7", "labels": {"x": "y"}},
            "spec": {"instances": 3}, "status": {"tasks": {"RUNNING": 2, "PENDING": 1}, "selector": "corral.dev/job=web"}});
        let scale = scale_of(&job, &job_paths());
        assert_eq!(
            scale,
            json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": "web", "namespace": "a", "uid": "u", "resourceVersion": "7"},
                "spec": {"replicas": 3}, "status": {"replicas": 2, "selector": "corral.dev/job=web"}})
        );
        // Before the job controller has written the selector, there is none.
        let fresh = json!({"metadata": {"name": "web"}, "spec": {"instances": 1}});
        assert_eq!(
            scale_of(&fresh, &job_paths())["status"],
            json!({"replicas": 0})
        );
        let scaled = with_replicas(
            job.clone(),
            &json!({"spec": {"replicas": 5}}),
            &job_paths(),
            "web",
        )
        .expect("scaled");
        assert_eq!(scaled["spec"]["instances"], 5);
        assert_eq!(scaled["status"], job["status"]);
    }

    #[test]
    fn bad_replicas_and_other_objects_are_refused() {
        let job = json!({"metadata": {"name": "web"}, "spec": {"instances": 3}});
        for bad in [
            json!(-1),
            json!(1.5),
            json!("3"),
            json!(4_294_967_296_u64),
            Value::Null,
        ] {
            let got = with_replicas(
                job.clone(),
                &json!({"spec": {"replicas": bad}}),
                &job_paths(),
                "web",
            );
            assert!(
                matches!(&got, Err(ApiError::Invalid { errors, .. }) if errors[0].field == "spec.replicas"),
                "{bad}: {got:?}"
            );
        }
        let other = with_replicas(
            job.clone(),
            &json!({"metadata": {"name": "db"}, "spec": {"replicas": 1}}),
            &job_paths(),
            "web",
        );
        assert!(matches!(other, Err(ApiError::BadRequest(_))), "{other:?}");
        let kind = with_replicas(
            job,
            &json!({"kind": "Deployment", "spec": {"replicas": 1}}),
            &job_paths(),
            "web",
        );
        assert!(matches!(kind, Err(ApiError::BadRequest(_))), "{kind:?}");
    }
}
