//! From a request's query string to what the verbs take: percent-decoded
//! parameters, the options of a write (checked as kube-apiserver checks
//! Create/Update/PatchOptions) and of a list, and the request's deadline.

use std::time::Duration;

use http::{Method, header};

use crate::error::ApiError;
use corral_api::validation::{FieldError, FieldErrorType};

use crate::kinds::catalog::ResourceDesc;
use crate::storage::admission::FieldValidation;
use crate::storage::registry::{ListQuery, WriteOptions};
use crate::storage::selectors::{FieldSelector, LabelSelector};

/// Percent-decodes a query component (`+` is a space).
fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query parameters of a request.
#[derive(Debug, Clone, Default)]
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(q: Option<&str>) -> Self {
        Query(
            q.unwrap_or_default()
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (decode_component(k), decode_component(v)),
                    None => (decode_component(p), String::new()),
                })
                .collect(),
        )
    }

    pub(super) fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter that is true (Go's `strconv.ParseBool` spellings,
    /// as kube-apiserver reads them); absent or anything else is false.
    pub(super) fn flag(&self, k: &str) -> bool {
        matches!(self.get(k).map(parse_bool), Some(Some(true)))
    }

    /// A boolean parameter that may be absent; a value that is no boolean
    /// is a 400, as kube-apiserver's decoding of its options answers.
    pub(super) fn optional_bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        self.get(k)
            .map(|v| {
                parse_bool(v).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "invalid value {v:?} for {k}: expected true or false"
                    ))
                })
            })
            .transpose()
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The `resourceVersionMatch` parameter and its values.
const MATCH: &str = "resourceVersionMatch";
const EXACT: &str = "Exact";
const NOT_OLDER_THAN: &str = "NotOlderThan";

/// The longest field manager name kube-apiserver takes.
const MAX_FIELD_MANAGER_BYTES: usize = 128;

/// A write's options from its query, checked as kube-apiserver checks
/// Create/Update/PatchOptions (422 naming the option). Without a
/// `fieldManager`, a non-apply write is recorded under the first word of the
/// client's User-Agent, as kube-apiserver does (`kube-rs/2.0` → `kube-rs`).
pub(super) fn write_options(
    q: &Query,
    method: &Method,
    headers: &http::HeaderMap,
) -> Result<WriteOptions, ApiError> {
    let options_kind = match *method {
        Method::POST => "CreateOptions.meta.k8s.io",
        Method::PUT => "UpdateOptions.meta.k8s.io",
        _ => "PatchOptions.meta.k8s.io",
    };
    let mut errors = Vec::new();
    let dry_run = match q.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            errors.push(FieldError {
                type_: FieldErrorType::NotSupported,
                field: "dryRun".into(),
                value: Some(format!("{other:?}")),
                detail: "supported values: \"All\"".into(),
            });
            false
        }
    };
    let field_manager = q.get("fieldManager").map(str::to_owned);
    if let Some(m) = &field_manager {
        if m.len() > MAX_FIELD_MANAGER_BYTES {
            errors.push(FieldError {
                type_: FieldErrorType::TooLong,
                field: "fieldManager".into(),
                value: None,
                detail: format!("may not be more than {MAX_FIELD_MANAGER_BYTES} bytes"),
            });
        } else if m.chars().any(char::is_control) {
            errors.push(FieldError {
                type_: FieldErrorType::Invalid,
                field: "fieldManager".into(),
                value: Some(format!("{m:?}")),
                detail: "must only contain printable characters".into(),
            });
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid {
            kind: options_kind.into(),
            name: String::new(),
            errors,
        });
    }
    let agent_manager = headers
        .get(header::USER_AGENT)
        .and_then(|v| manager_from_user_agent(v.as_bytes()));
    Ok(WriteOptions {
        dry_run,
        field_manager,
        agent_manager,
        field_validation: FieldValidation::parse(q.get("fieldValidation"))?,
        force: q.flag("force"),
        requester: None,
        binding: false,
    })
}

/// The manager a write without `fieldManager` is recorded under, as
/// kube-apiserver derives it: the User-Agent up to its first `/`, without
/// control characters, cut to whole characters within 128 bytes.
fn manager_from_user_agent(user_agent: &[u8]) -> Option<String> {
    let agent = String::from_utf8_lossy(user_agent);
    let mut manager = String::new();
    for c in agent.split('/').next()?.chars().filter(|c| !c.is_control()) {
        if manager.len() + c.len_utf8() > MAX_FIELD_MANAGER_BYTES {
            break;
        }
        manager.push(c);
    }
    (!manager.trim().is_empty()).then_some(manager)
}

