//! Self reviews: the virtual, create-only kinds with which a client asks the
//! server about itself. Nothing is stored; the answer is the posted object
//! with its `status` filled in.
//! - authorization.k8s.io/v1 `SelfSubjectAccessReview` (`kubectl auth
//!   can-i`): would the authorization layer let the caller do this?
//! - authorization.k8s.io/v1 `SelfSubjectRulesReview` (`kubectl auth can-i
//!   --list`): every rule that applies to the caller in a namespace, as the
//!   authorization layer lists them (`incomplete` when it cannot);
//! - authentication.k8s.io/v1 `SelfSubjectReview` (`kubectl auth whoami`):
//!   who does the server take the caller for?
//! - authorization.k8s.io/v1 `SubjectAccessReview`: would the authorization
//!   layer let *another* user (`spec.user`, `spec.groups`) do this? For
//!   components that authorize their own clients; asking takes `create` on
//!   `subjectaccessreviews` (the bootstrap `system:auth-delegator` grants it).

use corral_api::validation::{FieldError, FieldErrorType};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::transport::auth::{Attributes, Authorizer, Rules, User};

/// One review kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Review {
    /// API group.
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural resource name (the path segment).
    pub plural: &'static str,
}

/// Every review this server answers (the last, Corral's PlanReview, is
/// answered by [`crate::transport::plans`]; it is listed here so that
/// discovery shows every create-only kind alike).
pub const REVIEWS: [Review; 5] = [
    Review {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SelfSubjectAccessReview",
        plural: "selfsubjectaccessreviews",
    },
    Review {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SelfSubjectRulesReview",
        plural: "selfsubjectrulesreviews",
    },
    Review {
        group: "authentication.k8s.io",
        version: "v1",
        kind: "SelfSubjectReview",
        plural: "selfsubjectreviews",
    },
    Review {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SubjectAccessReview",
        plural: "subjectaccessreviews",
    },
    Review {
        group: "corral.dev",
        version: "v1alpha1",
        kind: "PlanReview",
        plural: "planreviews",
    },
];

/// The review at `/apis/<group>/<version>/<plural>`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Review> {
    REVIEWS
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The review kinds of `group`/`version` (for discovery).
pub fn of(group: &str, version: &str) -> Vec<&'static Review> {
    REVIEWS
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

/// Every authenticated caller is also in this group, as in Kubernetes.
const AUTHENTICATED: &str = "system:authenticated";

fn invalid(review: &Review, field: &str, detail: &str) -> ApiError {
    ApiError::Invalid {
        kind: format!("{}.{}", review.kind, review.group),
        name: String::new(),
        errors: vec![FieldError {
            type_: FieldErrorType::Invalid,
            field: field.to_owned(),
            value: None,
            detail: detail.to_owned(),
        }],
    }
}

fn string(v: &Value, field: &str) -> Option<String> {
    v.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Answers `body`, posted by `user`: the body with its status.
pub fn answer(
    review: &Review,
    mut body: Value,
    user: &User,
    authz: &dyn Authorizer,
) -> Result<Value, ApiError> {
    if let Some(kind) = body.get("kind").and_then(Value::as_str)
        && kind != review.kind
    {
        return Err(ApiError::BadRequest(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            review.kind
        )));
    }
    let status = match review.kind {
        "SelfSubjectAccessReview" => access(review, &body, user, authz)?,
        "SubjectAccessReview" => {
            let subject = subject_of(review, &body, user, authz)?;
            access(review, &body, &subject, authz)?
        }
        "SelfSubjectRulesReview" => rules(&body, user, authz)?,
        _ => {
            let mut groups = user.groups.clone();
            if !groups.iter().any(|g| g == AUTHENTICATED) {
                groups.push(AUTHENTICATED.to_owned());
            }
            json!({"userInfo": {"username": user.name, "groups": groups}})
        }
    };
    body["apiVersion"] = json!(format!("{}/{}", review.group, review.version));
    body["kind"] = json!(review.kind);
    body["metadata"] = json!({"creationTimestamp": null});
    body["status"] = status;
    Ok(body)
}

