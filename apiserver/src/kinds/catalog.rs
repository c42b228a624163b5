//! What the server serves: one [`ResourceDesc`] per kind, built from the same
//! schemas the CRDs are generated from (Corral kinds) or from k8s-openapi
//! (core kinds), so discovery, OpenAPI, validation and tables agree.

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use schemars::JsonSchema;
use serde_json::{Value, json};

/// How a table cell is computed.
#[derive(Debug, Clone, PartialEq)]
pub enum CellSource {
    /// A JSONPath (`.status.phase`, `.status.conditions[?(@.type=="Ready")].status`).
    Path(String),
    /// The number of keys in `data` (and `binaryData`).
    DataCount,
    /// Time since `metadata.creationTimestamp`, as `5m`.
    Age,
    /// Time since the first of these times (JSON pointers) that is set, as
    /// `5m`: an event's last sighting.
    AgeOfFirst(Vec<&'static str>),
    /// The object referred to at this JSON pointer, as `kind/name` (kind in
    /// lower case), as kubectl prints an event's object.
    Reference(&'static str),
    /// The first of these values (JSON pointers) that is set.
    FirstOf(Vec<&'static str>),
    /// The object's name. A kind whose columns include it places it there
    /// (events: with `-o wide` only) instead of first.
    Name,
    /// A binding's role, as `Kind/name` (`ClusterRole/edit`).
    RoleRef,
    /// A binding's subjects of this kind, comma-separated (service accounts
    /// as `namespace/name`).
    Subjects(&'static str),
    /// An EndpointSlice's port numbers, comma-separated, as kubectl prints them.
    SlicePorts,
    /// An EndpointSlice's first addresses, as kubectl prints them.
    SliceEndpoints,
}

/// The columns of an event's table, core/v1 and events.k8s.io/v1 alike, as
/// kube-apiserver prints them (the name only with `-o wide`); the fields are
/// named as in core/v1 (`core`) or events.k8s.io/v1.
pub(crate) fn event_columns(core: bool) -> Vec<Column> {
    let (first, last, regarding, subobject, source, controller, count, message) = if core {
        (
            "/firstTimestamp",
            "/lastTimestamp",
            "/involvedObject",
            ".involvedObject.fieldPath",
            "/source/component",
            "/reportingComponent",
            "/count",
            ".message",
        )
    } else {
        (
            "/deprecatedFirstTimestamp",
            "/deprecatedLastTimestamp",
            "/regarding",
            ".regarding.fieldPath",
            "/deprecatedSource/component",
            "/reportingController",
            "/deprecatedCount",
            ".note",
        )
    };
    let column = |name: &str, priority: i32, source| Column {
        name: name.into(),
        type_: "string".into(),
        priority,
        source,
    };
    let created = "/metadata/creationTimestamp";
    vec![
        column(
            "Last Seen",
            0,
            CellSource::AgeOfFirst(vec![
                "/series/lastObservedTime",
                last,
                "/eventTime",
                created,
            ]),
        ),
        path_col("Type", "string", ".type"),
        path_col("Reason", "string", ".reason"),
        column("Object", 0, CellSource::Reference(regarding)),
        column("Subobject", 1, CellSource::Path(subobject.into())),
        column("Source", 1, CellSource::FirstOf(vec![source, controller])),
        path_col("Message", "string", message),
        column(
            "First Seen",
            1,
            CellSource::AgeOfFirst(vec![first, "/eventTime", created]),
        ),
        column(
            "Count",
            1,
            CellSource::FirstOf(vec!["/series/count", count]),
        ),
        column("Name", 1, CellSource::Name),
    ]
}

/// One printer column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean`, `date`.
    pub type_: String,
    /// Shown only with `-o wide` when > 0.
    pub priority: i32,
    /// What the cell shows.
    pub source: CellSource,
}

/// The group of a resource family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A `corral.dev` custom resource (JSON merge patch only; SMP is 415).
    Custom,
    /// A built-in Kubernetes kind.
    BuiltIn,
}

/// Where a kind with a `/scale` subresource keeps its replica counts (an
/// autoscaling/v1 Scale's `spec.replicas` and `status.replicas`), as field
/// names from the object's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    /// The desired count (`.spec.instances` for Jobs).
    pub spec: Vec<String>,
    /// The observed count.
    pub status: Vec<String>,
    /// The selector of the counted objects, in its string form.
    pub selector: Option<Vec<String>>,
}

fn json_path_fields(path: &str) -> Vec<String> {
    path.trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A kind served as another API group's form of a stored kind: events.k8s.io/v1
/// Event is core/v1 Event in other words. Reads and writes go to the stored
/// kind's objects, converted on the way in and out, so each is seen through
/// both and written through either.
#[derive(Debug, Clone)]
pub struct View {
    /// The kind whose objects are stored.
    pub storage: Arc<ResourceDesc>,
    /// A stored object in this view's form.
    pub to_view: fn(Value) -> Value,
    /// An object in this view's form, as stored.
    pub to_storage: fn(Value) -> Value,
    /// A field selector's field (in this view's names) as stored.
    pub stored_field: fn(&str) -> String,
    /// The view's own rules for a write through it (`old` on an update),
    /// on top of the stored kind's.
    pub validate: fn(&Value, Option<&Value>) -> Vec<corral_api::validation::FieldError>,
}

impl View {
    /// Renames `fields`' terms from this view's names to the stored ones.
    pub fn to_stored_selector(&self, fields: &mut crate::storage::selectors::FieldSelector) {
        for term in &mut fields.0 {
            term.field = (self.stored_field)(&term.field);
        }
    }
}

/// Everything the server knows about one kind.
#[derive(Debug, Clone)]
pub struct ResourceDesc {
    /// API group; empty for core.
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: Vec<String>,
    /// Categories (`corral`).
    pub categories: Vec<String>,
    /// Whether `/status` is a subresource (status ignored on main writes).
    pub status_subresource: bool,
    /// The `/scale` subresource, when the kind has one.
    pub scale: Option<ScalePaths>,
    /// Printer columns after NAME (AGE included where wanted).
    pub columns: Vec<Column>,
    /// Extra field-selector paths besides `metadata.name` / `metadata.namespace`.
    pub selectable: Vec<String>,
    /// The OpenAPI v3 schema of the whole object.
    pub schema: Value,
    /// Its merged lists, read from `schema` (for server-side apply).
    pub lists: Arc<crate::storage::ssa::Lists>,
    /// `schema`, read into the form admission checks objects with.
    pub checker: Arc<crate::storage::schema_check::Schema>,
    /// Custom or built-in.
    pub origin: Origin,
    /// Set when the kind is a view of another stored kind.
    pub view: Option<View>,
}

impl ResourceDesc {
    /// `corral.dev/v1alpha1`, or `v1` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `tasks.corral.dev`, or `configmaps` for core, as in error messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The store prefix of every object of this kind (or of one namespace).
    pub fn key_prefix(&self, namespace: Option<&str>) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{group}/{}/{ns}/", self.plural),
            _ => format!("/registry/{group}/{}/", self.plural),
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.key_prefix(namespace))
    }

