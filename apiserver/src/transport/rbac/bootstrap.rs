//! The bootstrap policy, reconciled at every server start as kube-apiserver
//! reconciles its own: `cluster-admin` (everything) bound to the group
//! `system:masters`; the aggregated `admin`, `edit` and `view` ClusterRoles
//! with Corral's share of them (`corral:aggregate-to-*`); and
//! `corral:node-bootstrapper`, with which holders of a bootstrap token
//! (group `system:bootstrappers`) ask for node certificates. Nodes
//! themselves are authorized by what they are (the Node authorizer), not
//! by these objects.
//! Namespace administrators (`admin`) write Roles and RoleBindings there,
//! never granting more than they hold (`escalation`).
//!
//! A bootstrap object that is missing is created; one whose
//! `rbac.authorization.kubernetes.io/autoupdate` annotation is `"false"` is
//! left as its administrator wrote it; any other is brought back to the
//! bootstrap rules (permissions an administrator added to it are lost, as in
//! Kubernetes: extend the aggregated roles with a labelled ClusterRole).

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::storage::registry::{Api, WriteOptions};

/// The scheduler's user: it reads what placement needs, binds tasks and
/// writes victims' and waiting tasks' status.
pub const SCHEDULER: &str = "system:corral-scheduler";
/// The other controllers' user: jobs, cron, lost tasks, node liveness,
/// role and quota figures, and their leader election.
pub const CONTROLLER_MANAGER: &str = "system:corral-controller-manager";
/// The group of bootstrap tokens: they may only ask for node certificates.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// Bootstrap objects of earlier releases, deleted at start unless their
/// administrator kept them (`autoupdate: "false"`): the shared agent
/// credential's role and binding, replaced by node credentials.
const RETIRED: [(&str, &str); 2] = [
    ("clusterrolebindings", "corral:agents"),
    ("clusterroles", "corral:agent"),
];
/// The annotation that keeps an administrator's edit of a bootstrap object.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

const RBAC: &str = "rbac.authorization.k8s.io";
const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 7] = [
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "get",
    "list",
];

fn cluster_role(name: &str, labels: Value, rules: Value) -> Value {
    json!({"apiVersion": format!("{RBAC}/v1"), "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels, "annotations": {AUTOUPDATE: "true"}},
        "rules": rules})
}

