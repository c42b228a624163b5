//! The seccomp filter of every container that is not unconfined: the
//! syscalls Docker's default profile singles out as refused to containers
//! (kernel modules and kexec, mounts and namespaces, tracing and reading
//! other processes, keyrings, BPF and perf, clocks, swap, reboot, quotas,
//! NUMA memory policy, obsolete calls) and io_uring, whose rings have been
//! a way around such filters, fail with EPERM; everything else is allowed.
//! Most of those also need a capability tasks lack; the filter holds even
//! for root.
//!
//! A deny list, where containerd's default profile allows a list and
//! refuses the rest (so that a syscall added to a later kernel is refused
//! until listed): the OCI runtime compiles the filter at every start, and
//! an allow list of the ~300 syscalls of Linux 6.1 costs 5 to 8 ms a start
//! on the reference machine against a fraction of a millisecond for this
//! list (the containerd bench, 100 starts each, same run), past the 5 ms a
//! start the isolation may cost. Names the kernel or libseccomp does not
//! know are skipped by the OCI runtime.

use serde_json::{Value, json};

/// Syscalls a container may not make, refused with EPERM.
pub const BLOCKED: &[&str] = &[
    "_sysctl",
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "fanotify_init",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "migrate_pages",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pidfd_getfd",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "set_mempolicy",
    "set_mempolicy_home_node",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "syslog",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
    "vm86",
    "vm86old",
];

/// The OCI `linux.seccomp` section.
pub fn profile() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": BLOCKED, "action": "SCMP_ACT_ERRNO", "errnoRet": nix::libc::EPERM},
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calls_containers_have_no_business_making_are_refused() {
        let p = profile();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ALLOW");
        let refused = p["syscalls"][0]["names"].as_array().expect("names");
        for call in [
            "mount",
            "unshare",
            "setns",
            "ptrace",
            "bpf",
            "init_module",
            "kexec_load",
            "io_uring_setup",
            "keyctl",
            "perf_event_open",
        ] {
            assert!(refused.iter().any(|r| r == call), "{call}");
        }
        for call in ["read", "write", "openat", "clone", "execve", "futex"] {
            assert!(!BLOCKED.contains(&call), "{call}");
        }
    }
}