    /// The name OpenAPI uses for the kind: `dev.corral.v1alpha1.Task`, `io.k8s.api.core.v1.ConfigMap`.
    pub fn schema_name(&self) -> String {
        match self.group {
            "" => format!("io.k8s.api.core.v1.{}", self.kind),
            g if g.ends_with(".k8s.io") => format!(
                "io.k8s.api.{}.{}.{}",
                g.trim_end_matches(".k8s.io"),
                self.version,
                self.kind
            ),
            g => {
                let reversed: Vec<&str> = g.split('.').rev().collect();
                format!("{}.{}.{}", reversed.join("."), self.version, self.kind)
            }
        }
    }
}

/// Every kind served, looked up by group/version/plural.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The kinds with objects of their own in the store (shared: every
    /// request's `Api` carries the catalog, and clones it for nothing).
    resources: Arc<[Arc<ResourceDesc>]>,
    /// The kinds served as views of stored ones.
    views: Arc<[Arc<ResourceDesc>]>,
}

/// An OpenAPI v3 schema for `T`, with every sub-schema inlined.
pub fn schema_of<T: JsonSchema>() -> Value {
    let settings = schemars::generate::SchemaSettings::openapi3().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    });
    let schema = settings.into_generator().into_root_schema_for::<T>();
    let mut v = schema.to_value();
    if let Some(o) = v.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
        o.remove("components");
        o.remove("definitions");
        o.remove("$defs");
    }
    v
}

fn age() -> Column {
    Column {
        name: "Age".into(),
        type_: "date".into(),
        priority: 0,
        source: CellSource::Age,
    }
}

pub(crate) fn path_col(name: &str, type_: &str, path: &str) -> Column {
    Column {
        name: name.into(),
        type_: type_.into(),
        priority: 0,
        source: CellSource::Path(path.into()),
    }
}

