//! Every manifest under `examples/` and `more-examples/` decodes into its
//! kind and passes validation, exactly as written; the tour's `examples/`
//! holds no subdirectory and no kustomization (so `kubectl apply -R -f
//! examples/` applies it too).

use std::path::PathBuf;

use corral_api::CorralObject;

/// The manifests under `dir`, subdirectories included.
fn manifests(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            manifests(&path, out)?;
        } else if path.extension().and_then(|e| e.to_str()) == Some("yaml")
            // A kustomization is kustomize's input, not an object.
            && path.file_name().and_then(|n| n.to_str()) != Some("kustomization.yaml")
        {
            out.push(path);
        }
    }
    Ok(())
}

#[test]
fn every_example_decodes_and_validates() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut paths = Vec::new();
    manifests(&root.join("examples"), &mut paths)?;
    manifests(&root.join("more-examples"), &mut paths)?;
    let mut seen = 0;
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(&text)?;
        for doc in docs {
            // Namespaces, RBAC and other built-in kinds are the API server's to check.
            if doc["apiVersion"] == "v1" || doc["apiVersion"] == "rbac.authorization.k8s.io/v1" {
                continue;
            }
            let obj = CorralObject::from_value(doc)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let errors = obj.validate();
            assert!(
                errors.is_empty(),
                "{}: {:?}",
                path.display(),
                errors.iter().map(ToString::to_string).collect::<Vec<_>>()
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 10,
        "expected the talk's job, a service, a cron job and two teams; found {seen} objects"
    );
    Ok(())
}

#[test]
fn the_talks_job_keeps_its_figures() -> anyhow::Result<()> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/talk-adhoc-job.yaml");
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_str_multiple(&std::fs::read_to_string(path)?)?;
    let Some(CorralObject::Job(job)) = docs
        .into_iter()
        .next()
        .map(CorralObject::from_value)
        .transpose()?
    else {
        anyhow::bail!("the talk's example is not a Job");
    };
    let r = job
        .spec
        .resources
        .to_milli()
        .map_err(|(n, e)| anyhow::anyhow!("{n}: {e}"))?;
    assert_eq!(r.get("cpus"), 1000);
    assert_eq!(r.get("memory"), 5120 * 1024 * 1024 * 1000);
    assert_eq!(r.get("disk"), 5120 * 1024 * 1024 * 1000);
    assert_eq!(job.spec.priority, 0);
    assert_eq!(job.spec.max_task_failures, 1);
    assert_eq!(job.spec.tier, corral_api::Tier::Preemptible);
    assert_eq!(job.spec.kind, corral_api::JobKind::Adhoc);
    Ok(())
}

#[test]
fn the_tour_directory_is_flat_and_plain() -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        assert!(
            !path.is_dir(),
            "{} would be picked up by apply -R",
            path.display()
        );
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert!(
            name.ends_with(".yaml") || name == "README.md",
            "{name}: the tour applies every file here"
        );
    }
    Ok(())
}
