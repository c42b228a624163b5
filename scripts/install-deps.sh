#!/usr/bin/env bash
# Installs what building and testing Corral needs on Debian 12 (bookworm):
# etcd (server and client) for the store tests, protoc and the well-known
# protobuf types for the gRPC code, containerd and runc for the agent's
# container runtime, a static busybox for the test image, promtool for the
# metrics and alert rules, Chromium and Node.js for the UI's browser test,
# and cargo-nextest.
# Safe to run repeatedly:
# apt is skipped entirely when everything is already present.
#
# A Rust toolchain comes from rustup when none is present.
set -euo pipefail

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

have() { command -v "$1" >/dev/null 2>&1; }

pkg_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

# --- System packages -------------------------------------------------------

packages=()
have etcd || packages+=(etcd-server)
have etcdctl || packages+=(etcd-client)
have protoc || packages+=(protobuf-compiler)
[[ -f /usr/include/google/protobuf/descriptor.proto ]] || packages+=(libprotobuf-dev)
have containerd || packages+=(containerd)
have runc || packages+=(runc)
# A faster OCI runtime the agent can run instead of runc (--oci-runtime crun).
have crun || packages+=(crun)
# A local registry and an image copier, for the registry-pull test.
have docker-registry || packages+=(docker-registry)
have skopeo || packages+=(skopeo)
# promtool (Debian ships it with Prometheus), to lint the metrics every
# component serves and the alert rules the chart ships.
have promtool || packages+=(prometheus)
# The web UI's browser test: Debian's Chromium (driven headless), a font for
# its screenshots, and Node.js for Playwright (scripts/install-tools.sh).
[[ -x /usr/bin/chromium ]] || packages+=(chromium)
pkg_installed fonts-dejavu-core || packages+=(fonts-dejavu-core)
have node || packages+=(nodejs)
# The test image needs a static busybox (`ldd` fails on static binaries).
if [[ ! -x /bin/busybox ]] || ldd /bin/busybox >/dev/null 2>&1; then packages+=(busybox-static); fi

if ((${#packages[@]} == 0)); then
    log "etcd, protoc, containerd, runc, crun, busybox, promtool, chromium and node are present; skipping apt"
else
    # Only worth adding when apt runs anyway.
    pkg_installed ca-certificates || packages+=(ca-certificates)
    have curl || packages+=(curl)

    have apt-get || die "missing ${packages[*]} and apt-get is not available; install them by hand (Debian 12 package names)"

    sudo=()
    if ((EUID != 0)); then
        have sudo || die "missing ${packages[*]}: run this script as root, or install sudo"
        sudo=(sudo)
    fi

    apt_get() {
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=300 "$@"
    }
    apt_install() {
        apt_get install -y --no-install-recommends "${packages[@]}"
    }

    log "installing ${packages[*]}"
    apt_get update
    if ! apt_install; then
        log "apt-get install failed; refreshing the package lists and retrying once"
        apt_get update
        apt_install || die "apt-get install ${packages[*]} failed twice"
    fi

    for cmd in etcd etcdctl protoc containerd ctr runc crun busybox promtool chromium node; do
        have "$cmd" || die "$cmd is still missing after installing ${packages[*]}"
    done
    [[ -f /usr/include/google/protobuf/descriptor.proto ]] \
        || die "/usr/include/google/protobuf/descriptor.proto is still missing"
fi

# --- Rust toolchain --------------------------------------------------------

if ! cargo --version >/dev/null 2>&1 && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
if ! cargo --version >/dev/null 2>&1; then
    # A fresh machine: install the stable toolchain with rustup.
    if ! have curl; then
        have apt-get || die "no Rust toolchain and no curl to fetch rustup; install Rust (https://rustup.rs) by hand"
        ((EUID == 0)) || die "no Rust toolchain: run this script as root, or install Rust with rustup yourself"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends curl ca-certificates
    fi
    log "no Rust toolchain found; installing stable with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
        | sh -s -- -y --profile minimal --component clippy,rustfmt \
        || die "installing Rust with rustup failed; install it by hand (https://rustup.rs)"
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    cargo --version >/dev/null 2>&1 || die "cargo is still missing after installing rustup"
fi

want=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$repo_root/Cargo.toml" | head -n1)
have_version=$(rustc --version | awk '{print $2}')
if [[ -n $want ]] && [[ $(printf '%s\n%s\n' "$want" "${have_version%%-*}" | sort -V | head -n1) != "$want" ]]; then
    die "Rust $have_version is older than the required $want; run: rustup update stable"
fi
log "using $(cargo --version)"

for component in fmt clippy; do
    cargo "$component" --version >/dev/null 2>&1 \
        || die "cargo $component is missing; run: rustup component add ${component/fmt/rustfmt}"
done

if cargo nextest --version >/dev/null 2>&1; then
    log "cargo-nextest is present"
else
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest
fi
