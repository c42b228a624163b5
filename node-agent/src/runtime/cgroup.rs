//! cgroup v1 groups: limits for the process runtime, and usage and OOM
//! readings for every real runtime.
//!
//! Corral's machines run cgroups in hybrid mode: the cpu, cpuacct, memory and
//! pids controllers are v1 hierarchies under `/sys/fs/cgroup/<controller>`,
//! and the unified tree has none of them. A task's group has the same
//! relative path in each controller: `corral/<id>` for the process runtime,
//! `<namespace>/<id>` for containerd (runc's cgroupfs placement).

use std::path::{Path, PathBuf};

use super::{CFS_PERIOD_US, Limits, Usage};

/// The controllers a task's group lives in.
pub const CONTROLLERS: [&str; 4] = ["cpu", "cpuacct", "memory", "pids"];

/// The default cgroup v1 mount root.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// One task's group across the v1 controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    root: PathBuf,
    path: String,
}

/// A cgroup operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: {what}: {source}")]
pub struct CgroupError {
    /// The file or directory.
    pub path: String,
    /// What was being done.
    pub what: &'static str,
    /// The underlying error.
    #[source]
    pub source: std::io::Error,
}

impl Cgroup {
    /// The group at `path` (relative, `corral/<id>`) under `root`.
    pub fn new(root: impl Into<PathBuf>, path: impl Into<String>) -> Self {
        Self {
            root: root.into(),
            path: path.into().trim_matches('/').to_owned(),
        }
    }

    /// True when the memory, cpu and pids v1 controllers are mounted under `root`.
    pub fn available(root: &Path) -> bool {
        ["cpu", "memory", "pids"]
            .iter()
            .all(|c| root.join(c).join("cgroup.procs").exists())
    }

    /// The group's directory in `controller`.
    pub fn dir(&self, controller: &str) -> PathBuf {
        self.root.join(controller).join(&self.path)
    }

    fn write(&self, controller: &str, file: &str, value: &str) -> Result<(), CgroupError> {
        let p = self.dir(controller).join(file);
        std::fs::write(&p, value).map_err(|source| CgroupError {
            path: p.display().to_string(),
            what: "write",
            source,
        })
    }

    fn read(&self, controller: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(controller).join(file)).ok()
    }

    /// Creates the group in every controller and sets `limits`.
    pub fn create(&self, limits: &Limits) -> Result<(), CgroupError> {
        for c in CONTROLLERS {
            let d = self.dir(c);
            std::fs::create_dir_all(&d).map_err(|source| CgroupError {
                path: d.display().to_string(),
                what: "create",
                source,
            })?;
        }
        if let Some(quota) = limits.cfs_quota_us() {
            self.write("cpu", "cpu.cfs_period_us", &CFS_PERIOD_US.to_string())?;
            self.write("cpu", "cpu.cfs_quota_us", &quota.to_string())?;
        }
        if let Some(bytes) = limits.memory_bytes {
            self.write("memory", "memory.limit_in_bytes", &bytes.to_string())?;
        }
        if let Some(pids) = limits.pids {
            self.write("pids", "pids.max", &pids.to_string())?;
        }
        Ok(())
    }

    /// The shell words that move the current shell into the group; `exec`
    /// after them keeps the task inside it from its first instruction.
    pub fn join_script(&self) -> String {
        CONTROLLERS
            .iter()
            .map(|c| format!("echo $$ > '{}/cgroup.procs'", self.dir(c).display()))
            .collect::<Vec<_>>()
            .join(" && ")
    }

    /// CPU time and memory in use, when the group exists.
    pub fn usage(&self) -> Option<Usage> {
        let num = |c: &str, f: &str| self.read(c, f)?.trim().parse::<u64>().ok();
        Some(Usage {
            cpu_nanos: num("cpuacct", "cpuacct.usage")?,
            memory_bytes: num("memory", "memory.usage_in_bytes")?,
        })
    }

    /// How many times the kernel's OOM killer fired in this group.
    pub fn oom_kills(&self) -> u64 {
        self.read("memory", "memory.oom_control")
            .and_then(|s| parse_oom_kills(&s))
            .unwrap_or(0)
    }

    /// The memory limit in force, in bytes.
    pub fn memory_limit(&self) -> Option<u64> {
        self.read("memory", "memory.limit_in_bytes")?
            .trim()
            .parse()
            .ok()
    }

    /// True while any process is in the group.
    pub fn has_processes(&self) -> bool {
        self.read("pids", "cgroup.procs")
            .is_some_and(|s| !s.trim().is_empty())
    }

    /// Removes the group from every controller (it must be empty).
    pub fn remove(&self) {
        for c in CONTROLLERS {
            let _ = std::fs::remove_dir(self.dir(c));
        }
    }
}

/// The `oom_kill N` line of `memory.oom_control`.
fn parse_oom_kills(oom_control: &str) -> Option<u64> {
    oom_control.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == "oom_kill").then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_are_read_from_oom_control() {
        assert_eq!(
            parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            Some(2)
        );
        assert_eq!(parse_oom_kills("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    #[test]
    fn a_group_writes_its_limits_into_each_controller() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let cg = Cgroup::new(root.path(), "/corral/ns.t/");
        cg.create(&Limits {
            cpu_millis: Some(500),
            memory_bytes: Some(64 << 20),
            pids: Some(100),
        })?;
        let read = |c: &str, f: &str| std::fs::read_to_string(cg.dir(c).join(f));
        assert_eq!(read("cpu", "cpu.cfs_quota_us")?, "50000");
        assert_eq!(read("cpu", "cpu.cfs_period_us")?, "100000");
        assert_eq!(read("memory", "memory.limit_in_bytes")?, "67108864");
        assert_eq!(read("pids", "pids.max")?, "100");
        assert_eq!(cg.memory_limit(), Some(64 << 20));
        assert!(
            cg.join_script()
                .contains("/memory/corral/ns.t/cgroup.procs")
        );
        std::fs::write(cg.dir("cpuacct").join("cpuacct.usage"), "1500\n")?;
        std::fs::write(cg.dir("memory").join("memory.usage_in_bytes"), "4096\n")?;
        assert_eq!(
            cg.usage(),
            Some(Usage {
                cpu_nanos: 1500,
                memory_bytes: 4096
            })
        );
        Ok(())
    }
}
