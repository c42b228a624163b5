#!/usr/bin/env bash
# Corral's main job, today: build the `corral` binary, check the example
# manifests against Corral's schemas and rules, load them into the embedded
# store under $CORRAL_HOME (default ~/.corral), and list what the store holds.
# Running it again keeps the same store: unchanged objects keep their revisions.
#
#   bash scripts/run.sh                         # embedded store under ~/.corral
#   CORRAL_STORE=etcd://127.0.0.1:2379 bash scripts/run.sh   # an etcd you run
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

bash scripts/install-deps.sh
cargo build --locked --release -p corral-cli
corral=target/release/corral

"$corral" validate -f examples/
"$corral" store load -f examples/
"$corral" store list /registry/corral.dev/
