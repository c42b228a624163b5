//! Merge patches that make a stored value equal to a wanted one.
//!
//! A JSON merge patch (RFC 7386) sets the members it names and leaves the
//! others: written whole, a value that lost a member since (an optional
//! field now absent) would keep the old one. [`to`] names the members to
//! remove as `null`, so the patched value is exactly the wanted one.

use serde_json::{Map, Value};

/// The merge patch that turns `old` into `new` (objects member by member,
/// anything else replaced whole).
pub fn to(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out: Map<String, Value> = n
                .iter()
                .map(|(k, v)| {
                    let patched = match o.get(k) {
                        Some(was) => to(was, v),
                        None => v.clone(),
                    };
                    (k.clone(), patched)
                })
                .collect();
            for k in o.keys() {
                if !n.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::to;

    /// RFC 7386's application, to check what [`to`] makes.
    fn apply(target: &mut serde_json::Value, patch: &serde_json::Value) {
        match (target.as_object_mut(), patch.as_object()) {
            (Some(t), Some(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        apply(t.entry(k.clone()).or_insert(json!({})), v);
                    }
                }
            }
            _ => *target = patch.clone(),
        }
    }

    #[test]
    fn the_patched_value_is_exactly_the_wanted_one() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "gone": {"x": 1}});
        let new = json!({"a": 1, "b": {"c": 5}, "e": [3], "f": "new"});
        let patch = to(&old, &new);
        assert_eq!(patch["gone"], json!(null));
        assert_eq!(patch["b"]["d"], json!(null));
        let mut patched = old.clone();
        apply(&mut patched, &patch);
        assert_eq!(patched, new);
        // Nothing stored yet: the wanted value itself.
        assert_eq!(to(&json!(null), &new), new);
    }
}