fn from_crd(crd: CustomResourceDefinition) -> ResourceDesc {
    let version = &crd.spec.versions[0];
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_else(|| json!({"type": "object"}));
    // The served schema describes the whole object, metadata included.
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("apiVersion".into(), json!({"type": "string"}));
        props.insert("kind".into(), json!({"type": "string"}));
        props.insert(
            "metadata".into(),
            schema_of::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(),
        );
    }
    let columns = version
        .additional_printer_columns
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|c| Column {
            source: if c.name == "Age" && c.json_path == ".metadata.creationTimestamp" {
                CellSource::Age
            } else {
                CellSource::Path(c.json_path)
            },
            name: c.name,
            type_: c.type_,
            priority: c.priority.unwrap_or(0),
        })
        .collect();
    ResourceDesc {
        group: leak(crd.spec.group.clone()),
        version: leak(version.name.clone()),
        kind: leak(crd.spec.names.kind.clone()),
        plural: leak(crd.spec.names.plural.clone()),
        singular: leak(crd.spec.names.singular.clone().unwrap_or_default()),
        namespaced: crd.spec.scope == "Namespaced",
        short_names: crd.spec.names.short_names.clone().unwrap_or_default(),
        categories: crd.spec.names.categories.clone().unwrap_or_default(),
        status_subresource: version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        scale: version
            .subresources
            .as_ref()
            .and_then(|s| s.scale.as_ref())
            .map(|s| ScalePaths {
                spec: json_path_fields(&s.spec_replicas_path),
                status: json_path_fields(&s.status_replicas_path),
                selector: s.label_selector_path.as_deref().map(json_path_fields),
            }),
        columns,
        selectable: version
            .selectable_fields
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|f| f.json_path.trim_start_matches('.').to_owned())
            .collect(),
        lists: Arc::new(crate::storage::ssa::Lists::from_schema(&schema)),
        checker: Arc::new(crate::storage::schema_check::Schema::compile(&schema)),
        schema,
        origin: Origin::Custom,
        view: None,
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn builtin(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    short_names: &[&str],
    status_subresource: bool,
    columns: Vec<Column>,
    selectable: &[&str],
    schema: Value,
) -> ResourceDesc {
    ResourceDesc {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        status_subresource,
        scale: None,
        columns,
        selectable: selectable.iter().map(|s| s.to_string()).collect(),
        lists: Arc::new(crate::storage::ssa::Lists::from_schema(&schema)),
        checker: Arc::new(crate::storage::schema_check::Schema::compile(&schema)),
        schema,
        origin: Origin::BuiltIn,
        view: None,
    }
}

/// rbac.authorization.k8s.io/v1: Role, ClusterRole, RoleBinding and
/// ClusterRoleBinding, as kube-apiserver serves them (after Corral's own
/// kinds in discovery, so `roles` alone still names Corral's Role; RBAC's is
/// `roles.rbac.authorization.k8s.io`, or `kubectl create role`).
fn rbac_kinds() -> Vec<ResourceDesc> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    const GROUP: &str = "rbac.authorization.k8s.io";
    // As kube-apiserver prints roles: when they were created.
    let created_at = || {
        vec![path_col(
            "Created At",
            "string",
            ".metadata.creationTimestamp",
        )]
    };
    // As kube-apiserver prints bindings: the role, the age, then (wide) who.
    let role_ref = || {
        let col = |name: &str, priority, source| Column {
            name: name.into(),
            type_: "string".into(),
            priority,
            source,
        };
        vec![
            col("Role", 0, CellSource::RoleRef),
            age(),
            col("Users", 1, CellSource::Subjects("User")),
            col("Groups", 1, CellSource::Subjects("Group")),
            col("ServiceAccounts", 1, CellSource::Subjects("ServiceAccount")),
        ]
    };
    vec![
        builtin(
            GROUP,
            "v1",
            "ClusterRole",
            "clusterroles",
            "clusterrole",
            false,
            &[],
            false,
            created_at(),
            &[],
            schema_of::<ClusterRole>(),
        ),
        builtin(
            GROUP,
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            "clusterrolebinding",
            false,
            &[],
            false,
            role_ref(),
            &[],
            schema_of::<ClusterRoleBinding>(),
        ),
        builtin(
            GROUP,
            "v1",
            "Role",
            "roles",
            "role",
            true,
            &[],
            false,
            created_at(),
            &[],
            schema_of::<Role>(),
        ),
        builtin(
            GROUP,
            "v1",
            "RoleBinding",
            "rolebindings",
            "rolebinding",
            true,
            &[],
            false,
            role_ref(),
            &[],
            schema_of::<RoleBinding>(),
        ),
    ]
}

