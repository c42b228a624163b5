use super::*;
use k8s_pb::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReviewSpec, SelfSubjectRulesReviewSpec,
    SubjectAccessReviewSpec,
};
use k8s_pb::apimachinery::pkg::apis::meta::v1::Preconditions;
use k8s_pb::apimachinery::pkg::runtime::TypeMeta;

fn wrap(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = MAGIC.to_vec();
    body.extend(u.encode_to_vec());
    body
}

#[test]
fn a_helm_release_secret_decodes_to_its_json() -> Result<(), ApiError> {
    let secret = Secret {
        metadata: Some(ObjectMeta {
            name: Some("sh.helm.release.v1.r1.v1".into()),
            namespace: Some("default".into()),
            labels: [("owner".to_string(), "helm".to_string())].into(),
            ..Default::default()
        }),
        data: [("release".to_string(), b"H4sI".to_vec())].into(),
        r#type: Some("helm.sh/release.v1".into()),
        ..Default::default()
    };
    let v = decode_object(&wrap("v1", "Secret", secret.encode_to_vec()))?;
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "sh.helm.release.v1.r1.v1", "namespace": "default", "labels": {"owner": "helm"}},
        "data": {"release": "SDRzSQ=="}, "type": "helm.sh/release.v1"})
    );
    Ok(())
}

#[test]
fn events_of_both_api_groups_decode_to_their_json() -> Result<(), ApiError> {
    let at = |seconds| {
        Some(MicroTime {
            seconds: Some(seconds),
            nanos: Some(5000),
        })
    };
    let regarding = Some(ObjectReference {
        kind: Some("Job".into()),
        name: Some("j".into()),
        ..Default::default()
    });
    let series = Some(EventSeriesV1 {
        count: Some(2),
        last_observed_time: at(1_800_000_100),
    });
    let v1 = EventV1 {
        metadata: Some(ObjectMeta {
            name: Some("j.1".into()),
            ..Default::default()
        }),
        event_time: at(1_800_000_000),
        series,
        reporting_controller: Some("example.com/op".into()),
        reporting_instance: Some("op-0".into()),
        action: Some("Reconcile".into()),
        reason: Some("Synced".into()),
        regarding: regarding.clone(),
        note: Some("done".into()),
        r#type: Some("Normal".into()),
        ..Default::default()
    };
    let v = decode_object(&wrap("events.k8s.io/v1", "Event", v1.encode_to_vec()))?;
    assert_eq!(
        v,
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "j.1"},
            "eventTime": "2027-01-15T08:00:00.000005Z",
            "series": {"count": 2, "lastObservedTime": "2027-01-15T08:01:40.000005Z"},
            "reportingController": "example.com/op", "reportingInstance": "op-0",
            "action": "Reconcile", "reason": "Synced", "regarding": {"kind": "Job", "name": "j"},
            "note": "done", "type": "Normal"})
    );
    let core = Event {
        metadata: Some(ObjectMeta {
            name: Some("j.2".into()),
            ..Default::default()
        }),
        involved_object: regarding,
        series: Some(EventSeries {
            count: Some(2),
            last_observed_time: at(1_800_000_100),
        }),
        related: Some(ObjectReference {
            name: Some("t".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let v = decode_object(&wrap("v1", "Event", core.encode_to_vec()))?;
    assert_eq!(v["series"]["count"], 2);
    assert_eq!(v["related"], json!({"name": "t"}));
    assert_eq!(v["involvedObject"]["kind"], "Job");
    Ok(())
}

#[test]
fn an_access_review_decodes_to_its_json() -> Result<(), ApiError> {
    let review = SelfSubjectAccessReview {
        metadata: None,
        spec: Some(SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some("analytics".into()),
                verb: Some("create".into()),
                group: Some("corral.dev".into()),
                resource: Some("jobs".into()),
                ..ResourceAttributes::default()
            }),
            non_resource_attributes: None,
        }),
        ..Default::default()
    };
    let v = decode_object(&wrap(
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        review.encode_to_vec(),
    ))?;
    assert_eq!(
        v["spec"],
        json!({"resourceAttributes": {"namespace": "analytics", "verb": "create", "group": "corral.dev", "resource": "jobs"}})
    );
    // A SubjectAccessReview: the same attributes, about someone else.
    let about = SubjectAccessReview {
        spec: Some(SubjectAccessReviewSpec {
            resource_attributes: review
                .spec
                .as_ref()
                .and_then(|sp| sp.resource_attributes.clone()),
            user: Some("alice".into()),
            groups: vec!["team-a".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let v = decode_object(&wrap(
        "authorization.k8s.io/v1",
        "SubjectAccessReview",
        about.encode_to_vec(),
    ))?;
    assert_eq!(v["spec"]["user"], "alice");
    assert_eq!(v["spec"]["groups"], json!(["team-a"]));
    assert_eq!(v["spec"]["resourceAttributes"]["resource"], "jobs");
    let rules = SelfSubjectRulesReview {
        metadata: None,
        spec: Some(SelfSubjectRulesReviewSpec {
            namespace: Some("analytics".into()),
        }),
        ..Default::default()
    };
    let v = decode_object(&wrap(
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
        rules.encode_to_vec(),
    ))?;
    assert_eq!(v["spec"], json!({"namespace": "analytics"}));
    Ok(())
}

#[test]
fn delete_options_decode() -> Result<(), ApiError> {
    let d = DeleteOptions {
        propagation_policy: Some("Background".into()),
        preconditions: Some(Preconditions {
            uid: Some("u".into()),
            resource_version: None,
        }),
        dry_run: vec!["All".into()],
        ..Default::default()
    };
    let v = decode_delete_options(&wrap("meta.k8s.io/v1", "DeleteOptions", d.encode_to_vec()))?;
    assert_eq!(
        v,
        json!({"preconditions": {"uid": "u"}, "propagationPolicy": "Background", "dryRun": ["All"]})
    );
    Ok(())
}

#[test]
fn garbage_is_a_bad_request_never_a_panic() {
    for body in [&b""[..], b"k8s", b"k8s\0\xff\xff\xff", b"{\"json\":1}"] {
        assert!(decode_object(body).is_err());
        assert!(decode_delete_options(body).is_err());
    }
}

proptest::proptest! {
    #[test]
    fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
        let mut body = MAGIC.to_vec();
        body.extend(bytes);
        let _ = decode_object(&body);
        let _ = decode_delete_options(&body);
    }
}
