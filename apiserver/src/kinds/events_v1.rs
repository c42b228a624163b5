//! events.k8s.io/v1 Event, served as a view of core/v1 Event as
//! kube-apiserver serves it: one stored object, two forms. An event written
//! through either API group is read through both, so what kube-runtime's
//! `Recorder` and client-go's events library write (events.k8s.io/v1) shows
//! in `kubectl describe` and `kubectl get events` (core/v1), and the other
//! way round.
//!
//! The forms differ in names only: `regarding` is `involvedObject`, `note`
//! is `message`, `reportingController` is `reportingComponent`, and the
//! `deprecated*` fields are core's `source`, `firstTimestamp`,
//! `lastTimestamp` and `count`. An event created through events.k8s.io/v1
//! follows that API's stricter rules (a time, a type of Normal or Warning,
//! a reporting controller and instance, an action and a reason, and none of
//! the deprecated fields), and keeps what it is about on update.

use std::sync::Arc;

use corral_api::validation::{FieldError, FieldErrorType, is_qualified_name};
use serde_json::{Map, Value, json};

use crate::kinds::catalog::{ResourceDesc, View, builtin, event_columns, schema_of};

/// The API version of the view.
const API_VERSION: &str = "events.k8s.io/v1";

/// Field names of the view and of the stored (core/v1) form, where they differ.
const RENAMED: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Fields both forms name alike.
const SHARED: [&str; 7] = [
    "metadata",
    "eventTime",
    "series",
    "reportingInstance",
    "action",
    "reason",
    "related",
];

/// The longest `note` a new event may carry, and the longest action,
/// reason and reporting instance (kube-apiserver's limits).
const NOTE_LIMIT: usize = 1024;
const SHORT_LIMIT: usize = 128;

/// The events.k8s.io/v1 Event resource over `core_events` (core/v1 Event).
pub fn resource(core_events: Arc<ResourceDesc>) -> ResourceDesc {
    let mut desc = builtin(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        "event",
        true,
        &["ev"],
        false,
        event_columns(false),
        &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        schema_of::<k8s_openapi::api::events::v1::Event>(),
    );
    desc.view = Some(View {
        storage: core_events,
        to_view,
        to_storage,
        stored_field,
        validate,
    });
    desc
}

/// Copies `obj`'s fields into a new object of `api_version`, renaming each
/// `(from, to)` pair.
fn convert(
    obj: Value,
    api_version: &str,
    renames: impl Iterator<Item = (&'static str, &'static str)>,
) -> Value {
    let Value::Object(mut from) = obj else {
        return obj;
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    for (a, b) in SHARED.iter().map(|f| (*f, *f)).chain(renames) {
        if let Some(v) = from.remove(a).filter(|v| !v.is_null()) {
            out.insert(b.into(), v);
        }
    }
    // `type` is not renamed but would read like one of the pairs above.
    if let Some(t) = from.remove("type").filter(|v| !v.is_null()) {
        out.insert("type".into(), t);
    }
    Value::Object(out)
}

/// A stored core/v1 Event in events.k8s.io/v1 form.
pub fn to_view(core: Value) -> Value {
    convert(
        core,
        API_VERSION,
        RENAMED.iter().map(|(view, core)| (*core, *view)),
    )
}

/// An events.k8s.io/v1 Event in its stored core/v1 form.
pub fn to_storage(view: Value) -> Value {
    convert(view, "v1", RENAMED.iter().copied())
}

/// A field selector's field, from the view's names to the stored ones.
fn stored_field(field: &str) -> String {
    if let Some(rest) = field.strip_prefix("regarding.") {
        return format!("involvedObject.{rest}");
    }
    match field {
        "reportingController" => "reportingComponent".into(),
        other => other.into(),
    }
}

fn error(type_: FieldErrorType, field: &str, value: Option<&Value>, detail: &str) -> FieldError {
    FieldError {
        type_,
        field: field.into(),
        value: value.map(Value::to_string),
        detail: detail.into(),
    }
}

/// The rules of a write through events.k8s.io/v1: on create, those of
/// kube-apiserver's `ValidateEventCreate` for that version; on update, what
/// the event is about and who reported it stay.
fn validate(event: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let text = |f: &str| event.get(f).and_then(Value::as_str).unwrap_or_default();
    if let Some(old) = old {
        for field in [
            "regarding",
            "related",
            "reason",
            "note",
            "type",
            "eventTime",
            "action",
            "reportingController",
            "reportingInstance",
        ] {
            if !same(event.get(field), old.get(field)) {
                errors.push(error(
                    FieldErrorType::Invalid,
                    field,
                    event.get(field),
                    "field is immutable",
                ));
            }
        }
        errors.extend(series_errors(event));
        return errors;
    }
    if event.get("eventTime").is_none_or(Value::is_null) {
        errors.push(error(FieldErrorType::Required, "eventTime", None, ""));
    }
    let type_ = text("type");
    if type_ != "Normal" && type_ != "Warning" {
        errors.push(error(
            FieldErrorType::Invalid,
            "type",
            Some(&json!(type_)),
            &format!("has invalid value: {type_}"),
        ));
    }
    for field in [
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedCount",
        "deprecatedSource",
    ] {
        let set = match event.get(field) {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => !o.is_empty(),
            Some(Value::Number(n)) => n.as_i64() != Some(0),
            Some(_) => true,
        };
        if set {
            errors.push(error(
                FieldErrorType::Invalid,
                field,
                None,
                "needs to be unset",
            ));
        }
    }
    let controller = text("reportingController");
    if controller.is_empty() {
        errors.push(error(
            FieldErrorType::Required,
            "reportingController",
            None,
            "",
        ));
    } else if !is_qualified_name(controller) {
        errors.push(error(
            FieldErrorType::Invalid,
            "reportingController",
            Some(&json!(controller)),
            "must be a qualified name (an optional DNS subdomain prefix and '/', then alphanumeric characters, '-', '_' or '.')",
        ));
    }
    for field in ["reportingInstance", "action", "reason"] {
        let value = text(field);
        if value.is_empty() {
            errors.push(error(FieldErrorType::Required, field, None, ""));
        } else if value.len() > SHORT_LIMIT {
            errors.push(error(
                FieldErrorType::Invalid,
                field,
                None,
                &format!("can have at most {SHORT_LIMIT} characters"),
            ));
        }
    }
    if text("note").len() > NOTE_LIMIT {
        errors.push(error(
            FieldErrorType::Invalid,
            "note",
            None,
            &format!("can have at most {NOTE_LIMIT} characters"),
        ));
    }
    errors.extend(series_errors(event));
    errors
}

/// Whether two values of a field are the same, times compared as instants
/// (clients write a MicroTime with or without trailing zeros).
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    let instant = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    a == b || instant(a).is_some_and(|t| Some(t) == instant(b))
}