fn aggregated(name: &str, labels: Value, selects: &[&str]) -> Value {
    let selectors: Vec<Value> = selects
        .iter()
        .map(|l| json!({"matchLabels": {format!("{RBAC}/aggregate-to-{l}"): "true"}}))
        .collect();
    let mut role = cluster_role(name, labels, json!([]));
    role["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
    role
}

/// The user the chart's monitoring certificate names (bound to
/// `system:monitoring`: `get` on `/metrics` and the health paths).
pub const MONITORING_USER: &str = "corral-monitoring";

fn binding(name: &str, role: &str, group: &str) -> Value {
    binding_of(name, role, "Group", group)
}

fn binding_of(name: &str, role: &str, kind: &str, subject: &str) -> Value {
    json!({"apiVersion": format!("{RBAC}/v1"), "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "annotations": {AUTOUPDATE: "true"}},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC, "kind": kind, "name": subject}]})
}

/// The bootstrap objects, ClusterRoles first.
pub fn objects() -> Vec<Value> {
    let mut w: Vec<&str> = WRITE.to_vec();
    w.push("watch");
    vec![
        cluster_role(
            "cluster-admin",
            json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        // admin gathers edit, edit gathers view (the labels say so).
        aggregated(
            "admin",
            json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            &["admin"],
        ),
        aggregated(
            "edit",
            json!({"kubernetes.io/bootstrapping": "rbac-defaults", format!("{RBAC}/aggregate-to-admin"): "true"}),
            &["edit"],
        ),
        aggregated(
            "view",
            json!({"kubernetes.io/bootstrapping": "rbac-defaults", format!("{RBAC}/aggregate-to-edit"): "true"}),
            &["view"],
        ),
        // A namespace's readers see its jobs, tasks, logs, events,
        // endpoints and configuration, never its Secrets.
        cluster_role(
            "corral:aggregate-to-view",
            json!({format!("{RBAC}/aggregate-to-view"): "true"}),
            json!([{"apiGroups": ["corral.dev"], "resources": ["jobs", "jobs/status", "jobs/scale", "tasks", "tasks/status", "tasks/log"], "verbs": READ},
                   {"apiGroups": [""], "resources": ["configmaps", "events", "pods", "pods/status", "pods/log", "services", "persistentvolumeclaims"], "verbs": READ},
                   {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": READ},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": READ}]),
        ),
        // Its editors run jobs (tasks are the controllers' and the agents':
        // a team kills and restarts them through its jobs, and evicts them
        // within their jobs' disruption budgets), plan jobs before running
        // them (a plan names nodes and other namespaces' tasks it would
        // preempt), run Pods (each a task: Kubernetes-native batch tools,
        // Spark's drivers), and keep their
        // Secrets and ConfigMaps. Using a Corral role takes `use` on it,
        // which edit does not grant (a Pod's role included).
        cluster_role(
            "corral:aggregate-to-edit",
            json!({format!("{RBAC}/aggregate-to-edit"): "true"}),
            json!([{"apiGroups": ["corral.dev"], "resources": ["jobs", "jobs/scale"], "verbs": w},
                   {"apiGroups": ["corral.dev"], "resources": ["tasks/eviction", "planreviews"], "verbs": ["create"]},
                   {"apiGroups": [""], "resources": ["configmaps", "secrets", "pods", "services", "persistentvolumeclaims"], "verbs": w}]),
        ),
        // Its administrators also grant access within it (never more than
        // they hold: see `escalation`).
        cluster_role(
            "corral:aggregate-to-admin",
            json!({format!("{RBAC}/aggregate-to-admin"): "true"}),
            json!([{"apiGroups": [RBAC], "resources": ["roles", "rolebindings"], "verbs": w}]),
        ),
        // A bootstrap token asks for node certificates, and nothing else.
        cluster_role(
            "corral:node-bootstrapper",
            json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            json!([{"apiGroups": ["corral.dev"], "resources": [crate::transport::node_certificates::PLURAL], "verbs": ["create"]}]),
        ),
        // The scheduler: what placement reads, bindings, and the status of
        // victims and of tasks left waiting.
        cluster_role(
            SCHEDULER,
            json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            json!([{"apiGroups": ["corral.dev"], "resources": ["nodes", "reservations", "roles", "quotas", "tasks"], "verbs": READ},
                   {"apiGroups": ["corral.dev"], "resources": ["tasks/binding"], "verbs": ["create"]},
                   {"apiGroups": ["corral.dev"], "resources": ["tasks/status"], "verbs": ["get", "update", "patch"]}]),
        ),
        // The other controllers: tasks from jobs and cron (on the role the
        // job names, and privileged if it asks, both checked when the job
        // was written),
        // their status through the state machine, node liveness from
        // Leases, role and quota figures, and the Lease they elect a leader
        // by; Events about Nodes (the disruption brake); the EndpointSlices
        // of service jobs; evictions, for drains; Pods, each run as a task
        // (its status mirrored, its deletion finished once its task ended).
        // No binding, no Secret, no RBAC.
        cluster_role(
            CONTROLLER_MANAGER,
            json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            json!([{"apiGroups": ["corral.dev"], "resources": ["jobs", "roles", "quotas", "nodes", "reservations"], "verbs": READ},
                   {"apiGroups": ["corral.dev"], "resources": ["tasks"], "verbs": ["get", "list", "watch", "create", "delete"]},
                   {"apiGroups": ["corral.dev"], "resources": ["tasks/eviction"], "verbs": ["create"]},
                   {"apiGroups": ["corral.dev"], "resources": ["roles", "roles/privileged"], "verbs": ["use"]},
                   {"apiGroups": ["corral.dev"], "resources": ["jobs/status", "tasks/status", "roles/status", "quotas/status", "nodes/status", "reservations/status"], "verbs": ["get", "update", "patch"]},
                   {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch", "create", "update", "patch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
                   {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "update", "patch", "delete"]},
                   {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get", "update", "patch"]},
                   {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]),
        ),
        // Discovery and the OpenAPI documents, for every authenticated
        // caller (as kube-apiserver's system:discovery).
        cluster_role(
            "system:discovery",
            json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            // The UI's data path answers each user only what they may
            // read (see transport::ui).
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", "/version", "/version/", "/healthz", "/livez", "/readyz", "/ui/api/*"], "verbs": ["get"]}]),
        ),
        // The metrics, for monitoring systems (group system:monitoring).
        cluster_role(
            "system:monitoring",
            json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            json!([{"nonResourceURLs": ["/metrics", "/healthz", "/livez", "/readyz"], "verbs": ["get"]}]),
        ),
        // For components that authorize their own clients through the API
        // server (Kubernetes' name for it).
        cluster_role(
            "system:auth-delegator",
            json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            json!([{"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}]),
        ),
        binding(
            "cluster-admin",
            "cluster-admin",
            crate::transport::rbac::MASTERS,
        ),
        binding(
            "system:discovery",
            "system:discovery",
            crate::transport::auth::AUTHENTICATED_GROUP,
        ),
        binding(
            "system:monitoring",
            "system:monitoring",
            "system:monitoring",
        ),
        // The chart's scrapers: a client certificate can name a user but
        // Helm cannot write its group (O), so the user is bound here.
        binding_of(
            "corral:monitoring",
            "system:monitoring",
            "User",
            MONITORING_USER,
        ),
        binding_of(SCHEDULER, SCHEDULER, "User", SCHEDULER),
        binding_of(
            CONTROLLER_MANAGER,
            CONTROLLER_MANAGER,
            "User",
            CONTROLLER_MANAGER,
        ),
        binding(
            "corral:node-bootstrappers",
            "corral:node-bootstrapper",
            BOOTSTRAPPERS,
        ),
    ]
}

/// Creates the bootstrap objects that are missing and brings back those
/// that drifted (see the module doc); deletes retired ones.
pub async fn reconcile(api: &Api) -> Result<(), ApiError> {
    for (plural, name) in RETIRED {
        let desc = api
            .registry
            .find(RBAC, "v1", plural)
            .ok_or_else(|| ApiError::Internal(format!("{plural} are not registered")))?;
        match api.get(&desc, None, name).await {
            Ok(kept) if kept["metadata"]["annotations"][AUTOUPDATE] == "false" => {}
            Ok(_) => match api
                .delete(
                    &desc,
                    None,
                    name,
                    &crate::storage::registry::DeleteOptions::default(),
                )
                .await
            {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            },
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    for obj in objects() {
        let (group_kind, name) = (
            obj["kind"].as_str().unwrap_or_default().to_owned(),
            obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        let plural = match group_kind.as_str() {
            "ClusterRole" => "clusterroles",
            _ => "clusterrolebindings",
        };
        let desc = api
            .registry
            .find(RBAC, "v1", plural)
            .ok_or_else(|| ApiError::Internal(format!("{plural} are not registered")))?;
        let current = match api.get(&desc, None, &name).await {
            Ok(v) => v,
            Err(ApiError::NotFound { .. }) => {
                match api.create(&desc, None, obj, &WriteOptions::default()).await {
                    Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if current["metadata"]["annotations"][AUTOUPDATE] == "false" {
            continue;
        }
        let same = ["rules", "aggregationRule", "roleRef", "subjects"]
            .iter()
            .all(|f| current[*f] == obj[*f] || (current[*f].is_null() && obj[*f] == json!([])));
        if same {
            continue;
        }
        let mut updated = obj;
        updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        match api
            .update(&desc, None, &name, updated, false, &WriteOptions::default())
            .await
        {
            // Another API server over the same store reconciled it first.
            Ok(_) | Err(ApiError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
