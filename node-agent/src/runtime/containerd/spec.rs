//! The OCI runtime spec of a task's container, and what its user
//! namespace needs: runc's defaults with the task's process, user, limits,
//! cgroup, sandbox, network, seccomp filter and root filesystem.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use containerd_client::types::Mount;
use corral_api::job::NetworkMode;
use serde_json::{Value, json};

use super::SANDBOX_MOUNT;

/// How many ids a task's user namespace maps.
pub(super) const USERNS_SIZE: u32 = 65_536;

/// Whether this kernel lets root make user namespaces.
pub fn user_namespaces_allowed() -> bool {
    std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|n| n.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// Makes the points the runtime mounts on in a snapshot's writable layer,
/// where the image lacks them: inside a user namespace the image's
/// directories are not root's to write, so the runtime could not make them.
pub(super) fn mount_points(upper: &Path, network: NetworkMode) -> std::io::Result<()> {
    std::fs::create_dir_all(upper.join(SANDBOX_MOUNT.trim_start_matches('/')))?;
    if network == NetworkMode::Host {
        std::fs::create_dir_all(upper.join("etc"))?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(upper.join("etc/resolv.conf"))?;
    }
    Ok(())
}

/// Gives a task a user namespace: its ids 0–65535 are the host's
/// `base`–`base + 65535`, so a process that escapes its container is
/// nobody on the host. The image's files, owned by the host's root, are
/// nobody's inside (readable as their mode says); on the host's network,
/// which the namespace does not own, `/sys` is the host's, bound read-only,
/// since a sysfs of its own cannot be mounted there.
pub(super) fn with_user_namespace(spec: &mut Value, base: u32, network: NetworkMode) {
    let map = json!([{"containerID": 0, "hostID": base, "size": USERNS_SIZE}]);
    let linux = &mut spec["linux"];
    if let Some(ns) = linux["namespaces"].as_array_mut() {
        ns.push(json!({"type": "user"}));
    }
    linux["uidMappings"] = map.clone();
    linux["gidMappings"] = map;
    if network == NetworkMode::Host
        && let Some(mounts) = spec["mounts"].as_array_mut()
        && let Some(sys) = mounts.iter_mut().find(|m| m["destination"] == "/sys")
    {
        *sys = json!({"destination": "/sys", "type": "none", "source": "/sys",
                      "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
    }
}

/// The directory a snapshot's writes go to: an overlay's `upperdir` (a
/// bind-mounted snapshot is written in place: its source).
pub(super) fn upper_of(mounts: &[Mount]) -> Option<PathBuf> {
    mounts.iter().find_map(|m| match m.r#type.as_str() {
        "overlay" => m
            .options
            .iter()
            .find_map(|o| o.strip_prefix("upperdir="))
            .map(PathBuf::from),
        "bind" => Some(PathBuf::from(&m.source)),
        _ => None,
    })
}

/// What a task's OCI spec is made of.
pub(super) struct SpecParts<'a> {
    pub(super) args: Vec<String>,
    pub(super) env: Vec<String>,
    pub(super) cwd: String,
    pub(super) hostname: String,
    pub(super) limits: &'a crate::runtime::Limits,
    pub(super) cgroups_path: &'a str,
    pub(super) sandbox: &'a Path,
    pub(super) network: NetworkMode,
    pub(super) read_only_root: bool,
    /// With [`crate::runtime::seccomp`]'s filter (else unconfined).
    pub(super) filtered: bool,
}

/// The OCI runtime spec: runc's defaults (namespaces, capabilities, masked
/// paths, `/proc` and `/dev` mounts) with the task's process, limits, cgroup
/// and sandbox, and the host's network namespace, or with `NetworkMode::None`
/// a namespace of its own (the OCI runtime brings its loopback up).
pub(super) fn oci_spec(parts: SpecParts<'_>) -> Value {
    let SpecParts {
        args,
        env,
        cwd,
        hostname,
        limits,
        cgroups_path,
        sandbox,
        network,
        read_only_root,
        filtered,
    } = parts;
    let mut spec =
        serde_json::to_value(oci_spec::runtime::Spec::default()).unwrap_or_else(|_| json!({}));
    spec["root"] = json!({"path": "rootfs", "readonly": read_only_root});
    spec["hostname"] = json!(hostname);
    let process = &mut spec["process"];
    process["args"] = json!(args);
    process["env"] = json!(env);
    process["cwd"] = json!(cwd);
    process["terminal"] = json!(false);
    // Pod Security "restricted": no new privileges, and no capability but
    // binding low ports (runc's defaults add CAP_KILL and CAP_AUDIT_WRITE).
    process["noNewPrivileges"] = json!(true);
    let caps = json!(["CAP_NET_BIND_SERVICE"]);
    process["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps,
        "inheritable": [], "ambient": [],
    });
    let mut resources = json!({});
    if let Some(quota) = limits.cfs_quota_us() {
        resources["cpu"] = json!({"quota": quota, "period": crate::runtime::CFS_PERIOD_US});
    }
    if let Some(bytes) = limits.memory_bytes {
        resources["memory"] = json!({"limit": bytes});
    }
    if let Some(pids) = limits.pids {
        resources["pids"] = json!({"limit": pids});
    }
    let linux = &mut spec["linux"];
    if filtered {
        linux["seccomp"] = crate::runtime::seccomp::profile();
    }
    linux["resources"] = resources;
    linux["cgroupsPath"] = json!(cgroups_path);
    if network == NetworkMode::Host
        && let Some(ns) = linux["namespaces"].as_array_mut()
    {
        ns.retain(|n| n["type"] != "network");
    }
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        mounts.push(json!({"destination": SANDBOX_MOUNT, "type": "bind", "source": sandbox, "options": ["rbind", "rw"]}));
        // Host networking needs the host's name resolution.
        if network == NetworkMode::Host && Path::new("/etc/resolv.conf").exists() {
            mounts.push(json!({"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["rbind", "ro"]}));
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Limits;

    fn parts(network: NetworkMode) -> SpecParts<'static> {
        SpecParts {
            args: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            hostname: "t1".into(),
            limits: &Limits {
                cpu_millis: Some(500),
                memory_bytes: Some(64 << 20),
                pids: Some(100),
            },
            cgroups_path: "/corral/ns.t1",
            sandbox: Path::new("/var/lib/corral/sandboxes/ns.t1"),
            network,
            read_only_root: false,
            filtered: true,
        }
    }

    #[test]
    fn a_user_namespace_maps_ids_and_binds_the_hosts_sys_on_its_network() -> std::io::Result<()> {
        for network in [NetworkMode::Host, NetworkMode::None] {
            let mut spec = oci_spec(parts(network));
            with_user_namespace(&mut spec, 100_000, network);
            let ns = spec["linux"]["namespaces"].as_array().expect("namespaces");
            assert!(ns.iter().any(|n| n["type"] == "user"));
            let map = json!([{"containerID": 0, "hostID": 100_000, "size": 65_536}]);
            assert_eq!(spec["linux"]["uidMappings"], map);
            assert_eq!(spec["linux"]["gidMappings"], map);
            let sys = spec["mounts"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["destination"] == "/sys").cloned())
                .expect("/sys");
            let bound = sys["type"] == "none" && sys["source"] == "/sys";
            assert_eq!(bound, network == NetworkMode::Host, "{network:?}: {sys}");
        }
        // The points the runtime mounts on exist in the writable layer.
        let upper = tempfile::tempdir()?;
        mount_points(upper.path(), NetworkMode::Host)?;
        assert!(upper.path().join("mnt/sandbox").is_dir());
        assert!(upper.path().join("etc/resolv.conf").is_file());
        Ok(())
    }

    #[test]
    fn an_unconfined_task_has_no_seccomp_filter() {
        let spec = oci_spec(SpecParts {
            filtered: false,
            ..parts(NetworkMode::Host)
        });
        assert!(spec["linux"].get("seccomp").is_none());
    }

    #[test]
    fn a_task_without_network_gets_a_namespace_of_its_own_and_no_resolver() {
        let spec = oci_spec(parts(NetworkMode::None));
        let ns = spec["linux"]["namespaces"].as_array().expect("namespaces");
        assert!(
            ns.iter()
                .any(|n| n["type"] == "network" && n.get("path").is_none())
        );
        let mounts = spec["mounts"].as_array().expect("mounts");
        assert!(
            mounts
                .iter()
                .all(|m| m["destination"] != "/etc/resolv.conf")
        );
    }

    #[test]
    fn the_spec_carries_limits_cgroup_sandbox_and_host_network() {
        let spec = oci_spec(parts(NetworkMode::Host));
        assert_eq!(spec["process"]["args"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(spec["root"], json!({"path": "rootfs", "readonly": false}));
        let r = &spec["linux"]["resources"];
        assert_eq!(r["cpu"], json!({"quota": 50000, "period": 100000}));
        assert_eq!(r["memory"]["limit"], json!(64 << 20));
        assert_eq!(r["pids"]["limit"], json!(100));
        assert_eq!(spec["linux"]["cgroupsPath"], json!("/corral/ns.t1"));
        let ns = spec["linux"]["namespaces"].as_array().expect("namespaces");
        assert!(ns.iter().all(|n| n["type"] != "network"));
        assert!(ns.iter().any(|n| n["type"] == "pid"));
        let mounts = spec["mounts"].as_array().expect("mounts");
        assert!(
            mounts
                .iter()
                .any(|m| m["destination"] == SANDBOX_MOUNT && m["type"] == "bind")
        );
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(
                spec["process"]["capabilities"][set],
                json!(["CAP_NET_BIND_SERVICE"]),
                "{set}: restricted, as Pod Security's restricted level"
            );
        }
        assert_eq!(spec["process"]["capabilities"]["ambient"], json!([]));
        assert_eq!(spec["process"]["noNewPrivileges"], json!(true));
        let filter = &spec["linux"]["seccomp"];
        assert_eq!(filter["defaultAction"], "SCMP_ACT_ALLOW");
        let blocked = filter["syscalls"][0]["names"].as_array().expect("names");
        for call in [
            "mount",
            "unshare",
            "setns",
            "ptrace",
            "bpf",
            "init_module",
            "kexec_load",
        ] {
            assert!(blocked.iter().any(|b| b == call), "{call} is blocked");
        }
    }
}
