//! Test support: a real, throwaway etcd on loopback.
//!
//! [`EtcdServer::start`] runs the `etcd` binary (or `$CORRAL_TEST_ETCD_BIN`) on
//! two free ports with its data in a temporary directory, waits until it
//! answers, and kills it (by PID) when dropped. `ETCD_*` variables are removed
//! from its environment because etcd reads them as flags.

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

impl EtcdServer {
    /// Starts a single-member etcd with fsync on.
    pub fn start() -> Result<Self, EtcdStartError> {
        Self::start_with(Durability::Fsync)
    }

    /// Starts a single-member etcd.
    pub fn start_with(durability: Durability) -> Result<Self, EtcdStartError> {
        let mut last = None;
        // Ports are chosen then bound by etcd: retry the small race.
        for _ in 0..5 {
            match Self::try_start(durability) {
                Ok(s) => return Ok(s),
                Err(e @ EtcdStartError::Spawn { .. }) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(EtcdStartError::NotReady { log: String::new() }))
    }

    fn try_start(durability: Durability) -> Result<Self, EtcdStartError> {
        let bin = std::env::var("CORRAL_TEST_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned());
        let data = tempfile::Builder::new().prefix("corral-etcd-").tempdir()?;
        let client = format!("http://127.0.0.1:{}", free_port()?);
        let peer = format!("http://127.0.0.1:{}", free_port()?);
        let log_path = data.path().join("etcd.log");
        let log = std::fs::File::create(&log_path)?;
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
            .arg("corral-test")
            .arg("--data-dir")
            .arg(data.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .arg("--initial-cluster")
            .arg(format!("corral-test={peer}"))
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
        if durability == Durability::NoFsync {
            cmd.arg("--unsafe-no-fsync");
        }
        let child = cmd
            .spawn()
            .map_err(|source| EtcdStartError::Spawn { bin, source })?;
        let mut server = EtcdServer {
            child,
            endpoint: client,
            _data: data,
        };
        server.wait_ready(&log_path)?;
        Ok(server)
    }

    /// Polls the client port until etcd has a leader (a `/health` of true).
    fn wait_ready(&mut self, log_path: &PathBuf) -> Result<(), EtcdStartError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = self.endpoint.trim_start_matches("http://").to_owned();
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if health_ok(&addr) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        Err(EtcdStartError::NotReady { log })
    }

    /// The client URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The PID of the etcd process.
    pub fn pid(&self) -> u32 {
        self.child.id()
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
