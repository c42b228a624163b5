//! Health probes: one loop per running task that has a health check,
//! probing it every `periodSeconds` after `initialDelaySeconds` and sending
//! each result to the agent loop, which decides with
//! `corral_core::health` (see `supervise/probing.rs`).
//!
//! An HTTP check is a plain `GET` over HTTP/1.1 to `127.0.0.1:<port>` (the
//! task shares the node's network), passing on the expected status or any
//! of 200–399; a TCP check passes when a connection opens; an `exec` check
//! runs its command in the task through its runtime and passes on exit 0.
//! Every probe is bounded by `timeoutSeconds`. A probe costs a connection
//! or a process and no thread: one agent probes hundreds of tasks.

use std::sync::Arc;
use std::time::Duration;

use corral_api::health::{HealthCheck, MAX_OUTPUT};
use corral_api::job::ContainerSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::runtime::ContainerRuntime;

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    /// The task (`namespace/name`).
    pub key: String,
    /// The copy probed (its Task's uid).
    pub uid: Option<String>,
    /// Whether it passed.
    pub passed: bool,
    /// What it saw, for humans (a status line, an error, a command's output).
    pub output: String,
}

/// What a task's probe loop needs.
#[derive(Debug, Clone)]
pub struct Target {
    /// The task.
    pub key: String,
    /// Its uid.
    pub uid: Option<String>,
    /// Its check.
    pub check: HealthCheck,
    /// The host port its check names, if it names one.
    pub port: Option<u16>,
    /// Its container (for `exec`).
    pub container: ContainerSpec,
    /// The runtime running it (for `exec`).
    pub runtime: Arc<dyn ContainerRuntime>,
}

/// Starts probing `target`, sending results on `results`, until aborted
/// (or the agent loop is gone).
pub fn spawn(target: Target, results: mpsc::Sender<Probed>) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let check = &target.check;
        tokio::time::sleep(Duration::from_secs(u64::from(check.initial_delay_seconds))).await;
        let mut every =
            tokio::time::interval(Duration::from_secs(u64::from(check.period_seconds.max(1))));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let (passed, output) = probe(&target).await;
            let result = Probed {
                key: target.key.clone(),
                uid: target.uid.clone(),
                passed,
                output,
            };
            if results.send(result).await.is_err() {
                return;
            }
        }
    })
    .abort_handle()
}

/// Runs one probe of `target`.
pub async fn probe(target: &Target) -> (bool, String) {
    let check = &target.check;
    let timeout = Duration::from_secs(u64::from(check.timeout_seconds.max(1)));
    if let Some(exec) = &check.exec {
        return match target
            .runtime
            .exec(&target.key, &target.container, &exec.command, timeout)
            .await
        {
            Ok(out) => match out.code {
                Some(0) => (true, out.output),
                Some(code) => (false, format!("exit status {code}: {}", out.output)),
                None => (false, out.output),
            },
            Err(e) => (false, e.to_string()),
        };
    }
    let Some(port) = target.port else {
        return (false, "the port it checks was not assigned".into());
    };
    let probed = async {
        match &check.http {
            Some(h) => http_get(port, &h.path, h.expected_status).await,
            None => TcpStream::connect(("127.0.0.1", port))
                .await
                .map(|_| (true, format!("connected to port {port}")))
                .unwrap_or_else(|e| (false, format!("connecting to port {port}: {e}"))),
        }
    };
    tokio::time::timeout(timeout, probed)
        .await
        .unwrap_or_else(|_| (false, format!("no answer within {}s", timeout.as_secs())))
}

/// `GET path` on `127.0.0.1:port`: passes on `expected` (else 200–399).
async fn http_get(port: u16, path: &str, expected: Option<u16>) -> (bool, String) {
    let mut stream = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(s) => s,
        Err(e) => return (false, format!("connecting to port {port}: {e}")),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: corral-health/1\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return (false, format!("sending the request: {e}"));
    }
    // The status line and a little of what follows is all a check needs.
    let mut buf = vec![0u8; MAX_OUTPUT];
    let mut len = 0;
    while len < buf.len() {
        match stream.read(&mut buf[len..]).await {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if buf[..len].windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
            Err(e) => return (false, format!("reading the answer: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let line = head.lines().next().unwrap_or_default().trim().to_owned();
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        None => (false, format!("not an HTTP answer: {line:?}")),
        Some(code) => {
            let passed = match expected {
                Some(want) => code == want,
                None => (200..400).contains(&code),
            };
            (passed, format!("GET {path}: {line}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server answering every request with `status`.
    async fn serve(status: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        port
    }

    #[tokio::test]
    async fn http_checks_pass_on_the_expected_status_or_any_success() {
        let ok = serve("200 OK").await;
        let moved = serve("302 Found").await;
        let broken = serve("503 Service Unavailable").await;
        assert!(http_get(ok, "/health", None).await.0);
        assert!(http_get(moved, "/", None).await.0);
        let (passed, output) = http_get(broken, "/health", None).await;
        assert!(!passed);
        assert_eq!(output, "GET /health: HTTP/1.1 503 Service Unavailable");
        assert!(http_get(broken, "/", Some(503)).await.0);
        assert!(!http_get(ok, "/", Some(204)).await.0);
        // Nothing listening.
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let closed = l.local_addr().expect("addr").port();
        drop(l);
        let (passed, output) = http_get(closed, "/", None).await;
        assert!(!passed && output.contains("connecting to port"), "{output}");
    }

    #[tokio::test]
    async fn a_server_that_answers_garbage_fails() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"SSH-2.0-OpenSSH\r\n").await;
            }
        });
        let (passed, output) = http_get(port, "/", None).await;
        assert!(
            !passed && output.starts_with("not an HTTP answer"),
            "{output}"
        );
    }
}
