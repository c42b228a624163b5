#!/usr/bin/env bash
# Installs Apache Spark for running it on Corral's host-process runtime:
# Debian's Java 17 and PySpark from PyPI (which carries Spark's jars,
# spark-class and spark-submit) in a Python virtual environment.
#
# The install lands in $CORRAL_SPARK_DIR (default /opt/corral/spark), where
# tasks running as `nobody` can read it:
#   $CORRAL_SPARK_DIR/venv   the virtual environment (python, pyspark)
#   $CORRAL_SPARK_DIR/home   SPARK_HOME (bin/spark-class, jars/)
#   $CORRAL_SPARK_DIR/executor.sh   the executor entrypoint of Spark's
#                            Kubernetes backend (more-examples/spark/k8s)
# Run it on every node that runs Spark's tasks, and where spark-submit runs.
# Safe to run repeatedly: nothing is fetched when the pinned version is
# there, and pip's cache keeps the package between installs.
set -euo pipefail

version=${CORRAL_SPARK_VERSION:-4.3.0}
dir=${CORRAL_SPARK_DIR:-/opt/corral/spark}
# The system's Python (Debian 12: 3.11), which every user can run; a
# Python under a private home would leave the venv unusable to tasks.
python=${CORRAL_SPARK_PYTHON:-/usr/bin/python3}

log() { printf 'install-spark: %s\n' "$*"; }
die() { printf 'install-spark: error: %s\n' "$*" >&2; exit 1; }

sudo=()
if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 || die "run as root (or with sudo available)"
    sudo=(sudo)
fi

# Java 17 (Spark 4 needs 17 or newer) and Python's venv module.
packages=()
command -v java >/dev/null 2>&1 || packages+=(openjdk-17-jre-headless)
[[ -x $python ]] && "$python" -c 'import ensurepip, venv' >/dev/null 2>&1 || packages+=(python3-venv)
if ((${#packages[@]} > 0)); then
    log "installing ${packages[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${packages[@]}"
fi
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
[[ ${java_major:-0} -ge 17 ]] || die "Spark $version needs Java 17 or newer; java says ${java_major:-nothing}"

installed() {
    [[ -x $dir/venv/bin/python ]] &&
        [[ $(readlink -f "$dir/venv/bin/python") == $(readlink -f "$python") ]] &&
        [[ $("$dir/venv/bin/python" -c 'import pyspark; print(pyspark.__version__)' 2>/dev/null) == "$version" ]]
}

if installed; then
    log "pyspark $version is in $dir"
else
    log "installing pyspark $version into $dir (a few minutes the first time)"
    "${sudo[@]}" mkdir -p "$dir"
    # A venv's scripts name its path, so it is made in place; one left
    # half made by an interrupted run fails the check above and is redone.
    "${sudo[@]}" rm -rf "$dir/venv"
    "${sudo[@]}" "$python" -m venv "$dir/venv"
    "${sudo[@]}" "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "pyspark==$version"
fi
home=$("$dir/venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
"${sudo[@]}" ln -sfn "$home" "$dir/home"
# The entrypoint of executors that Spark's Kubernetes backend asks for
# (more-examples/spark/k8s/): run as host processes, there is no image.
repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
"${sudo[@]}" install -m 0755 "$repo_root/more-examples/spark/k8s/executor.sh" "$dir/executor.sh"
# Tasks run as nobody: everything readable, nothing writable.
"${sudo[@]}" chmod -R a+rX,go-w "$dir"
[[ -x $dir/home/bin/spark-class ]] || die "no spark-class under $dir/home"
log "SPARK_HOME=$dir/home, python $dir/venv/bin/python"
