use super::*;

fn fields(errors: &[FieldError]) -> Vec<(FieldErrorType, &str)> {
    errors.iter().map(|e| (e.type_, e.field.as_str())).collect()
}

fn secret(type_: Option<&str>, data: Value) -> Value {
    let mut s = json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "s", "namespace": "a"}, "data": data});
    if let Some(t) = type_ {
        s["type"] = json!(t);
    }
    s
}

fn b64(s: &str) -> Value {
    json!(GO_BASE64.encode(s))
}

#[test]
fn string_data_folds_into_data_and_wins() {
    let mut s = secret(None, json!({"user": b64("other"), "keep": b64("k")}));
    s["stringData"] = json!({"user": "admin", "pass": "p"});
    normalize("Secret", &mut s, None);
    assert_eq!(s.get("stringData"), None);
    assert_eq!(
        s["data"],
        json!({"user": b64("admin"), "pass": b64("p"), "keep": b64("k")})
    );
    assert_eq!(s["type"], json!("Opaque"));
    // Without data, stringData makes it.
    let mut only = json!({"kind": "Secret", "stringData": {"a": "b"}, "type": ""});
    normalize("Secret", &mut only, None);
    assert_eq!(
        only,
        json!({"kind": "Secret", "data": {"a": b64("b")}, "type": "Opaque"})
    );
}

#[test]
fn a_namespace_carries_its_name_label_and_keeps_its_finalizers() {
    let mut ns = json!({"kind": "Namespace", "metadata": {"name": "web", "labels": {"team": "w"}}});
    normalize("Namespace", &mut ns, None);
    assert_eq!(
        ns["metadata"]["labels"],
        json!({"team": "w", NAMESPACE_NAME_LABEL: "web"})
    );
    assert_eq!(ns["spec"], json!({"finalizers": ["kubernetes"]}));
    // Given finalizers are kept, with `kubernetes` added once.
    let mut own = json!({"metadata": {"name": "x"}, "spec": {"finalizers": ["example.com/f"]}});
    normalize("Namespace", &mut own, None);
    assert_eq!(
        own["spec"]["finalizers"],
        json!(["example.com/f", "kubernetes"])
    );
    // An update can neither drop the label nor change the finalizers.
    let mut update = json!({"metadata": {"name": "web", "labels": {NAMESPACE_NAME_LABEL: "other"}},
                            "spec": {"finalizers": []}});
    normalize("Namespace", &mut update, Some(&ns));
    assert_eq!(
        update["metadata"]["labels"],
        json!({NAMESPACE_NAME_LABEL: "web"})
    );
    assert_eq!(update["spec"], json!({"finalizers": ["kubernetes"]}));
    // A namespace stored without them (before this rule) stays without.
    let mut old_style =
        json!({"metadata": {"name": "web"}, "spec": {"finalizers": ["kubernetes"]}});
    normalize(
        "Namespace",
        &mut old_style,
        Some(&json!({"metadata": {"name": "web"}})),
    );
    assert_eq!(old_style.get("spec"), None);
}

#[test]
fn config_map_rules() {
    let big = "x".repeat(MAX_DATA_BYTES / 2 + 1);
    for (cm, want) in [
        (
            json!({"data": {"a": "1", "key.name": "2"}, "binaryData": {"b": b64("3")}}),
            vec![],
        ),
        (
            json!({"data": {"a b": "1", "..x": "2"}, "binaryData": {"a/b": b64("3")}}),
            vec![
                (FieldErrorType::Invalid, "data[..x]"),
                (FieldErrorType::Invalid, "data[a b]"),
                (FieldErrorType::Invalid, "binaryData[a/b]"),
            ],
        ),
        (
            json!({"data": {"k": "1"}, "binaryData": {"k": b64("1")}}),
            vec![(FieldErrorType::Invalid, "data[k]")],
        ),
        (
            json!({"data": {"a": big.clone()}, "binaryData": {"b": b64(&big)}}),
            vec![(FieldErrorType::TooLong, "")],
        ),
    ] {
        let errors = validate("ConfigMap", &cm, None).expect("decoded");
        assert_eq!(fields(&errors), want, "{cm}");
    }
}

