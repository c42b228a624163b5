#!/bin/sh
# Spark's executor for its Kubernetes backend, run as a host process by a
# Corral task (a Pod from executor-pod-template.yaml). It does what the
# entrypoint of Spark's container image does for an executor: the JVM
# options the driver passes as SPARK_JAVA_OPT_0, _1, … in order, the heap
# the driver asks for, and KubernetesExecutorBackend with the pod's
# identity. Scratch space is the task's sandbox, not /var/data.
set -eu

: "${SPARK_HOME:=/opt/corral/spark/home}"
export HOME="$CORRAL_SANDBOX"
export SPARK_LOCAL_DIRS="$CORRAL_SANDBOX/local"
mkdir -p "$SPARK_LOCAL_DIRS"

set --
# Only the digits of each variable's name reach eval.
for n in $(env | sed -n 's/^SPARK_JAVA_OPT_\([0-9][0-9]*\)=.*/\1/p' | sort -n); do
    eval "set -- \"\$@\" \"\$SPARK_JAVA_OPT_$n\""
done

exec java "$@" \
    -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" \
    -cp "$SPARK_HOME/conf:$SPARK_HOME/jars/*" \
    org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
    --driver-url "$SPARK_DRIVER_URL" \
    --executor-id "$SPARK_EXECUTOR_ID" \
    --cores "$SPARK_EXECUTOR_CORES" \
    --app-id "$SPARK_APPLICATION_ID" \
    --hostname "$SPARK_EXECUTOR_POD_IP" \
    --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \
    --podName "$SPARK_EXECUTOR_POD_NAME"
