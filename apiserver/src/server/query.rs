//! From a request's query string to what the verbs take: percent-decoded
//! parameters, the options of a write (checked as kube-apiserver checks
//! Create/Update/PatchOptions) and of a list, and the request's deadline.

use std::time::Duration;

use http::{Method, header};

use super::ApiError;
use corral_api::validation::{FieldError, FieldErrorType};

use crate::admission::FieldValidation;
use crate::registry::ResourceDesc;
use crate::rest::{ListQuery, WriteOptions};
use crate::selectors::{FieldSelector, LabelSelector};

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
#[derive(Debug, Default)]
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

    pub(super) fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true") | Some("1"))
    }
}

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
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .map(|m| {
            m.chars()
                .filter(|c| !c.is_control())
                .take(MAX_FIELD_MANAGER_BYTES)
                .collect::<String>()
        })
        .filter(|m| !m.trim().is_empty());
    Ok(WriteOptions {
        dry_run,
        field_manager,
        agent_manager,
        field_validation: FieldValidation::parse(q.get("fieldValidation"))?,
        force: q.flag("force"),
    })
}

pub(super) fn list_query(q: &Query, desc: &ResourceDesc) -> Result<ListQuery, ApiError> {
    let resource_version = q.get("resourceVersion").filter(|r| !r.is_empty());
    let exact = match (
        q.get("resourceVersionMatch").filter(|m| !m.is_empty()),
        resource_version,
    ) {
        (None, _) => false,
        (Some(m), _) if !matches!(m, "Exact" | "NotOlderThan") => {
            return Err(invalid_list_options(
                FieldErrorType::NotSupported,
                Some(format!("{m:?}")),
                "supported values: \"Exact\", \"NotOlderThan\"".into(),
            ));
        }
        (Some(_), None) => {
            return Err(invalid_list_options(
                FieldErrorType::Forbidden,
                None,
                "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
            ));
        }
        (Some(_), Some(_)) if q.flag("watch") => {
            return Err(invalid_list_options(
                FieldErrorType::Forbidden,
                None,
                "resourceVersionMatch is forbidden for watch".into(),
            ));
        }
        (Some(_), Some(_)) if q.get("continue").is_some_and(|c| !c.is_empty()) => {
            return Err(invalid_list_options(
                FieldErrorType::Forbidden,
                None,
                "resourceVersionMatch is forbidden when continue is provided".into(),
            ));
        }
        (Some("Exact"), Some("0")) => {
            return Err(invalid_list_options(
                FieldErrorType::Forbidden,
                None,
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"".into(),
            ));
        }
        (Some(m), Some(_)) => m == "Exact",
    };
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

fn invalid_list_options(type_: FieldErrorType, value: Option<String>, detail: String) -> ApiError {
    ApiError::Invalid {
        kind: "ListOptions.meta.k8s.io".into(),
        name: String::new(),
        errors: vec![FieldError {
            type_,
            field: "resourceVersionMatch".into(),
            value,
            detail,
        }],
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
