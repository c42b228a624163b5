//! Label selectors (the full Kubernetes syntax) and field selectors.
//!
//! Label: `app=web,tier!=db,env in (prod,staging),!legacy,release,size>3`.
//! Field: `metadata.name=t4,status.phase!=RUNNING` over the paths a kind
//! declares selectable.

use std::collections::BTreeMap;

use serde_json::Value;

/// A malformed selector, with kube-apiserver's wording where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// How one label requirement compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelOp {
    /// `k=v`, `k==v`, `k in (v…)`.
    In(Vec<String>),
    /// `k!=v`, `k notin (v…)`: also true when the label is absent.
    NotIn(Vec<String>),
    /// `k`.
    Exists,
    /// `!k`.
    DoesNotExist,
    /// `k>n`.
    Gt(i64),
    /// `k<n`.
    Lt(i64),
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    /// The label key.
    pub key: String,
    /// The comparison.
    pub op: LabelOp,
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

fn valid_key(k: &str) -> bool {
    let name = k.rsplit_once('/').map(|(_, n)| n).unwrap_or(k);
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, SelectorError> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SelectorError(format!(
                        "unable to parse requirement: unbalanced ')' in {s:?}"
                    )));
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError(format!(
            "unable to parse requirement: unbalanced '(' in {s:?}"
        )));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            SelectorError(format!(
                "unable to parse requirement: found '{rest}', expected: '(' in {whole:?}"
            ))
        })?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
    for v in &values {
        if !valid_value(v) {
            return Err(SelectorError(format!(
                "unable to parse requirement: invalid label value: {v:?}"
            )));
        }
    }
    Ok(values)
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for part in split_top(s)? {
            let p = part.trim();
            if p.is_empty() {
                return Err(SelectorError(format!(
                    "unable to parse requirement: empty requirement in {s:?}"
                )));
            }
            let req = if let Some(k) = p.strip_prefix('!') {
                LabelRequirement {
                    key: k.trim().to_owned(),
                    op: LabelOp::DoesNotExist,
                }
            } else if let Some((k, v)) = p.split_once("!=") {
                LabelRequirement {
                    key: k.trim().to_owned(),
                    op: LabelOp::NotIn(vec![v.trim().to_owned()]),
                }
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                LabelRequirement {
                    key: k.trim().to_owned(),
                    op: LabelOp::In(vec![v.trim().to_owned()]),
                }
            } else if let Some((k, v)) = p.split_once('>') {
                let n = v.trim().parse().map_err(|_| {
                    SelectorError(format!(
                        "unable to parse requirement: {v:?} is not an integer"
                    ))
                })?;
                LabelRequirement {
                    key: k.trim().to_owned(),
                    op: LabelOp::Gt(n),
                }
            } else if let Some((k, v)) = p.split_once('<') {
                let n = v.trim().parse().map_err(|_| {
                    SelectorError(format!(
                        "unable to parse requirement: {v:?} is not an integer"
                    ))
                })?;
                LabelRequirement {
                    key: k.trim().to_owned(),
                    op: LabelOp::Lt(n),
                }
            } else {
                let mut words = p.splitn(2, char::is_whitespace);
                let key = words.next().unwrap_or_default().trim().to_owned();
                let rest = words.next().unwrap_or_default().trim();
                if rest.is_empty() {
                    LabelRequirement {
                        key,
                        op: LabelOp::Exists,
                    }
                } else if let Some(set) = rest.strip_prefix("notin") {
                    LabelRequirement {
                        key,
                        op: LabelOp::NotIn(parse_set(set, s)?),
                    }
                } else if let Some(set) = rest.strip_prefix("in") {
                    LabelRequirement {
                        key,
                        op: LabelOp::In(parse_set(set, s)?),
                    }
                } else {
                    return Err(SelectorError(format!(
                        "unable to parse requirement: found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
                    )));
                }
            };
            if !valid_key(&req.key) {
                return Err(SelectorError(format!(
                    "unable to parse requirement: invalid label key {:?}",
                    req.key
                )));
            }
            if let LabelOp::In(v) | LabelOp::NotIn(v) = &req.op
                && let Some(bad) = v.iter().find(|v| !valid_value(v))
            {
                return Err(SelectorError(format!(
                    "unable to parse requirement: invalid label value: {bad:?}"
                )));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// True when every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| {
            let v = labels.get(&r.key);
            match &r.op {
                LabelOp::In(set) => v.is_some_and(|v| set.contains(v)),
                LabelOp::NotIn(set) => v.is_none_or(|v| !set.contains(v)),
                LabelOp::Exists => v.is_some(),
                LabelOp::DoesNotExist => v.is_none(),
                LabelOp::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x > *n),
                LabelOp::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x < *n),
            }
        })
    }
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    /// `metadata.name`, `spec.nodeName`.
    pub field: String,
    /// `=`/`==` (true) or `!=` (false).
    pub equal: bool,
    /// The value compared with.
    pub value: String,
}

