//! The agent's endpoint: task stdout and stderr over HTTPS, for the API
//! server to proxy (`GET …/tasks/NAME/log`), so `corral logs` works from
//! anywhere without reaching the agent's machine; and the agent's metrics
//! (`GET /metrics`, see [`crate::metrics`]).
//!
//! - The agent makes itself a certificate at start and advertises its URL
//!   and the certificate's SHA-256 in its Node's `status.logEndpoint`; the API
//!   server pins that fingerprint (no CA is needed for the agent's side).
//! - Callers must present a client certificate signed by Corral's CA (the
//!   one in the agent's kubeconfig); anything else fails the TLS handshake.
//!   Each request is then authorized by the API server (a
//!   SubjectAccessReview, see [`corral_endpoint`]): `get` on the task's
//!   `log` subresource, or on the path `/metrics`. The API server's own
//!   certificate (`system:masters`) reads every log to proxy it; a tenant's
//!   certificate reads nothing here, even of its own tasks (it asks the
//!   API server, which authorizes it there).
//! - `GET /logs/<namespace>/<task>?stream=stdout|stderr&follow=true&tailLines=N`
//!   answers the task's output file, kept by the agent outside the task's
//!   sandbox (see [`crate::runtime::task_files_dir`]) and opened without
//!   following a link; with `follow` the response stays open and carries
//!   what the task writes until the caller goes away. `tailLines` reads
//!   the file backwards from its end, a block at a time, so a long log
//!   costs the agent no more memory than a short one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use corral_endpoint::{Access, Authorizer, Body, Caller, text};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::metrics::AgentMetrics;

/// How often a followed log is checked for growth.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// The most bytes sent in one chunk.
const CHUNK: usize = 64 * 1024;

/// Why the endpoint could not start.
pub use corral_endpoint::EndpointError as LogError;

/// A running endpoint (dropping it stops it).
pub type LogServer = corral_endpoint::Endpoint;

/// Starts serving `sandboxes` (and `metrics`) on `listen`, advertised under
/// `advertise_host` (default: the listen address's IP), to clients whose
/// certificates chain to `ca_pem`, each request authorized by `authorizer`.
pub async fn serve(
    listen: SocketAddr,
    advertise_host: Option<String>,
    ca_pem: &[u8],
    sandboxes: PathBuf,
    authorizer: Arc<Authorizer>,
    metrics: AgentMetrics,
) -> Result<LogServer, LogError> {
    let sandboxes = Arc::new(sandboxes);
    corral_endpoint::serve(listen, advertise_host, ca_pem, move |req, caller| {
        let (sandboxes, authorizer, metrics) =
            (sandboxes.clone(), authorizer.clone(), metrics.clone());
        async move { answer(&sandboxes, &authorizer, &metrics, req, caller).await }
    })
    .await
}

/// The answer to a caller the API server does not let read this.
fn forbidden(caller: &Caller, what: &str) -> Response<Body> {
    text(
        StatusCode::FORBIDDEN,
        &format!("user {:?} may not {what}", caller.user),
    )
}

/// A namespace or task name: DNS-1123 characters only, so it cannot leave
/// the sandboxes directory.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What a log request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    /// Keep the response open for new output.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
}

/// Parses `stream=…&follow=…&tailLines=…`.
pub fn parse_query(query: Option<&str>) -> Result<LogQuery, String> {
    let mut q = LogQuery {
        stream: "stdout",
        follow: false,
        tail_lines: None,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "stream" => {
                q.stream = match v {
                    "stdout" => "stdout",
                    "stderr" => "stderr",
                    other => return Err(format!("stream must be stdout or stderr, not {other:?}")),
                }
            }
            "follow" => q.follow = matches!(v, "true" | "1" | ""),
            "tailLines" => {
                q.tail_lines = Some(
                    v.parse()
                        .map_err(|_| format!("tailLines must be a number, not {v:?}"))?,
                )
            }
            _ => {}
        }
    }
    Ok(q)
}

/// Where the last `lines` lines of `file` start, read backwards from its
/// end a block at a time (a log of any size costs one block of memory).
pub async fn tail_start(file: &mut tokio::fs::File, lines: usize) -> std::io::Result<u64> {
    let len = file.metadata().await?.len();
    if lines == 0 {
        return Ok(len);
    }
    let mut end = len;
    let mut seen = 0;
    let mut block = vec![0u8; CHUNK];
    // A trailing newline ends the last line; it does not start another.
    let mut skip_last_newline = true;
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let n = usize::try_from(end - start).unwrap_or(CHUNK);
        file.seek(std::io::SeekFrom::Start(start)).await?;
        file.read_exact(&mut block[..n]).await?;
        for (i, b) in block[..n].iter().enumerate().rev() {
            if *b != b'\n' {
                skip_last_newline = false;
                continue;
            }
            if std::mem::take(&mut skip_last_newline) {
                continue;
            }
            seen += 1;
            if seen == lines {
                return Ok(start + i as u64 + 1);
            }
        }
        end = start;
    }
    Ok(0)
}

/// Where `tail` lines start in `content`.
pub fn tail_offset(content: &[u8], lines: usize) -> usize {
    if lines == 0 {
        return content.len();
    }
    // A trailing newline ends the last line; it does not start another.
    let body = content.strip_suffix(b"\n").unwrap_or(content);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == lines {
                return i + 1;
            }
        }
    }
    0
}

