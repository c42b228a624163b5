#!/usr/bin/env bash
# Corral's main job: builds `corral`, starts the API server (with its
# controllers) over the embedded store in $CORRAL_HOME (default ~/.corral) and
# an agent standing in for three simulated nodes, applies the examples with
# stock kubectl, shows the jobs' tasks running, and keeps serving until Ctrl-C
# (the store keeps everything for the next start). With CORRAL_RUN_ONCE=1 it
# stops after showing them.
#
#   bash scripts/run.sh
#   CORRAL_STORE=etcd://127.0.0.1:2379 bash scripts/run.sh     # an etcd you run
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

bash scripts/install-deps.sh
bash scripts/install-tools.sh
cargo build --locked --release -p corral-cli
corral=$PWD/target/release/corral
kubectl=$PWD/.tools/bin/kubectl-1.32.3
home=${CORRAL_HOME:-$HOME/.corral}
listen=${CORRAL_LISTEN:-127.0.0.1:6443}
mkdir -p "$home"

"$corral" validate -f examples/

rm -f "$home/kubeconfig"
"$corral" server --home "$home" --listen "$listen" &
server=$!
stop() { kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
trap stop EXIT INT TERM
for _ in $(seq 300); do
    [[ -f $home/kubeconfig ]] && break
    kill -0 "$server" 2>/dev/null || { echo "corral server exited" >&2; exit 1; }
    sleep 0.1
done
# Three simulated nodes (the containerd and process runtimes are still to come).
"$corral" agent --kubeconfig "$home/kubeconfig" --node-name sim --simulate-nodes 3 \
    --runtimes simulated --resources cpus=8,memory=32Gi,disk=100Gi --attributes rack=r2 &
agent=$!
stop() {
    kill -TERM "$agent" 2>/dev/null || true; wait "$agent" 2>/dev/null || true
    kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true
}
k() { "$kubectl" --kubeconfig "$home/kubeconfig" --cache-dir "$home/kube-cache" "$@"; }
for ns in analytics web; do
    k get namespace "$ns" >/dev/null 2>&1 || k create namespace "$ns"
done
k apply -f examples/
# Jobs get tasks, the scheduler binds them, the agent runs them.
for _ in $(seq 100); do
    [[ $(k get tasks -A --no-headers 2>/dev/null | grep -c RUNNING) -ge 4 ]] && break
    sleep 0.2
done
k get corral -A
k get tasks -A -o wide

if [[ ${CORRAL_RUN_ONCE:-} == 1 ]]; then
    exit 0
fi
echo
echo "Corral is serving. Use it with:"
echo "  export KUBECONFIG=$home/kubeconfig"
echo "  kubectl get jobs -A"
echo "Press Ctrl-C to stop."
wait "$server"