/// The user a SubjectAccessReview asks about, once `asker` may ask.
fn subject_of(
    review: &Review,
    body: &Value,
    asker: &User,
    authz: &dyn Authorizer,
) -> Result<User, ApiError> {
    let may_ask = Attributes {
        verb: "create".into(),
        group: review.group.into(),
        resource: review.plural.into(),
        subresource: None,
        namespace: None,
        name: None,
        field_selector: None,
        label_selector: None,
    };
    crate::transport::auth::authorize(authz, asker, &may_ask)?;
    let spec = body.get("spec").cloned().unwrap_or_default();
    let name = string(&spec, "user").unwrap_or_default();
    let groups: Vec<String> = spec
        .get("groups")
        .and_then(Value::as_array)
        .map(|g| {
            g.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if name.is_empty() && groups.is_empty() {
        return Err(invalid(
            review,
            "spec.user",
            "at least one of user or groups must be specified",
        ));
    }
    Ok(User {
        name,
        groups,
        method: crate::transport::auth::AuthMethod::Token,
    })
}

fn access(
    review: &Review,
    body: &Value,
    user: &User,
    authz: &dyn Authorizer,
) -> Result<Value, ApiError> {
    let spec = body.get("spec").cloned().unwrap_or_default();
    match (
        spec.get("resourceAttributes").filter(|v| v.is_object()),
        spec.get("nonResourceAttributes").filter(|v| v.is_object()),
    ) {
        (Some(r), None) => {
            let attrs = Attributes {
                verb: string(r, "verb").unwrap_or_default(),
                group: string(r, "group").unwrap_or_default(),
                resource: string(r, "resource").unwrap_or_default(),
                subresource: string(r, "subresource"),
                namespace: string(r, "namespace"),
                name: string(r, "name"),
                field_selector: r
                    .get("fieldSelector")
                    .and_then(|f| string(f, "rawSelector")),
                label_selector: r
                    .get("labelSelector")
                    .and_then(|f| string(f, "rawSelector")),
            };
            if attrs.verb.is_empty() {
                return Err(invalid(
                    review,
                    "spec.resourceAttributes.verb",
                    "a verb is required",
                ));
            }
            Ok(if authz.allows(user, &attrs) {
                json!({"allowed": true})
            } else {
                json!({"allowed": false, "reason": format!(
                    "user {:?} may not {} {} in this cluster", user.name, attrs.verb,
                    if attrs.group.is_empty() { attrs.resource.clone() } else { format!("{}.{}", attrs.resource, attrs.group) }
                )})
            })
        }
        (None, Some(n)) => {
            let (verb, path) = (
                string(n, "verb").unwrap_or_default(),
                string(n, "path").unwrap_or_default(),
            );
            if verb.is_empty() || path.is_empty() {
                return Err(invalid(
                    review,
                    "spec.nonResourceAttributes",
                    "a verb and a path are required",
                ));
            }
            Ok(if authz.allows_path(user, &verb, &path) {
                json!({"allowed": true})
            } else {
                json!({"allowed": false, "reason": format!("user {:?} may not {verb} path {path}", user.name)})
            })
        }
        _ => Err(invalid(
            review,
            "spec",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
    }
}

fn rules(body: &Value, user: &User, authz: &dyn Authorizer) -> Result<Value, ApiError> {
    // As kube-apiserver: the rules are always those of one namespace.
    let Some(namespace) = body
        .pointer("/spec/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return Err(ApiError::BadRequest("no namespace on request".into()));
    };
    Ok(match authz.rules(user, namespace) {
        Some(Rules {
            resources,
            non_resources,
        }) => json!({
            "resourceRules": resources.iter().map(|r| {
                let mut rule = json!({
                    "verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources,
                });
                if !r.resource_names.is_empty() {
                    rule["resourceNames"] = json!(r.resource_names);
                }
                rule
            }).collect::<Vec<_>>(),
            "nonResourceRules": non_resources.iter().map(|r| json!({
                "verbs": r.verbs, "nonResourceURLs": r.urls,
            })).collect::<Vec<_>>(),
            "incomplete": false,
        }),
        None => json!({
            "resourceRules": [],
            "nonResourceRules": [],
            "incomplete": true,
            "evaluationError": "the authorization layer cannot list its rules; ask about one action with kubectl auth can-i",
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::auth::{AuthMethod, ReadOnly};

    fn bob() -> User {
        User {
            name: "bob".into(),
            groups: vec!["team-a".into()],
            method: AuthMethod::Token,
        }
    }

    fn can_i(spec: Value) -> Result<Value, ApiError> {
        answer(
            &REVIEWS[0],
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": spec}),
            &bob(),
            &ReadOnly,
        )
    }

    #[test]
    fn access_reviews_ask_the_authorizer() {
        let list = can_i(json!({"resourceAttributes": {"verb": "list", "group": "corral.dev", "resource": "jobs", "namespace": "a"}}))
            .expect("answer");
        assert_eq!(list["status"]["allowed"], true);
        assert_eq!(list["spec"]["resourceAttributes"]["resource"], "jobs");
        let create =
            can_i(json!({"resourceAttributes": {"verb": "create", "group": "corral.dev", "resource": "jobs"}}))
                .expect("answer");
        assert_eq!(create["status"]["allowed"], false);
        assert!(
            create["status"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("create jobs.corral.dev")),
            "{create}"
        );
        let path = can_i(json!({"nonResourceAttributes": {"verb": "get", "path": "/version"}}))
            .expect("answer");
        assert_eq!(path["status"]["allowed"], true);
    }

    #[test]
    fn malformed_access_reviews_are_invalid() {
        for spec in [
            json!({}),
            json!({"resourceAttributes": {"resource": "jobs"}}),
            json!({"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"path": "/"}}),
        ] {
            assert!(
                matches!(can_i(spec.clone()), Err(ApiError::Invalid { .. })),
                "{spec}"
            );
        }
        let wrong_kind = answer(
            &REVIEWS[0],
            json!({"kind": "SelfSubjectReview"}),
            &bob(),
            &ReadOnly,
        );
        assert!(matches!(wrong_kind, Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn rules_reviews_list_the_authorizers_rules_in_a_namespace() {
        let review = |spec: Value, authz: &dyn Authorizer| {
            answer(
                &REVIEWS[1],
                json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": spec}),
                &bob(),
                authz,
            )
        };
        let read = review(json!({"namespace": "default"}), &ReadOnly).expect("answer");
        assert_eq!(read["kind"], "SelfSubjectRulesReview");
        assert_eq!(
            read["status"],
            json!({"resourceRules": [{"verbs": ["get", "list", "watch"], "apiGroups": ["*"], "resources": ["*"]}],
                   "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["*"]}],
                   "incomplete": false})
        );
        let all = review(
            json!({"namespace": "a"}),
            &crate::transport::auth::AllowAuthenticated,
        )
        .expect("answer");
        assert_eq!(all["status"]["resourceRules"][0]["verbs"], json!(["*"]));

        // An authorizer that cannot list rules gives an incomplete answer.
        #[derive(Debug)]
        struct Opaque;
        impl Authorizer for Opaque {
            fn allows(&self, _: &User, _: &Attributes) -> bool {
                false
            }
        }
        let opaque = review(json!({"namespace": "a"}), &Opaque).expect("answer");
        assert_eq!(opaque["status"]["incomplete"], true);
        assert_eq!(opaque["status"]["resourceRules"], json!([]));

        for spec in [json!({}), json!({"namespace": ""}), json!({"namespace": 7})] {
            assert!(
                matches!(
                    review(spec.clone(), &ReadOnly),
                    Err(ApiError::BadRequest(_))
                ),
                "{spec}"
            );
        }
    }

    #[test]
    fn whoami_names_the_user_and_its_groups() {
        let me = answer(&REVIEWS[2], json!({}), &bob(), &ReadOnly).expect("answer");
        assert_eq!(me["kind"], "SelfSubjectReview");
        assert_eq!(me["status"]["userInfo"]["username"], "bob");
        assert_eq!(
            me["status"]["userInfo"]["groups"],
            json!(["team-a", "system:authenticated"])
        );
    }
}
