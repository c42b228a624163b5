//! kube-apiserver's audit Policy (`audit.k8s.io/v1`), decided purely: the
//! first rule that matches a request sets its level and the stages left
//! out; a request no rule matches is not audited.

use serde::Deserialize;

use crate::transport::auth::{Attributes, User};

/// How much of a request is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    /// Nothing.
    None,
    /// Who, what, when and the answer's code.
    Metadata,
    /// Also the request's body.
    Request,
    /// Also the response's body.
    RequestResponse,
}

/// When in a request's life an event is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Stage {
    /// As soon as the request is known (before it is worked on).
    RequestReceived,
    /// A long-running request's response headers are sent.
    ResponseStarted,
    /// The response is complete.
    ResponseComplete,
    /// The handler failed.
    Panic,
}

impl Stage {
    /// Its name in events.
    pub fn name(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }
}

impl Level {
    /// Its name in events.
    pub fn name(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

/// Resources a rule names: a group and its resources (`pods`, `pods/log`,
/// `pods/*`, `*/status`, `*`), optionally some objects by name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupResources {
    /// The API group (`""` is the core group).
    #[serde(default)]
    pub group: String,
    /// Resources; empty: every resource of the group.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Object names; empty: any.
    #[serde(default)]
    pub resource_names: Vec<String>,
}

/// One rule: a level for the requests that match every field given.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The level of the requests it matches.
    pub level: Level,
    /// Users (empty: anyone).
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups, any of which matches (empty: any).
    #[serde(default)]
    pub user_groups: Vec<String>,
    /// Verbs (empty: any).
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Resources (empty: any resource request).
    #[serde(default)]
    pub resources: Vec<GroupResources>,
    /// Namespaces (`""` matches cluster-scoped objects; empty: any).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Paths of non-resource requests (`/healthz`, `/version*`); a rule
    /// with these matches no resource request.
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
    /// Stages this rule leaves out (added to the policy's).
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
}

/// An audit Policy (see the module doc).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Rules, the first match deciding.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Stages no event is recorded at.
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
}

/// Why a policy could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not an audit.k8s.io/v1 Policy.
    #[error("not an audit.k8s.io/v1 Policy: {0}")]
    Kind(String),
    /// Unreadable YAML or unknown values.
    #[error("reading the audit policy: {0}")]
    Parse(String),
}

/// What a request is, for the policy.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Who asks (None before, or without, authentication).
    pub user: Option<&'a User>,
    /// The verb (`get`, `create`…; for non-resource requests, the HTTP
    /// method in lower case).
    pub verb: &'a str,
    /// The resource request, when it is one.
    pub resource: Option<&'a Attributes>,
    /// The path.
    pub path: &'a str,
}

fn any_or(list: &[String], f: impl Fn(&str) -> bool) -> bool {
    list.is_empty() || list.iter().any(|v| f(v))
}

fn resource_matches(rule: &GroupResources, a: &Attributes) -> bool {
    if rule.group != a.group {
        return false;
    }
    let names = any_or(&rule.resource_names, |n| a.name.as_deref() == Some(n));
    let resources = any_or(&rule.resources, |r| {
        let (res, sub) = match r.split_once('/') {
            Some((res, sub)) => (res, Some(sub)),
            None => (r, None),
        };
        match (sub, a.subresource.as_deref()) {
            (None, None) => res == "*" || res == a.resource,
            (None, Some(_)) => res == "*",
            (Some(s), Some(asked)) => (res == "*" || res == a.resource) && (s == "*" || s == asked),
            (Some(_), None) => false,
        }
    });
    names && resources
}

impl Rule {
    fn matches(&self, f: &Facts<'_>) -> bool {
        let users = any_or(&self.users, |u| f.user.is_some_and(|me| me.name == u));
        let groups = any_or(&self.user_groups, |g| {
            f.user
                .is_some_and(|me| me.groups.iter().any(|mine| mine == g))
        });
        let verbs = any_or(&self.verbs, |v| v == f.verb);
        if !(users && groups && verbs) {
            return false;
        }
        match f.resource {
            Some(a) => {
                self.non_resource_urls.is_empty()
                    && any_or(&self.namespaces, |n| {
                        a.namespace.as_deref().unwrap_or("") == n
                    })
                    && (self.resources.is_empty()
                        || self.resources.iter().any(|r| resource_matches(r, a)))
            }
            None => {
                self.resources.is_empty()
                    && self.namespaces.is_empty()
                    && any_or(&self.non_resource_urls, |u| match u.strip_suffix('*') {
                        Some(prefix) => f.path.starts_with(prefix),
                        None => f.path == u,
                    })
            }
        }
    }
}

impl Policy {
    /// Reads a Policy from YAML (or JSON).
    pub fn from_yaml(text: &str) -> Result<Policy, PolicyError> {
        let v: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        match (v["apiVersion"].as_str(), v["kind"].as_str()) {
            (Some("audit.k8s.io/v1"), Some("Policy")) => {}
            (v, k) => {
                return Err(PolicyError::Kind(format!(
                    "apiVersion {:?}, kind {:?}",
                    v.unwrap_or_default(),
                    k.unwrap_or_default()
                )));
            }
        }
        serde_json::from_value(v).map_err(|e| PolicyError::Parse(e.to_string()))
    }

    /// The level of a request, and whether `stage` is recorded for it.
    pub fn level(&self, f: &Facts<'_>) -> (Level, Vec<Stage>) {
        match self.rules.iter().find(|r| r.matches(f)) {
            None => (Level::None, Vec::new()),
            Some(r) => {
                let mut omit = self.omit_stages.clone();
                omit.extend(r.omit_stages.iter().copied());
                (r.level, omit)
            }
        }
    }
}

#[cfg(test)]
mod tests;