/// A parsed field selector: every term must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldTerm>);

impl FieldSelector {
    /// Parses the `fieldSelector` parameter, accepting only `allowed` fields
    /// (plus `metadata.name` and `metadata.namespace`).
    pub fn parse(s: &str, allowed: &[String]) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(terms));
        }
        for part in s.split(',') {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !allowed.iter().any(|a| a == field)
            {
                return Err(SelectorError(format!("field label not supported: {field}")));
            }
            terms.push(FieldTerm {
                field: field.to_owned(),
                equal,
                value: value.trim().to_owned(),
            });
        }
        Ok(FieldSelector(terms))
    }

    /// The value an equality term requires of `field`, if any (for indexes).
    pub fn required(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|t| t.equal && t.field == field)
            .map(|t| t.value.as_str())
    }

    /// True when every term holds for `obj` (an absent field reads as "").
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|t| {
            let actual = field_value(obj, &t.field);
            (actual == t.value) == t.equal
        })
    }
}

/// The text of a dotted field in an object ("" when absent).
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_in_full_syntax() {
        let l = labels(&[("app", "web"), ("env", "prod"), ("size", "5")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("env in (prod,staging)", true),
            ("env in (dev)", false),
            ("env notin (dev, test)", true),
            ("app,env", true),
            ("!legacy", true),
            ("!app", false),
            ("size>3", true),
            ("size<3", false),
            ("app=web,env in (prod),!legacy,size>4", true),
            ("app=web,env=dev", false),
        ];
        for (s, want) in cases {
            let sel = LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(sel.matches(&l), want, "{s}");
        }
    }

    #[test]
    fn malformed_label_selectors_are_errors() {
        for s in [
            "a b c",
            "env in prod",
            "env in (a",
            "=x",
            "size>x",
            "app=we b",
            ",",
            "Bad Key=1",
        ] {
            assert!(LabelSelector::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn field_selectors_allow_only_declared_fields() {
        let allowed = vec!["spec.nodeName".to_string()];
        let sel =
            FieldSelector::parse("metadata.name=t4,spec.nodeName!=n2", &allowed).expect("valid");
        let obj = serde_json::json!({"metadata": {"name": "t4"}, "spec": {"nodeName": "n1"}});
        assert!(sel.matches(&obj));
        assert_eq!(sel.required("metadata.name"), Some("t4"));
        let err = FieldSelector::parse("foo=bar", &allowed).expect_err("unsupported");
        assert_eq!(err.0, "field label not supported: foo");
        let unbound = FieldSelector::parse("spec.nodeName=", &allowed).expect("empty value");
        assert!(unbound.matches(&serde_json::json!({"spec": {}})));
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = LabelSelector::parse(&s);
            let _ = FieldSelector::parse(&s, &[]);
        }
    }
}
