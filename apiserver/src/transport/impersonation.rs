//! Impersonation, as kube-apiserver does it: a caller allowed the verb
//! `impersonate` on `users` (and on `groups`) acts as another user with the
//! groups it names, through the `Impersonate-User` and `Impersonate-Group`
//! headers (`kubectl --as alice --as-group team`). The request is then
//! authorized, audited and answered as that user; a refusal names the real
//! caller.

use http::HeaderMap;

use crate::error::ApiError;
use crate::transport::auth::{Attributes, Authorizer, User};

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";

fn may(authz: &dyn Authorizer, caller: &User, resource: &str, name: &str) -> Result<(), ApiError> {
    let attrs = Attributes {
        verb: "impersonate".into(),
        group: String::new(),
        resource: resource.into(),
        subresource: None,
        namespace: None,
        name: Some(name.to_owned()),
        field_selector: None,
        label_selector: None,
    };
    if authz.allows(caller, &attrs) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "{resource} \"{name}\" is forbidden: User \"{}\" cannot impersonate resource \"{resource}\" in API group \"\" at the cluster scope",
        caller.name
    )))
}

/// The user the request acts as: `caller`, or whom its headers impersonate
/// when `caller` may.
pub fn effective_user(
    headers: &HeaderMap,
    caller: User,
    authz: &dyn Authorizer,
) -> Result<User, ApiError> {
    let text = |v: &http::HeaderValue| {
        v.to_str()
            .map(str::to_owned)
            .map_err(|_| ApiError::BadRequest("impersonation headers must be text".into()))
    };
    let target = headers.get(USER).map(text).transpose()?;
    let groups = headers
        .get_all(GROUP)
        .iter()
        .map(text)
        .collect::<Result<Vec<String>, _>>()?;
    let extra = headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-extra-") || k.as_str() == "impersonate-uid");
    let Some(target) = target else {
        if !groups.is_empty() || extra {
            return Err(ApiError::BadRequest(
                "requested impersonation of groups or extra fields without impersonating a user"
                    .into(),
            ));
        }
        return Ok(caller);
    };
    if target.is_empty() {
        return Err(ApiError::BadRequest("Impersonate-User is empty".into()));
    }
    if extra {
        return Err(ApiError::BadRequest(
            "impersonating a uid or extra fields is not supported".into(),
        ));
    }
    may(authz, &caller, "users", &target)?;
    for g in &groups {
        may(authz, &caller, "groups", g)?;
    }
    // As kube-apiserver: the user impersonated is authenticated too.
    Ok(User {
        name: target,
        groups: crate::transport::auth::with_authenticated(groups),
        method: caller.method,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::auth::AuthMethod;
    use crate::transport::rbac::{MASTERS, Policy, RbacAuthorizer};

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            method: AuthMethod::Token,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn only_those_allowed_impersonate_and_then_act_as_the_target() {
        let support: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "support"},
            "rules": [{"apiGroups": [""], "resources": ["users"], "resourceNames": ["alice"], "verbs": ["impersonate"]}]}))
        .expect("role");
        let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "support"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "support"},
            "subjects": [{"kind": "User", "name": "sam"}]}))
        .expect("binding");
        let authz = RbacAuthorizer::with_policy(Policy::new(&[support], &[], &[binding], &[]));
        let admin = user("corral-admin", &[MASTERS]);
        let sam = user("sam", &[]);
        // None asked: the caller.
        assert_eq!(
            effective_user(&HeaderMap::new(), sam.clone(), &authz).expect("ok"),
            sam
        );
        // The administrator may be anyone, with any groups.
        let as_alice = effective_user(
            &headers(&[
                ("Impersonate-User", "alice"),
                ("Impersonate-Group", "team-a"),
                ("Impersonate-Group", "ops"),
            ]),
            admin.clone(),
            &authz,
        )
        .expect("allowed");
        assert_eq!(
            (as_alice.name.as_str(), as_alice.groups.clone()),
            (
                "alice",
                vec![
                    "team-a".to_owned(),
                    "ops".to_owned(),
                    "system:authenticated".to_owned()
                ]
            )
        );
        // sam may be alice, without groups; not bob, and not alice in a group.
        assert_eq!(
            effective_user(
                &headers(&[("Impersonate-User", "alice")]),
                sam.clone(),
                &authz
            )
            .expect("allowed")
            .name,
            "alice"
        );
        let err = effective_user(
            &headers(&[("Impersonate-User", "bob")]),
            sam.clone(),
            &authz,
        )
        .expect_err("refused");
        assert_eq!(err.code(), http::StatusCode::FORBIDDEN);
        assert!(
            err.message()
                .contains("User \"sam\" cannot impersonate resource \"users\""),
            "{}",
            err.message()
        );
        assert!(
            effective_user(
                &headers(&[
                    ("Impersonate-User", "alice"),
                    ("Impersonate-Group", MASTERS)
                ]),
                sam.clone(),
                &authz
            )
            .is_err()
        );
        // Groups alone, or extras, are bad requests.
        let err = effective_user(
            &headers(&[("Impersonate-Group", "x")]),
            admin.clone(),
            &authz,
        )
        .expect_err("bad");
        assert_eq!(err.code(), http::StatusCode::BAD_REQUEST);
        assert!(
            effective_user(
                &headers(&[("Impersonate-User", "a"), ("Impersonate-Extra-Scopes", "x")]),
                admin,
                &authz
            )
            .is_err()
        );
    }
}
