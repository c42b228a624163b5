//! The bad-input regression corpus (`apiserver/tests/corpus/`), replayed
//! through the server, then fuzzed.
//!
//! Each corpus file is one request body (or selector), named
//! `<endpoint>--<expect>--<what>.<ext>`:
//! - endpoint: `create-json`, `create-yaml`, `create-protobuf` (a POST of a
//!   ConfigMap), `patch-json`, `patch-merge`, `patch-strategic`,
//!   `patch-apply` (a PATCH of a ConfigMap the test creates; `TARGET` in the
//!   body is its name), `labels`, `fields` (a list's selectors),
//!   `create-options` (the query of a ConfigMap's POST: `dryRun`,
//!   `fieldManager`, `fieldValidation`), `list-options` (the query of a
//!   ConfigMap list, never a watch: `resourceVersion`,
//!   `resourceVersionMatch`, `limit`, `continue`, `sendInitialEvents`);
//! - expect: `ok` (a 2xx), `bad` (a 4xx Status, and nothing written), or
//!   `any` (never a 5xx; what the fuzzer found and kept).
//!
//! The fuzzer mutates corpus entries (bytes flipped, cut, repeated) with
//! proptest's generators and sends them: whatever the server answers, it is
//! never a 5xx, a dropped connection or a write after an error. An input
//! that breaks this is added to the corpus as an `any` entry, so it is
//! replayed from then on. `CORRAL_FUZZ_CASES` (default 256) sets how many,
//! and `CORRAL_FUZZ_SEED` (a number) draws other mutations than the default
//! run's.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

use super::*;

const NAMESPACE: &str = "corpus";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Ok,
    Bad,
    Any,
}

#[derive(Debug, Clone)]
struct Case {
    endpoint: String,
    expect: Expect,
    name: String,
    body: Vec<u8>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn load_corpus() -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(corpus_dir())? {
        let path = entry?.path();
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .context("corpus file name")?
            .to_owned();
        let mut parts = file.splitn(3, "--");
        let (Some(endpoint), Some(expect), Some(_)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("{file}: not <endpoint>--<expect>--<what>");
        };
        let expect = match expect {
            "ok" => Expect::Ok,
            "bad" => Expect::Bad,
            "any" => Expect::Any,
            other => bail!("{file}: unknown expectation {other}"),
        };
        cases.push(Case {
            endpoint: endpoint.to_owned(),
            expect,
            name: file,
            body: std::fs::read(&path)?,
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    anyhow::ensure!(cases.len() >= 40, "the corpus is missing files");
    Ok(cases)
}

fn percent_encode(s: &[u8]) -> String {
    s.iter()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(b) {
                (*b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `k=v&k=v` bytes as a query string, every key and value percent-encoded.
fn query_of(body: &[u8]) -> String {
    body.split(|b| *b == b'&')
        .map(|pair| {
            let mut kv = pair.splitn(2, |b| *b == b'=');
            let k = percent_encode(kv.next().unwrap_or_default());
            let v = percent_encode(kv.next().unwrap_or_default());
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// What the server answered: the status code, and the resourceVersion of
/// the patched object (or the number of ConfigMaps) before and after.
struct Outcome {
    code: u16,
    before: String,
    after: String,
}

async fn state(ts: &TestServer, target: &str) -> Result<String> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let cms: Api<ConfigMap> = Api::namespaced(ts.client.clone(), NAMESPACE);
    let listed = cms.list(&ListParams::default()).await?;
    let target_rv = listed
        .items
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(target))
        .and_then(|c| c.metadata.resource_version.clone())
        .unwrap_or_default();
    Ok(format!(
        "{} objects, {target} at {target_rv}",
        listed.items.len()
    ))
}

/// Sends one case; `n` names its target ConfigMap.
async fn send(ts: &TestServer, case: &Case, n: usize) -> Result<Outcome> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let target = format!("t{n}");
    let cms: Api<ConfigMap> = Api::namespaced(ts.client.clone(), NAMESPACE);
    if case.endpoint.starts_with("patch-") {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": target, "namespace": NAMESPACE}, "data": {"a": "1"}}),
        )?;
        cms.create(&PostParams::default(), &cm).await?;
    }
    let collection = format!("/api/v1/namespaces/{NAMESPACE}/configmaps");
    let body = String::from_utf8_lossy(&case.body)
        .replace("TARGET", &target)
        .into_bytes();
    let body = if case.endpoint == "create-protobuf" {
        case.body.clone()
    } else {
        body
    };
    let req = match case.endpoint.as_str() {
        "create-json" | "create-yaml" | "create-protobuf" => {
            let ct = match case.endpoint.as_str() {
                "create-json" => "application/json",
                "create-yaml" => "application/yaml",
                _ => "application/vnd.kubernetes.protobuf",
            };
            http::Request::post(&collection)
                .header("content-type", ct)
                .body(body)?
        }
        "patch-json" | "patch-merge" | "patch-strategic" | "patch-apply" => {
            let ct = match case.endpoint.as_str() {
                "patch-json" => "application/json-patch+json",
                "patch-merge" => "application/merge-patch+json",
                "patch-strategic" => "application/strategic-merge-patch+json",
                _ => "application/apply-patch+yaml",
            };
            let manager = if case.endpoint == "patch-apply" {
                "?fieldManager=corpus"
            } else {
                ""
            };
            http::Request::patch(format!("{collection}/{target}{manager}"))
                .header("content-type", ct)
                .body(body)?
        }
        "create-options" => {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"generateName": "options-"}, "data": {"a": "1"}});
            http::Request::post(format!("{collection}?{}", query_of(&case.body)))
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&cm)?)?
        }
        // The first `watch` wins: a mutation that spells one stays a list.
        "list-options" => {
            http::Request::get(format!("{collection}?watch=false&{}", query_of(&case.body)))
                .body(Vec::new())?
        }
        "labels" | "fields" => {
            let param = if case.endpoint == "labels" {
                "labelSelector"
            } else {
                "fieldSelector"
            };
            http::Request::get(format!(
                "{collection}?{param}={}",
                percent_encode(&case.body)
            ))
            .body(Vec::new())?
        }
        other => bail!("{}: unknown endpoint {other}", case.name),
    };
    let before = state(ts, &target).await?;
    let code = match ts.client.request_text(req).await {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(other) => bail!("{}: no Status came back: {other}", case.name),
    };
    let after = state(ts, &target).await?;
    Ok(Outcome {
        code,
        before,
        after,
    })
}