#[test]
fn secret_rules_by_type() {
    use FieldErrorType::{Invalid, Required};
    let docker = GO_BASE64.encode(r#"{"auths": {}}"#);
    for (s, want) in [
        (secret(Some("Opaque"), json!({"a": b64("x")})), vec![]),
        (
            secret(None, json!({"bad key": b64("x")})),
            vec![(Invalid, "data[bad key]")],
        ),
        (
            secret(Some("kubernetes.io/tls"), json!({"tls.crt": b64("c")})),
            vec![(Required, "data[tls.key]")],
        ),
        (
            secret(
                Some("kubernetes.io/tls"),
                json!({"tls.crt": b64("c"), "tls.key": b64("k")}),
            ),
            vec![],
        ),
        (
            secret(
                Some("kubernetes.io/dockerconfigjson"),
                json!({".dockerconfigjson": docker}),
            ),
            vec![],
        ),
        (
            secret(
                Some("kubernetes.io/dockerconfigjson"),
                json!({".dockerconfigjson": b64("{")}),
            ),
            vec![(Invalid, "data[.dockerconfigjson]")],
        ),
        (
            secret(Some("kubernetes.io/dockercfg"), json!({})),
            vec![(Required, "data[.dockercfg]")],
        ),
        (
            secret(Some("kubernetes.io/basic-auth"), json!({})),
            vec![(Required, "data[username]"), (Required, "data[password]")],
        ),
        (
            secret(
                Some("kubernetes.io/basic-auth"),
                json!({"password": b64("")}),
            ),
            vec![],
        ),
        (
            secret(
                Some("kubernetes.io/ssh-auth"),
                json!({"ssh-privatekey": b64("")}),
            ),
            vec![(Required, "data[ssh-privatekey]")],
        ),
        (
            secret(Some("kubernetes.io/service-account-token"), json!({})),
            vec![(
                Required,
                "metadata.annotations[kubernetes.io/service-account.name]",
            )],
        ),
        (secret(Some("example.com/own"), json!({})), vec![]),
        (
            secret(
                None,
                json!({"a": GO_BASE64.encode(vec![0u8; MAX_DATA_BYTES + 1])}),
            ),
            vec![(FieldErrorType::TooLong, "data")],
        ),
    ] {
        let errors = validate("Secret", &s, None).expect("decoded");
        assert_eq!(fields(&errors), want, "{s}");
    }
    // The docker config's content is never echoed back.
    let errors = validate(
        "Secret",
        &secret(
            Some("kubernetes.io/dockercfg"),
            json!({".dockercfg": b64("not json")}),
        ),
        None,
    )
    .expect("decoded");
    assert_eq!(
        errors[0].value.as_deref(),
        Some("\"<secret contents redacted>\"")
    );
}

#[test]
fn bytes_that_are_not_base64_are_a_bad_request() {
    // Line breaks are tolerated, as Go's decoder does.
    let wrapped = json!(format!("{}\n", GO_BASE64.encode("hello")));
    assert!(validate("Secret", &secret(None, json!({"a": wrapped})), None).is_ok());
    for (kind, obj) in [
        ("Secret", secret(None, json!({"a": "not base64!!"}))),
        ("Secret", secret(None, json!({"a": "YQ"}))),
        ("ConfigMap", json!({"binaryData": {"a": "%%%%"}})),
    ] {
        match validate(kind, &obj, None) {
            Err(ApiError::BadRequest(m)) => {
                assert!(
                    m.starts_with(&format!(
                        "{kind} in version \"v1\" cannot be handled as a {kind}: illegal base64 data at input byte "
                    )),
                    "{m}"
                );
            }
            other => panic!("{obj}: {other:?}"),
        }
    }
}

#[test]
fn immutable_data_and_secret_types_stay() {
    use FieldErrorType::{Forbidden, Invalid};
    let old = json!({"immutable": true, "data": {"a": "1"}, "binaryData": {"b": b64("2")}});
    for (new, want) in [
        (old.clone(), vec![]),
        (
            json!({"immutable": true, "data": {"a": "1"}, "binaryData": {"b": b64("2")},
                "metadata": {"labels": {"x": "y"}}}),
            vec![],
        ),
        (
            json!({"immutable": false, "data": {"a": "2"}, "binaryData": {"b": b64("2")}}),
            vec![(Forbidden, "immutable"), (Forbidden, "data")],
        ),
        (
            json!({"immutable": true, "data": {"a": "1"}}),
            vec![(Forbidden, "binaryData")],
        ),
    ] {
        let errors = validate("ConfigMap", &new, Some(&old)).expect("decoded");
        assert_eq!(fields(&errors), want, "{new}");
    }
    // A mutable one changes freely, and may become immutable.
    let mutable = json!({"data": {"a": "1"}});
    let errors = validate("ConfigMap", &json!({"immutable": true}), Some(&mutable));
    assert_eq!(errors.expect("decoded"), vec![]);

    let tls = secret(
        Some("kubernetes.io/tls"),
        json!({"tls.crt": b64("c"), "tls.key": b64("k")}),
    );
    let mut retyped = tls.clone();
    retyped["type"] = json!("Opaque");
    let errors = validate("Secret", &retyped, Some(&tls)).expect("decoded");
    assert_eq!(fields(&errors), [(Invalid, "type")]);
    assert_eq!(errors[0].detail, "field is immutable");
    // A secret stored without a type is Opaque.
    let untyped = secret(None, json!({}));
    let errors = validate("Secret", &secret(Some("Opaque"), json!({})), Some(&untyped));
    assert_eq!(errors.expect("decoded"), vec![]);
    let mut frozen = secret(None, json!({"a": b64("1")}));
    frozen["immutable"] = json!(true);
    let mut changed = frozen.clone();
    changed["data"]["a"] = b64("2");
    let errors = validate("Secret", &changed, Some(&frozen)).expect("decoded");
    assert_eq!(fields(&errors), [(Forbidden, "data")]);
}

#[test]
fn lease_rules() {
    use FieldErrorType::{Forbidden, Invalid};
    for (spec, want) in [
        (
            json!({"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0}),
            vec![],
        ),
        (
            json!({"leaseDurationSeconds": 0, "leaseTransitions": -1}),
            vec![
                (Invalid, "spec.leaseDurationSeconds"),
                (Invalid, "spec.leaseTransitions"),
            ],
        ),
        (
            json!({"preferredHolder": "b"}),
            vec![(Forbidden, "spec.preferredHolder")],
        ),
        (
            json!({"preferredHolder": "b", "strategy": "OldestEmulationVersion"}),
            vec![],
        ),
    ] {
        let errors = validate("Lease", &json!({"spec": spec}), None).expect("no bytes");
        assert_eq!(fields(&errors), want, "{spec}");
    }
}
