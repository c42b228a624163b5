//! Test support: a real, throwaway etcd on loopback.
//!
//! [`EtcdServer::start`] runs the `etcd` binary (or `$CORRAL_TEST_ETCD_BIN`) on
//! free ports with its data in a temporary directory, waits until it answers
//! (`/health` on its plain-HTTP metrics port), and kills it (by PID) when
//! dropped; [`EtcdServer::start_tls`] serves TLS and requires client
//! certificates; [`EtcdCluster`] runs several members as one cluster, any of
//! which a test may kill. `ETCD_*` variables are removed from their
//! environment because etcd reads them as flags.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a test etcd is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on (the default, as in production).
    Fsync,
    /// `--unsafe-no-fsync`: faster, for tests that do not measure.
    NoFsync,
}

/// A running etcd member, stopped on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Child,
    endpoint: String,
    _data: tempfile::TempDir,
}

/// Why a test etcd could not start.
#[derive(Debug, thiserror::Error)]
pub enum EtcdStartError {
    /// The binary could not be run.
    #[error("running {bin}: {source} (install etcd-server, or set CORRAL_TEST_ETCD_BIN)")]
    Spawn {
        /// The binary tried.
        bin: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Local set-up failed.
    #[error("preparing etcd: {0}")]
    Io(#[from] std::io::Error),
    /// It never became healthy.
    #[error("etcd did not become ready in time; its log:\n{log}")]
    NotReady {
        /// etcd's log.
        log: String,
    },
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Serving TLS for a test etcd (PEM files): its certificate and key, and
/// the CA whose client certificates it requires.
#[derive(Debug, Clone)]
pub struct ServingTls {
    /// etcd's certificate (valid for 127.0.0.1).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA clients' certificates must chain to.
    pub client_ca: PathBuf,
}

/// How one member is started.
struct MemberSpec<'a> {
    name: &'a str,
    client: &'a str,
    peer: &'a str,
    metrics: &'a str,
    initial_cluster: &'a str,
    durability: Durability,
    tls: Option<&'a ServingTls>,
    /// etcd's space quota (`--quota-backend-bytes`), when not its default.
    quota_bytes: Option<u64>,
}

/// Starts one etcd member with its data and log in `dir`.
fn spawn_member(spec: &MemberSpec<'_>, dir: &std::path::Path) -> Result<Child, EtcdStartError> {
    let bin = std::env::var("CORRAL_TEST_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned());
    let log = std::fs::File::create(dir.join("etcd.log"))?;
    let mut cmd = Command::new(&bin);
    for (k, _) in std::env::vars_os() {
        if let Some(name) = k.to_str()
            && name.starts_with("ETCD_")
            && name != "ETCD_UNSUPPORTED_ARCH"
        {
            cmd.env_remove(name);
        }
    }
    cmd.arg("--name")
        .arg(spec.name)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--listen-client-urls",
            spec.client,
            "--advertise-client-urls",
            spec.client,
        ])
        .args([
            "--listen-peer-urls",
            spec.peer,
            "--initial-advertise-peer-urls",
            spec.peer,
        ])
        // /health over plain HTTP, whatever the client port speaks.
        .args(["--listen-metrics-urls", spec.metrics])
        .args(["--initial-cluster", spec.initial_cluster])
        .args([
            "--initial-cluster-state",
            "new",
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ])
        .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if spec.durability == Durability::NoFsync {
        cmd.arg("--unsafe-no-fsync");
    }
    if let Some(bytes) = spec.quota_bytes {
        cmd.arg("--quota-backend-bytes").arg(bytes.to_string());
    }
    if let Some(tls) = spec.tls {
        cmd.arg("--cert-file")
            .arg(&tls.cert)
            .arg("--key-file")
            .arg(&tls.key)
            .arg("--trusted-ca-file")
            .arg(&tls.client_ca)
            .arg("--client-cert-auth");
    }
    cmd.spawn()
        .map_err(|source| EtcdStartError::Spawn { bin, source })
}

/// Polls `metrics` (`http://HOST:PORT`) until the member has a leader, or
/// the child exits, or 30 s pass.
fn wait_healthy(
    child: &mut Child,
    metrics: &str,
    dir: &std::path::Path,
) -> Result<(), EtcdStartError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = metrics.trim_start_matches("http://").to_owned();
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if health_ok(&addr) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
    Err(EtcdStartError::NotReady { log })
}

impl EtcdServer {
    /// Starts a single-member etcd with fsync on.
    pub fn start() -> Result<Self, EtcdStartError> {
        Self::start_with(Durability::Fsync)
    }