/// Why an outcome breaks the case's expectation, if it does.
fn broken(case: &Case, o: &Outcome) -> Option<String> {
    let wrote = o.before != o.after;
    match case.expect {
        _ if o.code >= 500 => Some(format!("answered {}", o.code)),
        Expect::Ok if !(200..300).contains(&o.code) => Some(format!("answered {}", o.code)),
        Expect::Bad if !(400..500).contains(&o.code) => Some(format!("answered {}", o.code)),
        Expect::Bad | Expect::Any if o.code >= 400 && wrote => Some(format!(
            "answered {} but wrote: {} -> {}",
            o.code, o.before, o.after
        )),
        _ => None,
    }
}

async fn ensure_namespace(ts: &TestServer) -> Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    let nss: Api<Namespace> = Api::all(ts.client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
    )
    .await?;
    Ok(())
}

pub async fn the_corpus_gets_the_answers_it_expects(ts: &TestServer) -> Result<()> {
    ensure_namespace(ts).await?;
    let mut failures = Vec::new();
    for (n, case) in load_corpus()?.iter().enumerate() {
        let outcome = send(ts, case, n).await?;
        if let Some(why) = broken(case, &outcome) {
            failures.push(format!("{}: {why}", case.name));
        }
    }
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// How one fuzz case changes a corpus entry.
#[derive(Debug, Clone)]
enum Mutation {
    /// Sets the byte at (index modulo length).
    Set(usize, u8),
    /// Cuts the body at (index modulo length).
    Cut(usize),
    /// Repeats the bytes from (index modulo length) onwards.
    Repeat(usize),
    /// Removes the byte at (index modulo length).
    Remove(usize),
}

fn mutate(body: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut b = body.to_vec();
    for m in mutations {
        if b.is_empty() {
            break;
        }
        let at = |i: &usize| i % b.len();
        match m {
            Mutation::Set(i, v) => {
                let i = at(i);
                b[i] = *v;
            }
            Mutation::Cut(i) => b.truncate(at(i)),
            Mutation::Repeat(i) => {
                let tail = b[at(i)..].to_vec();
                b.extend_from_slice(&tail);
            }
            Mutation::Remove(i) => {
                let i = at(i);
                b.remove(i);
            }
        }
    }
    b
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        // Bytes that matter to the formats more often than chance would.
        4 => (any::<usize>(), proptest::sample::select(b"{}[]\":,$-&*!=()\\\n\t0".to_vec()))
            .prop_map(|(i, v)| Mutation::Set(i, v)),
        1 => any::<usize>().prop_map(Mutation::Cut),
        1 => any::<usize>().prop_map(Mutation::Repeat),
        2 => any::<usize>().prop_map(Mutation::Remove),
    ]
}

pub async fn mutated_corpus_entries_never_get_a_5xx_or_a_partial_write(
    ts: &TestServer,
) -> Result<()> {
    ensure_namespace(ts).await?;
    let corpus = load_corpus()?;
    let cases: usize = std::env::var("CORRAL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let config = RunnerConfig {
        failure_persistence: None,
        ..RunnerConfig::default()
    };
    // The same mutations every run unless `CORRAL_FUZZ_SEED` picks others.
    let mut runner = match std::env::var("CORRAL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(seed) => {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&seed.to_le_bytes());
            TestRunner::new_with_rng(
                config,
                proptest::test_runner::TestRng::from_seed(
                    proptest::test_runner::RngAlgorithm::ChaCha,
                    &bytes,
                ),
            )
        }
        None => TestRunner::new(config),
    };
    let strategy = (0..corpus.len(), proptest::collection::vec(mutation(), 1..6));
    let mut failures = Vec::new();
    for n in 0..cases {
        let (pick, mutations) = strategy
            .new_tree(&mut runner)
            .map_err(|e| anyhow!("{e}"))?
            .current();
        let original = &corpus[pick];
        let case = Case {
            expect: Expect::Any,
            body: mutate(&original.body, &mutations),
            ..original.clone()
        };
        let outcome = send(ts, &case, 10_000 + n).await?;
        if let Some(why) = broken(&case, &outcome) {
            let file = format!(
                "{}--any--found-{n}-from-{}",
                case.endpoint,
                original.name.rsplit("--").next().unwrap_or("entry")
            );
            std::fs::write(corpus_dir().join(&file), &case.body)?;
            failures.push(format!("{file} (kept in the corpus): {why}"));
        }
    }
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
