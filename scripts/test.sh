#!/usr/bin/env bash
# The full check, as CI runs it: dependencies, formatting, lints, tests, doctests.
#
#   scripts/test.sh               the full check (what CI runs)
#   scripts/test.sh --spark       the full check, then the Spark suite: real
#                                 Apache Spark on Corral (installs Java 17 and
#                                 PySpark with scripts/install-spark.sh; a few
#                                 minutes, more the first time)
#   scripts/test.sh --spark-only  the Spark suite alone
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."

checks=1 spark=0
for arg in "$@"; do
    case $arg in
        --spark) spark=1 ;;
        --spark-only) spark=1 checks=0 ;;
        *) printf 'usage: %s [--spark | --spark-only]\n' "$0" >&2; exit 2 ;;
    esac
done

if [[ -t 1 ]]; then
    export CARGO_TERM_COLOR=always
fi
# A rustup toolchain that is installed but not yet on PATH (fresh shell).
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

# step NAME COMMAND...: runs COMMAND between header lines timed with $SECONDS.
step() {
    local name=$1 start=$SECONDS rc=0
    shift
    printf '==> %s\n' "$name"
    "$@" || rc=$?
    if ((rc != 0)); then
        printf '==> %s FAILED (%ds, exit %d)\n' "$name" "$((SECONDS - start))" "$rc" >&2
        exit "$rc"
    fi
    printf '==> %s ok (%ds)\n' "$name" "$((SECONDS - start))"
}

total=$SECONDS
# The Spark suite: the ignored tests of e2e/tests/spark.rs, which need Spark.
spark_suite() {
    step "install-spark" bash scripts/install-spark.sh
    step "build corral" cargo build --locked -p corral-cli
    step "spark suite" cargo nextest run --locked -p corral-e2e --test spark \
        --run-ignored only --no-capture
}
if ((checks == 0)); then
    step "install-deps" bash scripts/install-deps.sh
    step "install-tools" bash scripts/install-tools.sh
    spark_suite
    printf '==> the Spark suite passed (%ds)\n' "$((SECONDS - total))"
    exit 0
fi
step "install-deps" bash scripts/install-deps.sh
step "install-tools" bash scripts/install-tools.sh
step "fmt" cargo fmt --all -- --check
step "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
# The end-to-end tests run the real binary.
step "build corral" cargo build --locked -p corral-cli
# A failure's message and place, without a backtrace, so that the end of a
# CI log holds every failure (CORRAL_TEST_BACKTRACE=1 brings them back).
export RUST_BACKTRACE=${CORRAL_TEST_BACKTRACE:-0}
if cargo nextest --version >/dev/null 2>&1; then
    step "nextest" cargo nextest run --workspace --locked --no-fail-fast
else
    printf '==> cargo-nextest not found; using cargo test\n'
    step "test" cargo test --workspace --locked
fi
step "doctests" cargo test --workspace --doc --locked
if ((spark == 1)); then
    spark_suite
fi
printf '==> all checks passed (%ds)\n' "$((SECONDS - total))"
