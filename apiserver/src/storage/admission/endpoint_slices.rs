//! EndpointSlice rules (`discovery.k8s.io/v1`), as kube-apiserver checks
//! them: an `addressType` of `IPv4`, `IPv6` or `FQDN`, fixed for the slice's
//! life; at most 1,000 endpoints, each with 1 to 100 addresses of that
//! type; ports with unique names (empty or a port name), numbers 1–65535
//! and protocol `TCP`, `UDP` or `SCTP`.

use corral_api::validation::{FieldError, FieldErrorType, is_dns1123_subdomain};
use serde_json::Value;

/// The most endpoints one slice holds.
const MAX_ENDPOINTS: usize = 1000;
/// The most addresses one endpoint has.
const MAX_ADDRESSES: usize = 100;
/// The most ports one slice names.
const MAX_PORTS: usize = 20_000;

fn error(type_: FieldErrorType, field: String, value: Option<String>, detail: &str) -> FieldError {
    FieldError {
        type_,
        field,
        value,
        detail: detail.into(),
    }
}

fn address_ok(kind: &str, a: &str) -> bool {
    match kind {
        "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
        "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
        _ => is_dns1123_subdomain(a),
    }
}

/// The problems of a write of EndpointSlice `obj` (over `old`, on update).
pub(super) fn validate(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let kind = obj["addressType"].as_str().unwrap_or_default();
    match kind {
        "" => errors.push(error(
            FieldErrorType::Required,
            "addressType".into(),
            None,
            "",
        )),
        "IPv4" | "IPv6" | "FQDN" => {}
        other => errors.push(error(
            FieldErrorType::NotSupported,
            "addressType".into(),
            Some(format!("{other:?}")),
            "supported values: \"FQDN\", \"IPv4\", \"IPv6\"",
        )),
    }
    if let Some(old) = old
        && old["addressType"] != obj["addressType"]
    {
        errors.push(error(
            FieldErrorType::Invalid,
            "addressType".into(),
            Some(obj["addressType"].to_string()),
            "field is immutable",
        ));
    }
    let endpoints = obj["endpoints"].as_array().map_or(&[][..], Vec::as_slice);
    if endpoints.len() > MAX_ENDPOINTS {
        errors.push(error(
            FieldErrorType::TooMany,
            "endpoints".into(),
            Some(endpoints.len().to_string()),
            &format!("must have at most {MAX_ENDPOINTS} items"),
        ));
    }
    for (i, e) in endpoints.iter().enumerate() {
        let addresses = e["addresses"].as_array().map_or(&[][..], Vec::as_slice);
        let at = format!("endpoints[{i}].addresses");
        if addresses.is_empty() || addresses.len() > MAX_ADDRESSES {
            errors.push(error(
                FieldErrorType::Invalid,
                at.clone(),
                Some(addresses.len().to_string()),
                &format!("must contain between 1 and {MAX_ADDRESSES} addresses"),
            ));
        }
        for (j, a) in addresses.iter().enumerate() {
            let a = a.as_str().unwrap_or_default();
            if !kind.is_empty() && !address_ok(kind, a) {
                errors.push(error(
                    FieldErrorType::Invalid,
                    format!("{at}[{j}]"),
                    Some(format!("{a:?}")),
                    &format!("must be a valid {kind} address"),
                ));
            }
        }
    }
    let ports = obj["ports"].as_array().map_or(&[][..], Vec::as_slice);
    if ports.len() > MAX_PORTS {
        errors.push(error(
            FieldErrorType::TooMany,
            "ports".into(),
            Some(ports.len().to_string()),
            &format!("must have at most {MAX_PORTS} items"),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let name = p["name"].as_str().unwrap_or_default();
        if !name.is_empty() && !corral_api::ports::is_port_name(name) {
            errors.push(error(
                FieldErrorType::Invalid,
                format!("ports[{i}].name"),
                Some(format!("{name:?}")),
                "a port name is at most 15 lower-case letters, digits and '-'",
            ));
        } else if !names.insert(name) {
            errors.push(error(
                FieldErrorType::Duplicate,
                format!("ports[{i}].name"),
                Some(format!("{name:?}")),
                "",
            ));
        }
        if let Some(n) = p["port"].as_i64()
            && !(1..=65535).contains(&n)
        {
            errors.push(error(
                FieldErrorType::Invalid,
                format!("ports[{i}].port"),
                Some(n.to_string()),
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(proto) = p["protocol"].as_str()
            && !["TCP", "UDP", "SCTP"].contains(&proto)
        {
            errors.push(error(
                FieldErrorType::NotSupported,
                format!("ports[{i}].protocol"),
                Some(format!("{proto:?}")),
                "supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn slice() -> Value {
        json!({"addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.7"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 31000, "protocol": "TCP"}]})
    }

    #[test]
    fn each_rule_names_its_field() {
        assert_eq!(validate(&slice(), None), vec![]);
        type Edit = fn(&mut Value);
        let cases: &[(Edit, &str, FieldErrorType)] = &[
            (
                |v| v["addressType"] = json!(null),
                "addressType",
                FieldErrorType::Required,
            ),
            (
                |v| v["addressType"] = json!("IPX"),
                "addressType",
                FieldErrorType::NotSupported,
            ),
            (
                |v| v["endpoints"][0]["addresses"] = json!([]),
                "endpoints[0].addresses",
                FieldErrorType::Invalid,
            ),
            (
                |v| v["endpoints"][0]["addresses"] = json!(["web.local"]),
                "endpoints[0].addresses[0]",
                FieldErrorType::Invalid,
            ),
            (
                |v| v["ports"][0]["port"] = json!(0),
                "ports[0].port",
                FieldErrorType::Invalid,
            ),
            (
                |v| v["ports"][0]["name"] = json!("HTTP"),
                "ports[0].name",
                FieldErrorType::Invalid,
            ),
            (
                |v| v["ports"] = json!([{"name": "a", "port": 1}, {"name": "a", "port": 2}]),
                "ports[1].name",
                FieldErrorType::Duplicate,
            ),
            (
                |v| v["ports"][0]["protocol"] = json!("QUIC"),
                "ports[0].protocol",
                FieldErrorType::NotSupported,
            ),
        ];
        for (edit, field, type_) in cases {
            let mut v = slice();
            edit(&mut v);
            let errs = validate(&v, None);
            assert_eq!(
                errs.iter()
                    .map(|e| (e.field.as_str(), e.type_))
                    .collect::<Vec<_>>(),
                vec![(*field, *type_)],
                "{v}"
            );
        }
        let mut fqdn = slice();
        fqdn["addressType"] = json!("FQDN");
        fqdn["endpoints"][0]["addresses"] = json!(["web.local"]);
        assert_eq!(validate(&fqdn, None), vec![]);
        let errs = validate(&fqdn, Some(&slice()));
        assert_eq!(errs[0].field, "addressType");
        assert_eq!(errs[0].detail, "field is immutable");
    }
}
