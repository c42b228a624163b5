//! Name grammars shared by the rules (DNS-1123 labels and subdomains, resource names).

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Dot-separated DNS-1123 labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A resource name: a DNS label (`cpus`, `gpus`), optionally prefixed by a domain
/// (`example.com/fpga`), like Kubernetes extended resources.
pub fn is_resource_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((domain, name)) => is_dns1123_subdomain(domain) && is_dns1123_label(name),
        None => is_dns1123_label(s),
    }
}

/// An attribute name or label key: an optional DNS prefix and a name of
/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
pub fn is_qualified_name(s: &str) -> bool {
    let name = match s.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns1123_subdomain(prefix) {
                return false;
            }
            name
        }
        None => s,
    };
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A label or attribute value: empty, or like a qualified name without prefix.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || (!s.contains('/') && is_qualified_name(s))
}

/// A C identifier for environment variable names (`[A-Za-z_][A-Za-z0-9_]*`), plus
/// the `.` and `-` Kubernetes tolerates.
pub(crate) fn is_env_var_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// What is wrong with a ConfigMap or Secret key (`[-._a-zA-Z0-9]+`, at most
/// 253 characters, not `.`, `..` or starting with `..`), in Kubernetes' words;
/// empty when it is a valid key.
pub fn config_key_problems(s: &str) -> Vec<&'static str> {
    let mut problems = Vec::new();
    if s.len() > 253 {
        problems.push("must be no more than 253 characters");
    }
    if s.is_empty()
        || !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
    {
        problems.push(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        );
    }
    if s == "." {
        problems.push("must not be '.'");
    } else if s == ".." {
        problems.push("must not be '..'");
    } else if s.starts_with("..") {
        problems.push("must not start with '..'");
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kubernetes_grammars() {
        assert!(is_dns1123_label("analytics"));
        assert!(is_dns1123_label("a-1"));
        assert!(!is_dns1123_label("Analytics"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label("eng/backend"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("n1.rack-2.example"));
        assert!(!is_dns1123_subdomain("n1..x"));
        assert!(is_resource_name("gpus"));
        assert!(is_resource_name("example.com/fpga"));
        assert!(!is_resource_name("GPUs"));
        assert!(is_qualified_name("rack"));
        assert!(is_qualified_name("topology.example.com/Zone_1"));
        assert!(!is_qualified_name("_rack"));
        assert!(is_label_value(""));
        assert!(is_label_value("r1"));
        assert!(!is_label_value("a/b"));
        assert!(is_env_var_name("JAVA_OPTS"));
        assert!(!is_env_var_name("1X"));
    }

    #[test]
    fn config_keys_follow_the_kubernetes_grammar() {
        for ok in [
            "a",
            "key.name",
            "KEY_NAME",
            "key-name",
            ".dockerconfigjson",
            "tls.crt",
            "._x",
        ] {
            assert!(config_key_problems(ok).is_empty(), "{ok}");
        }
        for (bad, problems) in [
            ("", 1),
            ("a b", 1),
            ("a/b", 1),
            (".", 1),
            ("..", 1),
            ("..x", 1),
        ] {
            assert_eq!(config_key_problems(bad).len(), problems, "{bad}");
        }
        assert_eq!(
            config_key_problems(&format!("..{}", "é".repeat(200))),
            [
                "must be no more than 253 characters",
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                "must not start with '..'",
            ]
        );
    }
}
