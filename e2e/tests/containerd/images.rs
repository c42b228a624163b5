//! Images a node lacks: pulled from their registry (a private
//! docker-registry here), or imported from archives in `--image-dir`.

use anyhow::{Context, Result};
use corral_e2e::wait_for;

use super::{Cluster, WAIT};

/// Debian's docker-registry on a free port of 127.0.0.1, stopped on drop.
struct Catalog {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    host: String,
    _dir: tempfile::TempDir,
}

impl Catalog {
    fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp: {{addr: \"{host}\"}}\n",
                dir.path().join("data").display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry (scripts/install-deps.sh installs it)")?;
        let registry = Catalog {
            child,
            host,
            _dir: dir,
        };
        wait_for("the registry to listen", WAIT, || {
            Ok(std::net::TcpStream::connect(&registry.host).is_ok())
        })?;
        Ok(registry)
    }

    /// Pushes an OCI archive as `name` (`team/app:1`), with skopeo.
    fn push(&self, archive: &std::path::Path, name: &str) -> Result<String> {
        let reference = format!("{}/{name}", self.host);
        let out = std::process::Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{reference}"))
            .output()
            .context("running skopeo (scripts/install-deps.sh installs it)")?;
        anyhow::ensure!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(reference)
    }
}

impl Drop for Catalog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_image_missing_on_the_node_is_pulled_from_its_registry() -> Result<()> {
    let registry = Catalog::start()?;
    let node = "puller";
    let c = Cluster::start_with(
        node,
        "containerd",
        &[
            "--pull-images",
            "missing",
            "--insecure-registries",
            &registry.host,
        ],
    )?;
    let image = registry.push(&c.containerd.image_archive(), "corral/testbox:1")?;
    let script = "echo pulled-and-ran";
    c.job_with_image(&image, "pulled", "adhoc", "64Mi", script, "")?;
    c.wait_phase("pulled-0-0", "FINISHED")?;
    assert!(c.output("pulled-0-0", "stdout").contains("pulled-and-ran"));
    assert!(
        c.containerd.ctr(&["images", "ls", "-q"])?.contains(&image),
        "the image stays for the next task"
    );
    // An image the registry does not have: FAILED, saying why.
    let absent = format!("{}/corral/nothing:1", registry.host);
    c.job_with_image(&absent, "absent", "adhoc", "64Mi", script, "")?;
    let t = c.wait_phase("absent-0-0", "FAILED")?;
    assert_eq!(t["status"]["failureReason"], "ImageNotFound");
    let message = t["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("pulling it failed"), "{message}");
    Ok(())
}

#[test]
fn archives_in_the_image_dir_are_imported_when_the_agent_starts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // The test image once more, under a name nothing else imports.
    let out = std::process::Command::new("python3")
        .arg(corral_e2e::workspace().join("scripts/testbox-image.py"))
        .arg(dir.path().join("from-dir.tar"))
        .args(["--name", "docker.io/library/from-dir:1"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "testbox-image.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.path().join("notes.txt"), "not an image")?;
    let image_dir = dir.path().display().to_string();
    let c = Cluster::start_with("importer", "containerd", &["--image-dir", &image_dir])?;
    c.job_with_image(
        "from-dir:1",
        "imported",
        "adhoc",
        "64Mi",
        "echo from-the-dir",
        "",
    )?;
    c.wait_phase("imported-0-0", "FINISHED")?;
    assert!(c.output("imported-0-0", "stdout").contains("from-the-dir"));
    Ok(())
}