/// A series counts at least two occurrences and says when it saw the last.
fn series_errors(event: &Value) -> Vec<FieldError> {
    let Some(series) = event.get("series").filter(|s| !s.is_null()) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let count = series.get("count").and_then(Value::as_i64).unwrap_or(0);
    if count < 2 {
        errors.push(error(
            FieldErrorType::Invalid,
            "series.count",
            Some(&json!(count)),
            "should be at least 2",
        ));
    }
    if series.get("lastObservedTime").is_none_or(Value::is_null) {
        errors.push(error(
            FieldErrorType::Required,
            "series.lastObservedTime",
            None,
            "",
        ));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    fn new_event() -> Value {
        json!({"apiVersion": API_VERSION, "kind": "Event",
               "metadata": {"name": "e1", "namespace": "default"},
               "eventTime": "2026-11-30T10:00:00.000000Z",
               "reportingController": "example.com/operator", "reportingInstance": "op-1",
               "action": "Reconcile", "reason": "Synced", "type": "Normal", "note": "all good",
               "regarding": {"kind": "Job", "name": "j", "namespace": "default"}})
    }

    #[test]
    fn the_two_forms_convert_both_ways() {
        let view = new_event();
        let core = to_storage(view.clone());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "j");
        assert_eq!(core["message"], "all good");
        assert_eq!(core["reportingComponent"], "example.com/operator");
        assert_eq!(core.get("note"), None);
        assert_eq!(to_view(core), view);
        // A legacy event reads with its deprecated fields.
        let legacy = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "old"},
            "involvedObject": {"name": "t"}, "message": "m", "count": 3,
            "source": {"component": "kubelet"}, "lastTimestamp": "2026-01-01T00:00:00Z",
            "type": "Warning"});
        let seen = to_view(legacy.clone());
        assert_eq!(seen["deprecatedCount"], 3);
        assert_eq!(seen["deprecatedSource"]["component"], "kubelet");
        assert_eq!(seen["regarding"]["name"], "t");
        assert_eq!(to_storage(seen), legacy);
    }

    #[test]
    fn field_selectors_use_the_stored_names() {
        assert_eq!(stored_field("regarding.name"), "involvedObject.name");
        assert_eq!(stored_field("reportingController"), "reportingComponent");
        assert_eq!(stored_field("reason"), "reason");
    }

    #[test]
    fn new_events_follow_the_v1_rules() {
        assert_eq!(fields(&validate(&new_event(), None)), Vec::<&str>::new());
        let mut bare = json!({"type": "Info", "deprecatedCount": 2, "note": "x".repeat(NOTE_LIMIT + 1),
                              "series": {"count": 1}});
        bare["reportingController"] = json!("not a name!");
        assert_eq!(
            fields(&validate(&bare, None)),
            [
                "eventTime",
                "type",
                "deprecatedCount",
                "reportingController",
                "reportingInstance",
                "action",
                "reason",
                "note",
                "series.count",
                "series.lastObservedTime"
            ]
        );
    }

    #[test]
    fn an_update_keeps_what_the_event_is_about() {
        let old = new_event();
        let mut next = old.clone();
        next["series"] = json!({"count": 2, "lastObservedTime": "2026-11-30T10:01:00.000000Z"});
        next["metadata"]["labels"] = json!({"a": "b"});
        next["eventTime"] = json!("2026-11-30T10:00:00Z");
        assert_eq!(fields(&validate(&next, Some(&old))), Vec::<&str>::new());
        next["regarding"]["name"] = json!("other");
        next["note"] = json!("changed");
        assert_eq!(fields(&validate(&next, Some(&old))), ["regarding", "note"]);
    }
}
