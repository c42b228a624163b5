#!/usr/bin/env bash
# Corral's main job, the README's "run" command: installs what it needs,
# builds `corral`, starts a private containerd (under $CORRAL_HOME/containerd)
# with the examples' images built locally, then `corral up` (the API server
# over the embedded store in $CORRAL_HOME, default ~/.corral, every
# controller, and an agent for this machine), applies the examples, shows the
# tasks and the cluster's allocation, and keeps serving until Ctrl-C. The
# store keeps everything: running it again resumes the same cluster.
#
#   bash scripts/run.sh
#   CORRAL_RUN_ONCE=1 bash scripts/run.sh                     # stop after showing them
#   CORRAL_STORE=etcd://127.0.0.1:2379 bash scripts/run.sh     # an etcd you run
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

bash scripts/install-deps.sh
bash scripts/install-tools.sh
cargo build --locked --release -p corral-cli
corral=${CARGO_TARGET_DIR:-$PWD/target}/release/corral
kubectl=$PWD/.tools/bin/kubectl-1.32.3
home=${CORRAL_HOME:-$HOME/.corral}
listen=${CORRAL_LISTEN:-127.0.0.1:6443}
mkdir -p "$home"
export KUBECONFIG=$home/kubeconfig

"$corral" validate -f examples/

# containerd with the examples' images (one busybox image under their names;
# there is no registry to pull from).
ctd_dir=$home/containerd
eval "$(bash scripts/containerd.sh start "$ctd_dir" | grep '^CONTAINERD_ADDRESS=')"
for name in docker.io/library/busybox:1.36 docker.io/library/sparkie:image; do
    ctr --address "$CONTAINERD_ADDRESS" -n corral images rm "$name" >/dev/null 2>&1 || true
    ctr --address "$CONTAINERD_ADDRESS" -n corral images tag docker.io/library/testbox:latest "$name" >/dev/null
done

rm -f "$home/kubeconfig"
# The node offers what this machine has (2 CPUs are enough for the examples),
# or CORRAL_RESOURCES (`cpus=8,memory=32Gi,disk=100Gi`).
"$corral" up --home "$home" --listen "$listen" --containerd-address "$CONTAINERD_ADDRESS" \
    ${CORRAL_RESOURCES:+--resources "$CORRAL_RESOURCES"} &
up=$!
stop() {
    # `corral down` stops corral up and the tasks it started, then containerd goes.
    "$corral" down --home "$home" --containerd-address "$CONTAINERD_ADDRESS" || kill -INT "$up" 2>/dev/null || true
    wait "$up" 2>/dev/null || true
    bash scripts/containerd.sh stop "$ctd_dir" || true
}
trap stop EXIT INT TERM
for _ in $(seq 300); do
    [[ -f $home/kubeconfig ]] && break
    kill -0 "$up" 2>/dev/null || { echo "corral up exited" >&2; exit 1; }
    sleep 0.1
done

# The tour's examples (more-examples/ holds those that need more than one machine).
"$corral" apply -f examples/
# Jobs get tasks, the scheduler binds them, the agent runs them in containerd.
for _ in $(seq 100); do
    [[ $("$corral" get tasks -A --no-headers 2>/dev/null | grep -c RUNNING) -ge 2 ]] && break
    sleep 0.2
done
echo
"$corral" get jobs -A
echo
"$corral" get tasks -A -o wide
echo
"$corral" top nodes
echo
"$kubectl" get corral -A

if [[ ${CORRAL_RUN_ONCE:-} == 1 ]]; then
    exit 0
fi
echo
echo "Corral is serving. Try:"
echo "  export KUBECONFIG=$home/kubeconfig"
echo "  $corral get tasks -A -w"
echo "  $corral -n web why frontend-1-0           # why is it pending?"
echo "  $corral -n analytics describe job sparkie"
echo "  $corral -n web logs -f frontend-0-0"
echo "Press Ctrl-C to stop: corral down stops corral up and its tasks, then the private containerd stops."
wait "$up"