    /// Starts a single-member etcd.
    pub fn start_with(durability: Durability) -> Result<Self, EtcdStartError> {
        Self::retrying(|| Self::try_start(durability, None, None))
    }

    /// Starts a single-member etcd (no fsync) whose space quota is `bytes`:
    /// once its database reaches it, etcd raises its NOSPACE alarm and
    /// refuses writes.
    pub fn start_with_quota(bytes: u64) -> Result<Self, EtcdStartError> {
        Self::retrying(|| Self::try_start(Durability::NoFsync, None, Some(bytes)))
    }

    /// Starts a single-member etcd that serves TLS on its client port and
    /// requires client certificates (no fsync).
    pub fn start_tls(tls: &ServingTls) -> Result<Self, EtcdStartError> {
        Self::retrying(|| Self::try_start(Durability::NoFsync, Some(tls), None))
    }

    fn retrying(
        mut start: impl FnMut() -> Result<Self, EtcdStartError>,
    ) -> Result<Self, EtcdStartError> {
        let mut last = None;
        // Ports are chosen then bound by etcd: retry the small race.
        for _ in 0..5 {
            match start() {
                Ok(s) => return Ok(s),
                Err(e @ EtcdStartError::Spawn { .. }) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(EtcdStartError::NotReady { log: String::new() }))
    }

    fn try_start(
        durability: Durability,
        tls: Option<&ServingTls>,
        quota_bytes: Option<u64>,
    ) -> Result<Self, EtcdStartError> {
        let data = tempfile::Builder::new().prefix("corral-etcd-").tempdir()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", free_port()?);
        let peer = format!("http://127.0.0.1:{}", free_port()?);
        let metrics = format!("http://127.0.0.1:{}", free_port()?);
        let initial = format!("corral-test={peer}");
        let spec = MemberSpec {
            name: "corral-test",
            client: &client,
            peer: &peer,
            metrics: &metrics,
            initial_cluster: &initial,
            durability,
            tls,
            quota_bytes,
        };
        let mut child = spawn_member(&spec, data.path())?;
        if let Err(e) = wait_healthy(&mut child, &metrics, data.path()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(EtcdServer {
            child,
            endpoint: client,
            _data: data,
        })
    }

    /// The client URL (`http://127.0.0.1:PORT`, or `https://` with TLS).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The PID of the etcd process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A cluster of etcd members on loopback (no fsync), each stopped on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Option<EtcdServer>>,
    endpoints: Vec<String>,
}

impl EtcdCluster {
    /// Starts `size` members that form one cluster, and waits until each
    /// sees a leader.
    pub fn start(size: usize) -> Result<Self, EtcdStartError> {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(size) {
                Ok(c) => return Ok(c),
                Err(e @ EtcdStartError::Spawn { .. }) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(EtcdStartError::NotReady { log: String::new() }))
    }

    fn try_start(size: usize) -> Result<Self, EtcdStartError> {
        let urls = (0..size)
            .map(|_| {
                Ok((
                    format!("http://127.0.0.1:{}", free_port()?),
                    format!("http://127.0.0.1:{}", free_port()?),
                    format!("http://127.0.0.1:{}", free_port()?),
                ))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let initial = urls
            .iter()
            .enumerate()
            .map(|(i, (_, peer, _))| format!("m{i}={peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut started = Vec::new();
        for (i, (client, peer, metrics)) in urls.iter().enumerate() {
            let data = tempfile::Builder::new().prefix("corral-etcd-").tempdir()?;
            let name = format!("m{i}");
            let spec = MemberSpec {
                name: &name,
                client,
                peer,
                metrics,
                initial_cluster: &initial,
                durability: Durability::NoFsync,
                tls: None,
                quota_bytes: None,
            };
            let child = spawn_member(&spec, data.path())?;
            started.push((
                EtcdServer {
                    child,
                    endpoint: client.clone(),
                    _data: data,
                },
                metrics.clone(),
            ));
        }
        // A member is healthy once the cluster has elected a leader.
        for (member, metrics) in &mut started {
            let dir = member._data.path().to_owned();
            wait_healthy(&mut member.child, metrics, &dir)?;
        }
        let endpoints = urls.into_iter().map(|(c, _, _)| c).collect();
        Ok(EtcdCluster {
            members: started.into_iter().map(|(m, _)| Some(m)).collect(),
            endpoints,
        })
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Kills member `i` with SIGKILL (its data stays until the cluster is dropped).
    pub fn kill(&mut self, i: usize) {
        if let Some(Some(m)) = self.members.get_mut(i) {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
    }
}

/// One HTTP GET of `/health` over a plain socket (no client library needed).
fn health_ok(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
