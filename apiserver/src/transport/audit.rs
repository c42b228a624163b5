//! The audit log, as kube-apiserver writes it: for each request the policy
//! ([`policy`]) selects, `audit.k8s.io/v1` Events as JSON lines — who
//! (the authenticated user, and whom they impersonated), what (verb, object,
//! URI), from where, the authorization decision, the answer's code and, by
//! level, the request's and the response's bodies — at the stages the
//! policy keeps: `RequestReceived` once the request is known,
//! `ResponseStarted` for a watch or followed log, `ResponseComplete` when
//! it ends. Refused requests are recorded with their code, like any other.
//!
//! The log is a file (`--audit-log-path`, or `-` for standard output),
//! 0600, rotated by size: past `--audit-log-maxsize` megabytes it is
//! renamed `NAME-TIMESTAMP.EXT` and a new one begun, keeping the newest
//! `--audit-log-maxbackup` of those. A write that fails is reported in the
//! server's own log; the request it records is not failed for it.

pub mod policy;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

pub use policy::{Level, Policy, Stage};

use crate::transport::auth::{Attributes, User};

/// Where events go, and how the file is kept.
#[derive(Debug)]
pub struct AuditLog {
    target: Target,
    max_bytes: u64,
    max_backups: usize,
    written: u64,
}

#[derive(Debug)]
enum Target {
    Stdout,
    File { path: PathBuf, file: std::fs::File },
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct LogError {
    path: String,
    #[source]
    source: std::io::Error,
}

fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl AuditLog {
    /// Opens `path` (`-`: standard output) for appending; `max_megabytes`
    /// 0 never rotates; `max_backups` 0 keeps every rotated file.
    pub fn open(path: &Path, max_megabytes: u64, max_backups: usize) -> Result<Self, LogError> {
        let err = |source| LogError {
            path: path.display().to_string(),
            source,
        };
        let target = if path == Path::new("-") {
            Target::Stdout
        } else {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            Target::File {
                path: path.to_owned(),
                file: open_private(path).map_err(err)?,
            }
        };
        let written = match &target {
            Target::File { file, .. } => file.metadata().map(|m| m.len()).unwrap_or(0),
            Target::Stdout => 0,
        };
        Ok(AuditLog {
            target,
            max_bytes: max_megabytes.saturating_mul(1024 * 1024),
            max_backups,
            written,
        })
    }

    /// Appends one event as a line, rotating first when it would pass the size.
    pub fn write(&mut self, event: &Value) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let len = line.len() as u64;
        if self.max_bytes > 0 && self.written > 0 && self.written + len > self.max_bytes {
            self.rotate()?;
        }
        match &mut self.target {
            Target::Stdout => std::io::stdout().lock().write_all(&line)?,
            Target::File { file, .. } => file.write_all(&line)?,
        }
        self.written += len;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let Target::File { path, file } = &mut self.target else {
            return Ok(());
        };
        file.flush()?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = path
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        let stamp = jiff::Timestamp::now().strftime("%Y-%m-%dT%H-%M-%S%.3f");
        let backup = path.with_file_name(format!("{stem}-{stamp}{ext}"));
        std::fs::rename(&*path, &backup)?;
        *file = open_private(path)?;
        self.written = 0;
        if self.max_backups > 0 {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let prefix = format!("{stem}-");
            let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().is_some_and(|n| {
                        let n = n.to_string_lossy();
                        n.starts_with(&prefix) && n.ends_with(&ext) && n.len() > prefix.len()
                    })
                })
                .collect();
            // The timestamps sort as text.
            backups.sort();
            let excess = backups.len().saturating_sub(self.max_backups);
            for old in &backups[..excess] {
                std::fs::remove_file(old)?;
            }
        }
        Ok(())
    }
}

/// The policy and the log, shared by every request.
#[derive(Debug)]
pub struct Auditor {
    policy: Policy,
    log: Mutex<AuditLog>,
}

impl Auditor {
    /// Audits by `policy` into `log`.
    pub fn new(policy: Policy, log: AuditLog) -> Arc<Self> {
        Arc::new(Auditor {
            policy,
            log: Mutex::new(log),
        })
    }

    fn write(&self, event: &Value) {
        let result = match self.log.lock() {
            Ok(mut log) => log.write(event),
            Err(_) => Err(std::io::Error::other("the audit log's lock was poisoned")),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "writing the audit log failed");
        }
    }
}

/// What one request has shown of itself so far.
#[derive(Debug, Default)]
struct Seen {
    user: Option<User>,
    impersonated: Option<User>,
    attrs: Option<Attributes>,
    decision: Option<bool>,
    level: Option<(Level, Vec<Stage>)>,
    request_object: Option<Value>,
    received_logged: bool,
}

/// One request's audit record, filled in as the request is worked on and
/// written at its stages (cloned into the request's extensions).
#[derive(Debug, Clone)]
pub struct Record {
    auditor: Arc<Auditor>,
    id: String,
    received: jiff::Timestamp,
    uri: String,
    method: String,
    source_ip: String,
    user_agent: Option<String>,
    seen: Arc<Mutex<Seen>>,
}

fn user_info(u: &User) -> Value {
    json!({"username": u.name, "groups": u.groups})
}

