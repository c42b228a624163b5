#!/usr/bin/env bash
# Starts or stops a private containerd for Corral's tests and `corral up`,
# with everything under one directory, and imports the test image.
#
#   scripts/containerd.sh start [DIR]   # prints CONTAINERD_ADDRESS=… CONTAINERD_PID=… then "ready"
#   scripts/containerd.sh stop [DIR]
#
# DIR defaults to /tmp/corral-containerd. `start` is idempotent: when the
# socket already answers, the daemon is left alone (the image is re-imported,
# which is cheap). containerd, runc and crun come from scripts/install-deps.sh.
set -euo pipefail

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cmd=${1:-}
dir=${2:-/tmp/corral-containerd}
namespace=${CORRAL_CONTAINERD_NAMESPACE:-corral}
image=${CORRAL_TEST_IMAGE:-docker.io/library/testbox:latest}

log() { printf 'containerd.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

sock=$dir/state/containerd.sock
# ctr retries a missing socket for seconds; look for the socket first.
answers() { [[ -S $sock ]] && ctr --address "$sock" version >/dev/null 2>&1; }

# crun, an OCI runtime faster than runc (`corral agent --oci-runtime crun`),
# refuses a hybrid cgroup host whose unified (v2) tree still holds
# controllers; on a fresh machine that is only hugetlb. Each such controller
# gets a v1 hierarchy of its own, as the other controllers have; runc and the
# agent are indifferent to where hugetlb is.
v1_for_crun() {
    local unified=/sys/fs/cgroup/unified c
    command -v crun >/dev/null || return 0
    [[ -r $unified/cgroup.controllers ]] || return 0
    for c in $(cat "$unified/cgroup.controllers"); do
        mountpoint -q "/sys/fs/cgroup/$c" && continue
        if ! { mkdir -p "/sys/fs/cgroup/$c" && mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"; }; then
            log "warning: cannot give the $c controller a cgroup v1 hierarchy; crun will refuse to run containers"
        fi
    done
}

start() {
    v1_for_crun
    for c in containerd ctr runc python3 busybox; do
        command -v "$c" >/dev/null || die "$c is missing; run scripts/install-deps.sh"
    done
    ((${#sock} < 108)) || die "socket path $sock is too long for a unix socket"
    mkdir -p "$dir"/{root,state,logs}
    if answers; then
        log "containerd already answers on $sock"
    else
        cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/root/opt"
TOML
        rm -f "$sock" "$sock.ttrpc"
        nohup setsid containerd --config "$dir/config.toml" >"$dir/logs/containerd.log" 2>&1 </dev/null &
        echo $! >"$dir/containerd.pid"
        for _ in $(seq 200); do
            answers && break
            kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null || { cat "$dir/logs/containerd.log" >&2; die "containerd exited"; }
            sleep 0.1
        done
        answers || { tail -20 "$dir/logs/containerd.log" >&2; die "containerd did not answer within 20 s"; }
    fi
    python3 "$repo_root/scripts/testbox-image.py" "$dir/testbox.tar" --name "$image" >&2
    ctr --address "$sock" -n "$namespace" images import "$dir/testbox.tar" >&2
    printf 'CONTAINERD_ADDRESS=%s\nCONTAINERD_PID=%s\nready\n' "$sock" "$(cat "$dir/containerd.pid" 2>/dev/null || echo unknown)"
}

stop() {
    if answers; then
        for ns in $(ctr --address "$sock" namespaces ls -q); do
            c=(ctr --address "$sock" -n "$ns")
            for t in $("${c[@]}" tasks ls -q); do "${c[@]}" tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1 || true; done
            for t in $("${c[@]}" tasks ls -q); do
                for _ in $(seq 50); do "${c[@]}" tasks delete -f "$t" >/dev/null 2>&1 && break; sleep 0.1; done
            done
            for ctrid in $("${c[@]}" containers ls -q); do "${c[@]}" containers rm "$ctrid" >/dev/null 2>&1 || true; done
        done
    fi
    if [[ -f $dir/containerd.pid ]]; then
        pid=$(cat "$dir/containerd.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        fi
        rm -f "$dir/containerd.pid"
    fi
    log "stopped"
}

case $cmd in
    start) start ;;
    stop) stop ;;
    *) die "usage: $0 start|stop [DIR]" ;;
esac