/// A list's or a watch's options, checked as kube-apiserver's
/// `ValidateListOptions` checks them with streaming lists on: every problem
/// is one cause of a 422.
pub(super) fn list_query(q: &Query, desc: &ResourceDesc) -> Result<ListQuery, ApiError> {
    let version = q.get("resourceVersion").filter(|r| !r.is_empty());
    let version_match = q.get("resourceVersionMatch").filter(|m| !m.is_empty());
    let continued = q.get("continue").is_some_and(|c| !c.is_empty());
    let send_initial = q.optional_bool("sendInitialEvents")?;
    let forbidden = |field: &str, detail: &str| FieldError {
        type_: FieldErrorType::Forbidden,
        field: field.into(),
        value: None,
        detail: detail.into(),
    };
    let not_supported = |value: &str, supported: &str| FieldError {
        type_: FieldErrorType::NotSupported,
        field: MATCH.into(),
        value: Some(format!("{value:?}")),
        detail: format!("supported values: {supported}"),
    };
    let watch = q.flag("watch");
    let mut errors = Vec::new();
    if watch {
        if send_initial.is_some() && version_match != Some(NOT_OLDER_THAN) {
            errors.push(forbidden(
                MATCH,
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if let Some(m) = version_match {
            if send_initial.is_none() {
                errors.push(forbidden(
                    MATCH,
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            if m != NOT_OLDER_THAN {
                errors.push(not_supported(m, "\"NotOlderThan\""));
            }
            if continued {
                errors.push(forbidden(
                    MATCH,
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
        }
    } else {
        if let Some(m) = version_match {
            if version.is_none() {
                errors.push(forbidden(
                    MATCH,
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if continued {
                errors.push(forbidden(
                    MATCH,
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if !matches!(m, EXACT | NOT_OLDER_THAN) {
                errors.push(not_supported(m, "\"Exact\", \"NotOlderThan\", \"\""));
            }
            if m == EXACT && version == Some("0") {
                errors.push(forbidden(
                    MATCH,
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if send_initial.is_some() {
            errors.push(forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid {
            kind: "ListOptions.meta.k8s.io".into(),
            name: String::new(),
            errors,
        });
    }
    let exact = !watch && version_match == Some(EXACT);
    Ok(ListQuery {
        labels: LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::BadRequest(e.0))?,
        fields: FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), &desc.selectable)
            .map_err(|e| ApiError::BadRequest(e.0))?,
        limit: match q.get("limit") {
            None | Some("") => 0,
            Some(l) => l
                .parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid limit {l:?}")))?,
        },
        continue_token: q
            .get("continue")
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        resource_version: q.get("resourceVersion").map(str::to_owned),
        exact,
    })
}

/// A watch's `timeoutSeconds`: when the server ends the stream. Absent or 0
/// leaves it open (kube-apiserver then picks its own, long, timeout); a
/// value that is no count of seconds is a 400.
pub(super) fn watch_timeout(q: &Query) -> Result<Option<Duration>, ApiError> {
    match q.get("timeoutSeconds") {
        None | Some("") => Ok(None),
        Some(s) => match s.parse::<u64>() {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(Duration::from_secs(n))),
            Err(_) => Err(ApiError::BadRequest(format!(
                "invalid value {s:?} for timeoutSeconds: expected a number of seconds"
            ))),
        },
    }
}

/// Parses a Go duration (`32s`, `1m0s`, `1.5h`, `300ms`), as clients write
/// the `timeout` parameter and kube-apiserver's flags take it.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// How long the server works on a request: its `timeout` parameter when
/// shorter than the server's `cap`, else the cap (as kube-apiserver's
/// `--request-timeout`). A malformed `timeout` is a 400.
pub(super) fn deadline(q: &Query, cap: Duration) -> Result<Duration, ApiError> {
    match q.get("timeout") {
        None | Some("") => Ok(cap),
        Some(t) => match parse_go_duration(t) {
            Some(d) if d > Duration::ZERO => Ok(d.min(cap)),
            _ => Err(ApiError::BadRequest(format!(
                "invalid timeout specified in the request URL: {t:?}"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_percent_decoded() {
        let q = Query::parse(Some(
            "labelSelector=env%20in%20(a%2Cb)&fieldSelector=metadata.name%3Dt4&watch=true&x=%zz&y=50%",
        ));
        assert_eq!(q.get("labelSelector"), Some("env in (a,b)"));
        assert_eq!(q.get("fieldSelector"), Some("metadata.name=t4"));
        assert!(q.flag("watch"));
        assert_eq!(q.get("x"), Some("%zz"));
        assert_eq!(q.get("y"), Some("50%"));
    }

    /// The causes of a list's or a watch's options, as kube-apiserver's
    /// `ValidateListOptions` table has them (streaming lists on).
    fn option_causes(query: &str) -> Vec<String> {
        let registry = crate::kinds::catalog::Catalog::standard();
        let Some(desc) = registry.find("corral.dev", "v1alpha1", "tasks") else {
            return vec!["no tasks resource".into()];
        };
        match list_query(&Query::parse(Some(query)), &desc) {
            Ok(_) => Vec::new(),
            Err(ApiError::Invalid { errors, .. }) => errors
                .iter()
                .map(|e| format!("{}: {:?}: {}", e.field, e.type_, e.detail))
                .collect(),
            Err(e) => vec![format!("not a 422: {e}")],
        }
    }

    #[test]
    fn list_and_watch_options_are_checked_as_kube_apiserver_checks_them() {
        let ok: &[&str] = &[
            "",
            "resourceVersion=5&resourceVersionMatch=NotOlderThan",
            "resourceVersion=5&resourceVersionMatch=Exact",
            "watch=true",
            "watch=1&resourceVersion=7",
            // Streaming lists, as client-go's reflector and kube-rs send them.
            "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
            "watch=true&timeoutSeconds=290&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0",
            "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=12",
            // A watch from now.
            "watch=true&sendInitialEvents=false&resourceVersionMatch=NotOlderThan",
        ];
        for q in ok {
            assert_eq!(option_causes(q), Vec::<String>::new(), "{q}");
        }
        let bad: &[(&str, &[&str])] = &[
            (
                "resourceVersionMatch=Exact",
                &[
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                ],
            ),
            (
                "resourceVersionMatch=Exact&resourceVersion=0",
                &[
                    "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ],
            ),
            (
                "resourceVersionMatch=Sometime&continue=abc",
                &[
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided",
                    "resourceVersionMatch: NotSupported: supported values: \"Exact\", \"NotOlderThan\", \"\"",
                ],
            ),
            (
                "sendInitialEvents=true",
                &["sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"],
            ),
            (
                "watch=true&resourceVersionMatch=NotOlderThan",
                &[
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ],
            ),
            (
                "watch=true&sendInitialEvents=true",
                &[
                    "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ],
            ),
            (
                "watch=true&sendInitialEvents=true&resourceVersionMatch=Exact&resourceVersion=3",
                &[
                    "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    "resourceVersionMatch: NotSupported: supported values: \"NotOlderThan\"",
                ],
            ),
            (
                "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&continue=abc",
                &[
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided",
                ],
            ),
        ];
        for (q, want) in bad {
            assert_eq!(option_causes(q), *want, "{q}");
        }
        assert_eq!(
            option_causes("watch=true&sendInitialEvents=sure&resourceVersionMatch=NotOlderThan"),
            vec![
                "not a 422: invalid value \"sure\" for sendInitialEvents: expected true or false"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn user_agents_name_managers_within_the_manager_limit() {
        let m = |ua: &[u8]| manager_from_user_agent(ua);
        assert_eq!(
            m(b"kubectl/v1.32.3 (linux/amd64)").as_deref(),
            Some("kubectl")
        );
        assert_eq!(m(b"night\teditor/1.0").as_deref(), Some("nighteditor"));
        assert_eq!(m(b"/1.0"), None);
        assert_eq!(m(b"   "), None);
        // 127 ASCII bytes and a two-byte character: the character does not fit.
        let long = format!("{}é/1.0", "a".repeat(127));
        assert_eq!(m(long.as_bytes()), Some("a".repeat(127)));
        let wide = "é".repeat(100);
        let cut = m(wide.as_bytes()).unwrap_or_default();
        assert_eq!((cut.len(), cut.chars().count()), (128, 64));
    }

    #[test]
    fn watch_timeouts_of_zero_leave_the_stream_open() {
        let t = |q: &str| watch_timeout(&Query::parse(Some(q)));
        assert_eq!(t("").ok(), Some(None));
        assert_eq!(t("timeoutSeconds=0").ok(), Some(None));
        assert_eq!(
            t("timeoutSeconds=290").ok(),
            Some(Some(Duration::from_secs(290)))
        );
        for bad in [
            "timeoutSeconds=-1",
            "timeoutSeconds=soon",
            "timeoutSeconds=1.5",
        ] {
            assert!(matches!(t(bad), Err(ApiError::BadRequest(_))), "{bad}");
        }
    }

    #[test]
    fn booleans_are_read_as_go_reads_them() {
        let q = Query::parse(Some("a=True&b=t&c=0&d=F&e=yes"));
        assert!(q.flag("a") && q.flag("b"));
        assert!(!q.flag("c") && !q.flag("d") && !q.flag("e") && !q.flag("absent"));
        assert_eq!(q.optional_bool("c").ok(), Some(Some(false)));
        assert_eq!(q.optional_bool("absent").ok(), Some(None));
        assert!(matches!(q.optional_bool("e"), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn go_durations_and_request_deadlines() {
        for (text, want) in [
            ("32s", Some(32.0)),
            ("1m0s", Some(60.0)),
            ("1.5h", Some(5400.0)),
            ("300ms", Some(0.3)),
            ("1h2m3s", Some(3723.0)),
            ("0", Some(0.0)),
            ("", None),
            ("10", None),
            ("s", None),
            ("5 s", None),
            ("-1s", None),
            ("1d", None),
        ] {
            assert_eq!(
                parse_go_duration(text).map(|d| d.as_secs_f64()),
                want,
                "{text:?}"
            );
        }
        let cap = Duration::from_secs(60);
        let at = |q: &str| deadline(&Query::parse(Some(q)), cap);
        assert_eq!(at("").ok(), Some(cap));
        assert_eq!(at("timeout=32s").ok(), Some(Duration::from_secs(32)));
        assert_eq!(at("timeout=10m").ok(), Some(cap), "never past the cap");
        for bad in ["timeout=soon", "timeout=0s", "timeout=-5s"] {
            assert!(matches!(at(bad), Err(ApiError::BadRequest(_))), "{bad}");
        }
    }
}
