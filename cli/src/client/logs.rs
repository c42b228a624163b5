//! `corral logs TASK [-f] [--stderr] [--tail N]`: a task's output through
//! the API server's `log` subresource (the server proxies it from the
//! task's agent), so it works from anywhere the API server is reachable.
//!
//! With `-f` the output follows until the task ends (its phase turns
//! terminal), then whatever is still in flight is printed and the command
//! exits, as `kubectl logs -f` does when a container stops.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use corral_api::task::Task;
use futures::{AsyncReadExt, StreamExt};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::{Ctx, server_error};

/// How long output is still read after the task ended.
const DRAIN: Duration = Duration::from_secs(1);

/// `corral logs` options.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The task's name.
    pub task: String,
    /// Keep printing what the task writes, until it ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Its standard error instead of its standard output.
    #[arg(long)]
    pub stderr: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
}

/// The subresource URL for `args`.
pub fn log_url(ns: &str, args: &LogsArgs) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if args.follow {
        q.append_pair("follow", "true");
    }
    if args.stderr {
        q.append_pair("stream", "stderr");
    }
    if let Some(n) = args.tail {
        q.append_pair("tailLines", &n.to_string());
    }
    format!(
        "/apis/corral.dev/v1alpha1/namespaces/{ns}/tasks/{}/log?{}",
        args.task,
        q.finish()
    )
}

fn emit(bytes: &[u8]) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// Runs `corral logs`.
pub async fn run(ctx: &Ctx, args: &LogsArgs) -> Result<()> {
    let req = http::Request::get(log_url(&ctx.namespace, args)).body(Vec::new())?;
    let body = ctx.client.request_stream(req).await.map_err(server_error)?;
    let mut body = std::pin::pin!(body);
    let mut buf = vec![0u8; 64 * 1024];
    if !args.follow {
        loop {
            let n = body.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            emit(&buf[..n]);
        }
    }
    // Follow until the task's phase is terminal, then drain briefly.
    let tasks: Api<Task> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={}", args.task));
    let mut ended = std::pin::pin!(watcher(tasks, cfg).applied_objects().filter_map(
        |t| async move {
            let t = t.ok()?;
            t.status
                .as_ref()
                .is_some_and(|s| s.phase().is_terminal())
                .then_some(())
        }
    ));
    loop {
        tokio::select! {
            n = body.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                emit(&buf[..n]);
            }
            Some(()) = ended.next() => break,
        }
    }
    let deadline = tokio::time::Instant::now() + DRAIN;
    while let Ok(n) = tokio::time::timeout_at(deadline, body.read(&mut buf)).await {
        let n = n?;
        if n == 0 {
            break;
        }
        emit(&buf[..n]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_the_subresource_query() {
        let args = LogsArgs {
            task: "web-0-1".into(),
            follow: true,
            stderr: true,
            tail: Some(20),
        };
        assert_eq!(
            log_url("web", &args),
            "/apis/corral.dev/v1alpha1/namespaces/web/tasks/web-0-1/log?follow=true&stream=stderr&tailLines=20"
        );
    }
}
