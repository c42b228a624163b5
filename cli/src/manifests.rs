//! Reading YAML manifests from files, directories or stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use corral_api::CorralObject;

/// One decoded document and where it came from.
#[derive(Debug)]
pub struct Manifest {
    /// `file.yaml#2` (the document's index in its file).
    pub source: String,
    /// The object.
    pub object: CorralObject,
}

impl Manifest {
    /// `Job analytics/sparkie`.
    pub fn describe(&self) -> String {
        let meta = self.object.metadata();
        let name = meta.name.as_deref().unwrap_or("<unnamed>");
        match meta.namespace.as_deref() {
            Some(ns) => format!("{} {ns}/{name}", self.object.info().kind),
            None => format!("{} {name}", self.object.info().kind),
        }
    }
}

/// Documents left out of [`read_corral`]: `(source, "apiVersion/kind")`.
pub type Skipped = Vec<(String, String)>;

/// The Corral objects under `paths`, and the other documents left out
/// (built-in kinds such as Namespace).
pub fn read_corral(paths: &[PathBuf]) -> Result<(Vec<Manifest>, Skipped)> {
    let mut skipped = Vec::new();
    let mut out = Vec::new();
    for (source, doc) in read_documents(paths)? {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        if !api_version.is_empty() && !api_version.starts_with("corral.dev/") {
            let kind = doc["kind"].as_str().unwrap_or_default();
            skipped.push((source, format!("{api_version}/{kind}")));
            continue;
        }
        let object = CorralObject::from_value(doc).with_context(|| source.clone())?;
        out.push(Manifest { source, object });
    }
    Ok((out, skipped))
}

/// Every non-empty YAML document under `paths` (`-`: stdin; directories:
/// their `*.yaml` and `*.yml` files, sorted), with where it came from
/// (`file.yaml#2`, the document's index in its file).
pub fn read_documents(paths: &[PathBuf]) -> Result<Vec<(String, serde_json::Value)>> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            decode(&text, "<stdin>", &mut out)?;
        } else if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect();
            files.sort();
            for f in files {
                read_file(&f, &mut out)?;
            }
        } else {
            read_file(path, &mut out)?;
        }
    }
    Ok(out)
}

fn read_file(path: &Path, out: &mut Vec<(String, serde_json::Value)>) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    decode(&text, &path.display().to_string(), out)
}

/// The documents of one YAML text.
pub fn decode(text: &str, source: &str, out: &mut Vec<(String, serde_json::Value)>) -> Result<()> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(text)
        .with_context(|| format!("{source}: not valid YAML"))?;
    for (i, doc) in docs.into_iter().enumerate() {
        if !doc.is_null() {
            out.push((format!("{source}#{i}"), doc));
        }
    }
    Ok(())
}