/// Opens a regular file for reading, refusing a link at its end.
async fn open_no_follow(path: &Path) -> std::io::Result<tokio::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = path.to_owned();
    let file = tokio::task::spawn_blocking(move || {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(path)
    })
    .await
    .map_err(std::io::Error::other)??;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(tokio::fs::File::from_std(file))
}

/// Answers one request: `GET /metrics`, or a task's log, for a caller the
/// API server lets read it (`get` on `/metrics`; `get` on the task's `log`
/// subresource).
async fn answer(
    sandboxes: &Path,
    authorizer: &Authorizer,
    metrics: &AgentMetrics,
    req: Request<Incoming>,
    caller: Caller,
) -> Response<Body> {
    if req.method() != http::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET");
    }
    let segs: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    if segs == ["metrics"] {
        if !authorizer
            .allows(&caller, &Access::Path("/metrics".into()))
            .await
        {
            return forbidden(&caller, "get path /metrics");
        }
        return match metrics.scrape() {
            Ok(body) => {
                let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                );
                r
            }
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed",
            ),
        };
    }
    let ["logs", ns, task] = segs.as_slice() else {
        return text(
            StatusCode::NOT_FOUND,
            "GET /logs/<namespace>/<task> or GET /metrics",
        );
    };
    if !is_name(ns) || !is_name(task) {
        return text(StatusCode::BAD_REQUEST, "invalid namespace or task name");
    }
    let access = Access::Subresource {
        group: "corral.dev".into(),
        resource: "tasks".into(),
        subresource: "log".into(),
        namespace: (*ns).to_owned(),
        name: (*task).to_owned(),
    };
    if !authorizer.allows(&caller, &access).await {
        return forbidden(&caller, &format!("get tasks/log {task} in namespace {ns}"));
    }
    let q = match parse_query(req.uri().query()) {
        Ok(q) => q,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    let path = crate::runtime::task_files_dir(sandboxes, &format!("{ns}/{task}")).join(q.stream);
    let Ok(mut file) = open_no_follow(&path).await else {
        return text(
            StatusCode::NOT_FOUND,
            &format!("no {} for task {ns}/{task} on this node", q.stream),
        );
    };
    let mut start = 0u64;
    if let Some(n) = q.tail_lines {
        match tail_start(&mut file, n).await {
            Ok(s) => start = s,
            Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "reading the log failed"),
        }
    }
    if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "reading the log failed");
    }
    let follow = q.follow;
    let chunks = futures::stream::unfold(Some(file), move |state| async move {
        let mut file = state?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            match file.read(&mut buf).await {
                Ok(0) if follow => tokio::time::sleep(FOLLOW_POLL).await,
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    buf.truncate(n);
                    return Some((
                        Ok::<_, Infallible>(Frame::data(Bytes::from(buf))),
                        Some(file),
                    ));
                }
            }
        }
    });
    let mut r = Response::new(BoxBody::new(StreamBody::new(chunks)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_query(Some("stream=stderr&follow=true&tailLines=5")),
            Ok(LogQuery {
                stream: "stderr",
                follow: true,
                tail_lines: Some(5)
            })
        );
        assert_eq!(parse_query(None).map(|q| q.stream), Ok("stdout"));
        assert!(parse_query(Some("stream=../etc")).is_err());
        assert!(parse_query(Some("tailLines=x")).is_err());
    }

    #[test]
    fn tails_start_at_the_right_line() {
        let log = b"a\nb\nc\n";
        assert_eq!(&log[tail_offset(log, 1)..], b"c\n");
        assert_eq!(&log[tail_offset(log, 2)..], b"b\nc\n");
        assert_eq!(&log[tail_offset(log, 9)..], b"a\nb\nc\n");
        assert_eq!(&log[tail_offset(log, 0)..], b"");
        assert_eq!(&b"a\nb"[tail_offset(b"a\nb", 1)..], b"b");
    }

    #[tokio::test]
    async fn tails_are_found_from_the_end_across_blocks() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log");
        // Lines longer than a block, and many of them.
        let long = "x".repeat(CHUNK + 10);
        let content = format!("first\n{long}\nthird\n{}", "y\n".repeat(3 * CHUNK));
        std::fs::write(&path, &content)?;
        let mut file = tokio::fs::File::open(&path).await?;
        for n in [
            0,
            1,
            5,
            3 * CHUNK,
            3 * CHUNK + 1,
            3 * CHUNK + 2,
            3 * CHUNK + 3,
            3 * CHUNK + 9,
        ] {
            let got = tail_start(&mut file, n).await?;
            assert_eq!(got, tail_offset(content.as_bytes(), n) as u64, "{n} lines");
        }
        std::fs::write(&path, "a\nb")?;
        let mut file = tokio::fs::File::open(&path).await?;
        assert_eq!(tail_start(&mut file, 1).await?, 2);
        Ok(())
    }

    #[tokio::test]
    async fn a_link_is_never_followed() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("secret"), "host file")?;
        std::os::unix::fs::symlink(dir.path().join("secret"), dir.path().join("stdout"))?;
        assert!(open_no_follow(&dir.path().join("stdout")).await.is_err());
        std::fs::create_dir(dir.path().join("stderr"))?;
        assert!(open_no_follow(&dir.path().join("stderr")).await.is_err());
        Ok(())
    }

    #[test]
    fn names_cannot_escape_the_sandboxes() {
        assert!(is_name("web-0-1"));
        for bad in ["", "..", "a/b", "a.b", "A"] {
            assert!(!is_name(bad), "{bad}");
        }
    }
}