fn micro(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl Record {
    /// A record of a request just received.
    pub fn new(
        auditor: Arc<Auditor>,
        uri: String,
        method: &http::Method,
        source_ip: std::net::IpAddr,
        user_agent: Option<String>,
    ) -> Self {
        Record {
            auditor,
            id: uuid::Uuid::new_v4().to_string(),
            received: jiff::Timestamp::now(),
            uri,
            method: method.as_str().to_lowercase(),
            source_ip: source_ip.to_string(),
            user_agent,
            seen: Arc::new(Mutex::new(Seen::default())),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> Option<T> {
        self.seen.lock().ok().map(|mut s| f(&mut s))
    }

    /// The authenticated user, and whom it acts as when impersonating.
    pub fn user(&self, authenticated: &User, effective: &User) {
        self.with(|s| {
            s.user = Some(authenticated.clone());
            s.impersonated = (authenticated != effective).then(|| effective.clone());
        });
    }

    /// What the request asks, for resource requests.
    pub fn attributes(&self, attrs: &Attributes) {
        self.with(|s| s.attrs = Some(attrs.clone()));
    }

    /// The authorization decision.
    pub fn decision(&self, allowed: bool) {
        self.with(|s| s.decision = Some(allowed));
        self.request_received();
    }

    /// Keeps the request's body, when the level records it.
    pub fn request_body(&self, body: &[u8]) {
        if self.level().0 < Level::Request {
            return;
        }
        let object = serde_json::from_slice::<Value>(body)
            .unwrap_or_else(|_| json!({"bodyBytes": body.len(), "note": "not JSON"}));
        self.with(|s| s.request_object = Some(object));
    }

    /// The level and the stages left out, decided once what the request
    /// is has been learned (the policy sees the acting user).
    fn level(&self) -> (Level, Vec<Stage>) {
        let policy = &self.auditor.policy;
        let path = self.uri.split('?').next().unwrap_or_default().to_owned();
        let method = self.method.clone();
        self.with(|s| {
            if let Some(l) = &s.level {
                return l.clone();
            }
            let user = s.impersonated.as_ref().or(s.user.as_ref());
            let verb = s
                .attrs
                .as_ref()
                .map_or(method.as_str(), |a| a.verb.as_str());
            let l = policy.level(&policy::Facts {
                user,
                verb,
                resource: s.attrs.as_ref(),
                path: &path,
            });
            // Once the request's identity is known, the level is settled.
            if s.user.is_some() {
                s.level = Some(l.clone());
            }
            l
        })
        .unwrap_or((Level::None, Vec::new()))
    }

    fn event(
        &self,
        stage: Stage,
        level: Level,
        code: Option<(u16, Option<&Value>)>,
        response: Option<&Value>,
    ) -> Value {
        let s = self.seen.lock();
        let Ok(s) = s else {
            return Value::Null;
        };
        let mut e = json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1",
            "level": level.name(), "auditID": self.id, "stage": stage.name(),
            "requestURI": self.uri,
            "verb": s.attrs.as_ref().map_or(self.method.as_str(), |a| a.verb.as_str()),
            "user": s.user.as_ref().map_or(json!({}), user_info),
            "sourceIPs": [self.source_ip],
            "requestReceivedTimestamp": micro(self.received),
            "stageTimestamp": micro(jiff::Timestamp::now()),
        });
        if let Some(u) = &s.impersonated {
            e["impersonatedUser"] = user_info(u);
        }
        if let Some(ua) = &self.user_agent {
            e["userAgent"] = json!(ua);
        }
        if let Some(a) = &s.attrs {
            let mut o = json!({"resource": a.resource, "apiGroup": a.group});
            for (k, v) in [
                ("namespace", &a.namespace),
                ("name", &a.name),
                ("subresource", &a.subresource),
            ] {
                if let Some(v) = v {
                    o[k] = json!(v);
                }
            }
            e["objectRef"] = o;
        }
        if let Some(allowed) = s.decision {
            e["annotations"] =
                json!({"authorization.k8s.io/decision": if allowed { "allow" } else { "forbid" }});
        }
        if let Some((code, status)) = code {
            let mut rs = json!({"metadata": {}, "code": code});
            if let Some(st) = status {
                for k in ["status", "message", "reason"] {
                    if let Some(v) = st.get(k) {
                        rs[k] = v.clone();
                    }
                }
            }
            e["responseStatus"] = rs;
        }
        if level >= Level::Request
            && let Some(o) = &s.request_object
        {
            e["requestObject"] = o.clone();
        }
        if level >= Level::RequestResponse
            && let Some(r) = response
        {
            e["responseObject"] = r.clone();
        }
        e
    }

    fn emit(&self, stage: Stage, code: Option<(u16, Option<&Value>)>, response: Option<&Value>) {
        let (level, omit) = self.level();
        if level == Level::None || omit.contains(&stage) {
            return;
        }
        let event = self.event(stage, level, code, response);
        if !event.is_null() {
            self.auditor.write(&event);
        }
    }

    /// Records `RequestReceived` (once), when the policy keeps it.
    pub fn request_received(&self) {
        let first = self.with(|s| !std::mem::replace(&mut s.received_logged, true));
        if first == Some(true) {
            self.emit(Stage::RequestReceived, None, None);
        }
    }

    /// True when the level records response bodies.
    pub fn wants_response(&self) -> bool {
        self.level().0 >= Level::RequestResponse
    }

    /// Records a long-running response's start.
    pub fn response_started(&self, code: u16) {
        self.request_received();
        self.emit(Stage::ResponseStarted, Some((code, None)), None);
    }

    /// Records the response: its code, the Status of a failure, and the
    /// body when the level keeps it.
    pub fn response_complete(&self, code: u16, status: Option<&Value>, body: Option<&Value>) {
        self.request_received();
        self.emit(Stage::ResponseComplete, Some((code, status)), body);
    }
}

#[cfg(test)]
mod tests;
