//! A full disk under the embedded store (a small tmpfs holding only the
//! store, mounted for the test; root is needed, as for the containerd
//! tests): writes get a clear 507 `Status` while reads go on, the server
//! neither crashes nor answers 500, service resumes as soon as space
//! returns, and nothing acknowledged is lost across a SIGKILL afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use corral_e2e::Server;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};

/// A tmpfs of a fixed size, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("corral-test")
            .arg(dir.path())
            .status()
            .context("running mount")?;
        ensure!(status.success(), "mounting a tmpfs needs root: {status}");
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a server still holding its files must not keep the mount.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

fn config_map(name: &str, bytes: usize) -> Result<ConfigMap> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "data": {"blob": "x".repeat(bytes)},
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_and_recovers_when_space_returns() -> Result<()> {
    let disk = Tmpfs::mount("24m")?;
    // Space an operator can free later.
    let filler: PathBuf = disk.path().join("filler");
    std::fs::write(&filler, vec![0u8; 6 * 1024 * 1024])?;
    let store = format!("embedded:{}", disk.path().join("store.db").display());
    let home = tempfile::tempdir()?;
    let listen = corral_e2e::free_address()?;
    let mut server = Server::start_at(home.path(), &listen, &["--store", &store])?;
    let cms: Api<ConfigMap> = Api::namespaced(client(&server.kubeconfig).await?, "default");

    // Four writers fill the disk with 256 KiB ConfigMaps until refused.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let cms = cms.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..200 {
                    let name = format!("w{w}-{i}");
                    match cms
                        .create(&PostParams::default(), &config_map(&name, 256 * 1024)?)
                        .await
                    {
                        Ok(_) => acked.push(name),
                        Err(e) => return anyhow::Ok((acked, Some(e))),
                    }
                }
                anyhow::Ok((acked, None))
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for w in writers {
        let (acked, refusal) = w.await??;
        acknowledged.extend(acked);
        match refusal {
            Some(kube::Error::Api(status)) => {
                assert_eq!(status.code, 507, "{status:?}");
                assert_eq!(status.reason, "InsufficientStorage", "{status:?}");
                assert!(status.message.contains("out of space"), "{status:?}");
            }
            other => bail!("expected a 507 once the disk was full, got {other:?}"),
        }
    }
    eprintln!(
        "{} writes acknowledged before the disk filled",
        acknowledged.len()
    );
    ensure!(
        server.wait_exit(Duration::ZERO)?.is_none(),
        "the server exited on a full disk: {}",
        server.log()
    );

    // Reads go on while the disk is full.
    let listed = cms.list(&ListParams::default()).await?.items.len();
    ensure!(
        listed >= acknowledged.len(),
        "{listed} listed, {} acknowledged",
        acknowledged.len()
    );

    // Space returns: writes succeed again, without a restart.
    std::fs::remove_file(&filler)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match cms
            .create(
                &PostParams::default(),
                &config_map("after-space-returned", 1024)?,
            )
            .await
        {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => bail!("writes did not resume once space returned: {e}"),
        }
    }
    acknowledged.push("after-space-returned".to_owned());

    // Nothing acknowledged is lost, even through a crash.
    server.crash()?;
    let server = Server::start_at(home.path(), &listen, &["--store", &store])?;
    let cms: Api<ConfigMap> = Api::namespaced(client(&server.kubeconfig).await?, "default");
    let stored: std::collections::BTreeSet<String> = cms
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !stored.contains(*n))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(!server.log().contains("panicked"), "{}", server.log());
    Ok(())
}
