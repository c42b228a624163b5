#!/usr/bin/env bash
# Corral's main job: builds `corral`, starts the API server over the embedded
# store in $CORRAL_HOME (default ~/.corral), applies the examples through it
# with stock kubectl, shows them, and keeps serving until Ctrl-C (the store
# keeps everything for the next start). With CORRAL_RUN_ONCE=1 it stops after
# showing the examples.
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
k() { "$kubectl" --kubeconfig "$home/kubeconfig" --cache-dir "$home/kube-cache" "$@"; }
for ns in analytics web; do
    k get namespace "$ns" >/dev/null 2>&1 || k create namespace "$ns"
done
k apply -f examples/
k get corral -A

if [[ ${CORRAL_RUN_ONCE:-} == 1 ]]; then
    exit 0
fi
echo
echo "Corral is serving. Use it with:"
echo "  export KUBECONFIG=$home/kubeconfig"
echo "  kubectl get jobs -A"
echo "Press Ctrl-C to stop."
wait "$server"