impl Catalog {
    /// Corral's kinds plus the core kinds clients need.
    pub fn standard() -> Self {
        use k8s_openapi::api::coordination::v1::Lease;
        use k8s_openapi::api::core::v1::{
            ConfigMap, Event, Namespace, PersistentVolumeClaim, Pod, Secret, Service,
        };
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        let mut resources: Vec<ResourceDesc> =
            corral_api::crds::all().into_iter().map(from_crd).collect();
        resources.push(builtin(
            "",
            "v1",
            "Namespace",
            "namespaces",
            "namespace",
            false,
            &["ns"],
            true,
            vec![path_col("Status", "string", ".status.phase"), age()],
            &["status.phase"],
            schema_of::<Namespace>(),
        ));
        resources.push(builtin(
            "",
            "v1",
            "ConfigMap",
            "configmaps",
            "configmap",
            true,
            &["cm"],
            false,
            vec![
                Column {
                    name: "Data".into(),
                    type_: "integer".into(),
                    priority: 0,
                    source: CellSource::DataCount,
                },
                age(),
            ],
            &[],
            schema_of::<ConfigMap>(),
        ));
        resources.push(builtin(
            "",
            "v1",
            "Secret",
            "secrets",
            "secret",
            true,
            &[],
            false,
            vec![
                path_col("Type", "string", ".type"),
                Column {
                    name: "Data".into(),
                    type_: "integer".into(),
                    priority: 0,
                    source: CellSource::DataCount,
                },
                age(),
            ],
            &["type"],
            schema_of::<Secret>(),
        ));
        resources.push(builtin(
            "",
            "v1",
            "Event",
            "events",
            "event",
            true,
            &["ev"],
            false,
            event_columns(true),
            &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            schema_of::<Event>(),
        ));
        // Pods run as Corral tasks (`corral_api::pods`, the pod controller).
        resources.push(builtin(
            "",
            "v1",
            "Pod",
            "pods",
            "pod",
            true,
            &["po"],
            true,
            vec![
                path_col("Status", "string", ".status.phase"),
                path_col(
                    "Restarts",
                    "integer",
                    ".status.containerStatuses[0].restartCount",
                ),
                age(),
                Column {
                    priority: 1,
                    ..path_col("IP", "string", ".status.podIP")
                },
                Column {
                    priority: 1,
                    ..path_col("Node", "string", ".spec.nodeName")
                },
            ],
            &["spec.nodeName", "status.phase"],
            schema_of::<Pod>(),
        ));
        // Never made (admission refuses them), served so that clients that
        // clean up after themselves find none to delete.
        resources.push(builtin(
            "",
            "v1",
            "Service",
            "services",
            "service",
            true,
            &["svc"],
            true,
            vec![path_col("Type", "string", ".spec.type"), age()],
            &[],
            schema_of::<Service>(),
        ));
        resources.push(builtin(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            "persistentvolumeclaim",
            true,
            &["pvc"],
            true,
            vec![path_col("Status", "string", ".status.phase"), age()],
            &[],
            schema_of::<PersistentVolumeClaim>(),
        ));
        resources.push(builtin(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            "lease",
            true,
            &[],
            false,
            vec![path_col("Holder", "string", ".spec.holderIdentity"), age()],
            &[],
            schema_of::<Lease>(),
        ));
        resources.push(builtin(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            "endpointslice",
            true,
            &[],
            false,
            vec![
                path_col("AddressType", "string", ".addressType"),
                Column {
                    name: "Ports".into(),
                    type_: "string".into(),
                    priority: 0,
                    source: CellSource::SlicePorts,
                },
                Column {
                    name: "Endpoints".into(),
                    type_: "string".into(),
                    priority: 0,
                    source: CellSource::SliceEndpoints,
                },
                age(),
            ],
            &[],
            schema_of::<EndpointSlice>(),
        ));
        resources.extend(rbac_kinds());
        let resources: Vec<Arc<ResourceDesc>> = resources.into_iter().map(Arc::new).collect();
        let core_events = resources
            .iter()
            .find(|r| r.group.is_empty() && r.kind == "Event")
            .cloned()
            .expect("core events are registered above");
        Catalog {
            resources: resources.into(),
            views: vec![Arc::new(crate::kinds::events_v1::resource(core_events))].into(),
        }
    }

    /// Every stored resource, in registration order (views excluded: their
    /// objects are their stored kind's).
    pub fn all(&self) -> &[Arc<ResourceDesc>] {
        &self.resources
    }

    /// Every resource served: the stored ones, then the views.
    pub fn served(&self) -> impl Iterator<Item = &Arc<ResourceDesc>> {
        self.resources.iter().chain(self.views.iter())
    }

    /// The resource at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDesc>> {
        self.served()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    /// The resource of `apiVersion` + `kind`.
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceDesc>> {
        self.served()
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .cloned()
    }

    /// The groups served, in order (core is reported separately at `/api`).
    pub fn groups(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for r in self.served() {
            if !r.group.is_empty() && !out.contains(&r.group) {
                out.push(r.group);
            }
        }
        out
    }
}
