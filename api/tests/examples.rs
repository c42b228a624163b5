//! Every manifest under `examples/` decodes into its kind and passes validation,
//! exactly as written.

use std::path::PathBuf;

use corral_api::CorralObject;

#[test]
fn every_example_decodes_and_validates() -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(&text)?;
        for doc in docs {
            // Namespaces and other built-in kinds are the API server's to check.
            if doc["apiVersion"] == "v1" {
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
        seen >= 8,
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
