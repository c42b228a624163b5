//! Real Apache Spark on Corral (the Spark suite, run on request:
//! `scripts/test.sh --spark`, after `scripts/install-spark.sh`).
//!
//! The talk's "Aurora job running Spark": `corral up` offering host
//! processes, Spark's standalone master (a preferred-tier service) and
//! workers (a preemptible service) from `more-examples/spark/`, the workers
//! finding the master through Corral's discovery. A real `spark-submit` of
//! a PySpark application runs while a preferred service preempts a worker:
//! the worker's task goes PREEMPTING with its provenance, Spark runs the
//! lost executor's work again without counting it as a failure, the answer
//! is right, and the replacement worker joins the master once the
//! preferred service is gone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use corral_e2e::{Corral, Kubectl, Server, examples, more_examples, s, wait_every};
use serde_json::Value;

/// How long Spark's JVMs may take to start on a loaded two-core machine.
const START: Duration = Duration::from_secs(180);

/// Where `scripts/install-spark.sh` put Spark.
fn spark_dir() -> PathBuf {
    std::env::var_os("CORRAL_SPARK_DIR")
        .map_or_else(|| PathBuf::from("/opt/corral/spark"), PathBuf::from)
}

fn spark_installed() -> Result<PathBuf> {
    let dir = spark_dir();
    if !dir.join("home/bin/spark-submit").exists() || !dir.join("venv/bin/python").exists() {
        bail!(
            "Spark is not installed in {} (run `bash scripts/install-spark.sh`)",
            dir.display()
        );
    }
    Ok(dir)
}

/// The example's manifests, with Spark where this machine has it.
fn standalone_manifests(dir: &Path) -> Result<String> {
    let text = std::fs::read_to_string(more_examples().join("spark/spark-standalone.yaml"))?;
    Ok(text.replace("/opt/corral/spark/home", &s(&dir.join("home"))))
}

/// A running service's ready address for `port`: `(ADDRESS, PORT)`, read
/// from its EndpointSlices as any Kubernetes client reads them.
fn endpoint(k: &Kubectl, job: &str, port: &str) -> Result<Option<(String, u16)>> {
    let out = k
        .run(&[
            "-n",
            "analytics",
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={job}"),
            "-o",
            "json",
        ])?
        .ok()?;
    let list: Value = serde_json::from_str(&out)?;
    for slice in list["items"].as_array().into_iter().flatten() {
        let Some(number) = slice["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == port)
            .and_then(|p| p["port"].as_u64())
        else {
            continue;
        };
        for e in slice["endpoints"].as_array().into_iter().flatten() {
            if e["conditions"]["ready"] == true
                && let Some(address) = e["addresses"][0].as_str()
            {
                return Ok(Some((address.to_owned(), u16::try_from(number)?)));
            }
        }
    }
    Ok(None)
}

/// The master's status page (`/json/`), as its web UI serves it.
fn master_status(webui: &(String, u16)) -> Result<Value> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "5"])
        .arg(format!("http://{}:{}/json/", webui.0, webui.1))
        .output()?;
    if !out.status.success() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

fn alive_workers(webui: &(String, u16)) -> Result<u64> {
    Ok(master_status(webui)?["aliveworkers"].as_u64().unwrap_or(0))
}

/// The job's tasks: (name, phase, events as JSON).
fn tasks_of(k: &Kubectl, job: &str) -> Result<Vec<(String, String, Value)>> {
    let out = k
        .run(&[
            "-n",
            "analytics",
            "get",
            "tasks",
            "-l",
            &format!("corral.dev/job={job}"),
            "-o",
            "json",
        ])?
        .ok()?;
    let list: Value = serde_json::from_str(&out)?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                t["status"]["phase"].as_str().unwrap_or_default().to_owned(),
                t["status"]["taskEvents"].clone(),
            )
        })
        .collect())
}

/// `spark-submit` of the example application in client mode, its output
/// in `out`.
fn submit(dir: &Path, master: &(String, u16), out: &Path) -> Result<Child> {
    let python = s(&dir.join("venv/bin/python"));
    let child = Command::new(dir.join("home/bin/spark-submit"))
        .env("SPARK_HOME", dir.join("home"))
        .args(["--master", &format!("spark://{}:{}", master.0, master.1)])
        .args(["--conf", &format!("spark.driver.host={}", master.0)])
        .args(["--conf", "spark.executor.memory=512m"])
        .args(["--conf", &format!("spark.pyspark.python={python}")])
        .args(["--conf", &format!("spark.pyspark.driver.python={python}")])
        .arg(more_examples().join("spark/sum_of_squares.py"))
        // A million numbers in 40 partitions of at least 1.5 s each: about
        // half a minute on two executors, time enough to lose one.
        .args(["1000000", "40", "1.5"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out.join("driver.out"))?)
        .stderr(std::fs::File::create(out.join("driver.err"))?)
        .spawn()
        .context("starting spark-submit")?;
    Ok(child)
}

/// A preferred-tier service that needs the room of one worker.
const URGENT: &str = "apiVersion: corral.dev/v1alpha1
kind: Job
metadata: {name: urgent, namespace: analytics}
spec:
  role: analytics
  environment: prod
  kind: service
  instances: 1
  tier: preferred
  resources: {cpus: 1, memory: 256Mi, disk: 64Mi}
  container:
    image: busybox
    runtime: process
    command: [sh, -c, 'while true; do sleep 5; done']
";

#[test]
#[ignore = "the Spark suite: needs scripts/install-spark.sh; run by scripts/test.sh --spark"]
fn spark_standalone_runs_on_corral_and_survives_a_preempted_worker() -> Result<()> {
    let dir = spark_installed()?;
    let home = tempfile::tempdir()?;
    // One machine offering host processes: the master (0.5 cpu) and two
    // workers (1 cpu each) leave half a cpu, less than `urgent` needs.
    let server = spark_box(home.path())?;
    let (c, k) = (Corral::new(&server), Kubectl::new(&server)?);
    let began = Instant::now();
    c.run_stdin(&["apply", "-f", "-"], &standalone_manifests(&dir)?)?
        .ok()?;

    let mut master = None;
    wait_every(
        "the master to be ready",
        START,
        Duration::from_millis(500),
        || {
            master = endpoint(&k, "spark-master", "spark")?;
            Ok(master.is_some())
        },
    )
    .with_context(|| server.log())?;
    let master = master.context("the master's address")?;
    let master_ready = began.elapsed();
    let webui = (
        master.0.clone(),
        endpoint(&k, "spark-master", "webui")?
            .context("the master's web UI")?
            .1,
    );
    wait_every(
        "both workers to join the master",
        START,
        Duration::from_millis(500),
        || Ok(alive_workers(&webui)? == 2),
    )
    .with_context(|| server.log())?;
    let workers_joined = began.elapsed();
    let worker_logs = c
        .run(&["-n", "analytics", "logs", "spark-worker-0-0", "--stderr"])?
        .ok()?;
    assert!(
        worker_logs.contains(&format!(
            "Successfully registered with master spark://{}:{}",
            master.0, master.1
        )),
        "the worker found the master through Corral: {worker_logs}"
    );

    // A real application; once both executors have done some of its work,
    // a preferred service takes the room of a worker.
    let submitted = Instant::now();
    let mut driver = submit(&dir, &master, home.path())?;
    let driver_err = || std::fs::read_to_string(home.path().join("driver.err")).unwrap_or_default();
    wait_every(
        "the application to be under way",
        START,
        Duration::from_millis(250),
        || {
            if let Some(status) = driver.try_wait()? {
                bail!("spark-submit ended early ({status}): {}", driver_err());
            }
            Ok(driver_err().matches("Finished task").count() >= 2)
        },
    )?;
    c.run_stdin(&["apply", "-f", "-"], URGENT)?.ok()?;
    let mut victim = String::new();
    wait_every(
        "a worker to be preempted",
        START,
        Duration::from_millis(250),
        || {
            for (name, phase, events) in tasks_of(&k, "spark-worker")? {
                let preempted = events.as_array().into_iter().flatten().any(|e| {
                    e["status"] == "PREEMPTING"
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("preempted by analytics/urgent-0-0"))
                });
                if preempted && phase == "KILLED" {
                    victim = name;
                    return Ok(true);
                }
            }
            Ok(false)
        },
    )?;
    let why = c.run(&["-n", "analytics", "why", &victim])?.ok()?;
    assert!(
        why.contains("preempted by analytics/urgent-0-0"),
        "`corral why` names the preemptor: {why}"
    );
    wait_for_log(&driver_err, "Lost executor")?;

    // Capacity returns: the worker job's replacement joins the master.
    c.run(&[
        "-n",
        "analytics",
        "job",
        "kill",
        "urgent",
        "--wait",
        "--timeout",
        "60",
    ])?
    .ok()?;
    wait_every(
        "the replacement worker to join",
        START,
        Duration::from_millis(500),
        || {
            let running = tasks_of(&k, "spark-worker")?
                .iter()
                .filter(|(_, phase, _)| phase == "RUNNING")
                .count();
            Ok(running == 2 && alive_workers(&webui)? == 2)
        },
    )?;
    let rejoined = began.elapsed();

    let status = finished(&mut driver, &driver_err)?;
    let ran = submitted.elapsed();
    let answer = std::fs::read_to_string(home.path().join("driver.out"))?;
    assert!(
        status.success(),
        "spark-submit: {status}\n{answer}\n{}",
        driver_err()
    );
    assert!(
        answer.contains(
            "sum of squares below 1000000: 333332833333500000 (expected 333332833333500000)"
        ),
        "{answer}"
    );
    assert!(
        driver_err().contains("Not counting this failure towards the maximum number of failures"),
        "Spark did not count the preemption as the application's failure"
    );
    eprintln!(
        "spark timings: master ready {:.1}s, both workers joined {:.1}s, replacement joined {:.1}s after start; the application ran {:.1}s",
        master_ready.as_secs_f64(),
        workers_joined.as_secs_f64(),
        rejoined.as_secs_f64(),
        ran.as_secs_f64()
    );
    c.run(&[
        "-n",
        "analytics",
        "job",
        "kill",
        "spark-worker",
        "--wait",
        "--timeout",
        "60",
    ])?
    .ok()?;
    c.run(&[
        "-n",
        "analytics",
        "job",
        "kill",
        "spark-master",
        "--wait",
        "--timeout",
        "60",
    ])?
    .ok()?;
    Ok(())
}

/// `corral up` on one machine of 3 cpus offering host processes, with the
/// examples' namespaces and teams applied.
fn spark_box(home: &Path) -> Result<Server> {
    let server = Server::up_in(
        home,
        &[
            "--node-name",
            "spark-box",
            "--runtimes",
            "process",
            "--resources",
            "cpus=3,memory=6Gi,disk=20Gi",
        ],
        &[],
    )?;
    let c = Corral::new(&server);
    for f in ["00-namespaces.yaml", "01-teams.yaml"] {
        c.run(&["apply", "-f", &s(&examples().join(f))])?.ok()?;
    }
    Ok(server)
}

/// Waits for `spark-submit` to end (killing it past [`START`]).
fn finished(submit: &mut Child, log: &dyn Fn() -> String) -> Result<std::process::ExitStatus> {
    let mut status = None;
    let ended = wait_every(
        "spark-submit to finish",
        START,
        Duration::from_millis(250),
        || {
            status = submit.try_wait()?;
            Ok(status.is_some())
        },
    );
    match (ended, status) {
        (Ok(()), Some(status)) => Ok(status),
        (ended, _) => {
            let _ = submit.kill();
            Err(ended
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("no exit status")))
            .context(log())
        }
    }
}

fn wait_for_log(log: &dyn Fn() -> String, line: &str) -> Result<()> {
    wait_every(
        &format!("the driver to log {line:?}"),
        START,
        Duration::from_millis(250),
        || Ok(log().contains(line)),
    )
}

/// A preferred-tier service of another role that needs two cpus: on a node
/// of three whose two executors hold two, it preempts one.
const URGENT_TWO: &str = "apiVersion: corral.dev/v1alpha1
kind: Job
metadata: {name: urgent, namespace: analytics}
spec:
  role: analytics
  environment: prod
  kind: service
  instances: 1
  tier: preferred
  resources: {cpus: 2, memory: 256Mi, disk: 64Mi}
  container:
    image: busybox
    runtime: process
    command: [sh, -c, 'while true; do sleep 5; done']
";

/// The executor Pods of namespace `spark`: (name, phase, being deleted).
fn executor_pods(k: &Kubectl) -> Result<Vec<(String, String, bool)>> {
    let out = k
        .run(&[
            "-n",
            "spark",
            "get",
            "pods",
            "-l",
            "spark-role=executor",
            "-o",
            "json",
        ])?
        .ok()?;
    let list: Value = serde_json::from_str(&out)?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                p["status"]["phase"].as_str().unwrap_or_default().to_owned(),
                !p["metadata"]["deletionTimestamp"].is_null(),
            )
        })
        .collect())
}

#[test]
#[ignore = "the Spark suite: needs scripts/install-spark.sh; run by scripts/test.sh --spark"]
fn spark_runs_its_executors_as_pods_through_its_own_kubernetes_backend() -> Result<()> {
    let dir = spark_installed()?;
    let entrypoint = dir.join("executor.sh");
    if !entrypoint.exists() {
        bail!(
            "no {} (run `bash scripts/install-spark.sh`)",
            entrypoint.display()
        );
    }
    let home = tempfile::tempdir()?;
    let server = spark_box(home.path())?;
    let (c, admin) = (Corral::new(&server), Kubectl::new(&server)?);
    c.run(&[
        "apply",
        "-f",
        &s(&more_examples().join("spark/k8s/spark-on-corral.yaml")),
    ])?
    .ok()?;
    // The driver's own credential: Pods and ConfigMaps in `spark`, and
    // the use of role spark, nothing else.
    let driver_kc = home.path().join("driver.kubeconfig");
    c.run(&[
        "credentials",
        "user",
        "spark-driver",
        "--group",
        "spark-drivers",
        "--home",
        &s(home.path()),
        "--out",
        &s(&driver_kc),
    ])?
    .ok()?;
    let driver = Kubectl::with_kubeconfig(driver_kc.clone())?;
    let cannot = driver.run(&["-n", "analytics", "auth", "can-i", "create", "pods"])?;
    assert!(cannot.stdout.starts_with("no"), "{cannot:?}");
    let server_url = std::fs::read_to_string(&server.kubeconfig)?
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: ").map(str::to_owned))
        .context("the server's URL")?;
    let template = home.path().join("executor-pod-template.yaml");
    std::fs::write(
        &template,
        std::fs::read_to_string(more_examples().join("spark/k8s/executor-pod-template.yaml"))?
            .replace("/opt/corral/spark/executor.sh", &s(&entrypoint)),
    )?;

    // Spark's defaults for its watch (first asked for over WebSocket) and
    // its 30 s polling; dynamic allocation up to three executors.
    let began = Instant::now();
    let python = s(&dir.join("venv/bin/python"));
    let mut submit = Command::new(dir.join("home/bin/spark-submit"))
        .env("SPARK_HOME", dir.join("home"))
        .env("KUBECONFIG", &driver_kc)
        .args([
            "--master",
            &format!("k8s://{server_url}"),
            "--deploy-mode",
            "client",
        ])
        .args(["--conf", "spark.kubernetes.namespace=spark"])
        .args(["--conf", "spark.kubernetes.container.image=spark:corral"])
        .args([
            "--conf",
            &format!("spark.kubernetes.executor.podTemplateFile={}", s(&template)),
        ])
        .args(["--conf", "spark.driver.host=127.0.0.1"])
        .args(["--conf", "spark.dynamicAllocation.enabled=true"])
        .args([
            "--conf",
            "spark.dynamicAllocation.shuffleTracking.enabled=true",
        ])
        .args(["--conf", "spark.dynamicAllocation.minExecutors=0"])
        .args(["--conf", "spark.dynamicAllocation.maxExecutors=3"])
        .args(["--conf", "spark.executor.memory=512m"])
        .args(["--conf", &format!("spark.pyspark.python={python}")])
        .args(["--conf", &format!("spark.pyspark.driver.python={python}")])
        .arg(more_examples().join("spark/sum_of_squares.py"))
        .args(["1000000", "40", "1.5"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(home.path().join("driver.out"))?)
        .stderr(std::fs::File::create(home.path().join("driver.err"))?)
        .spawn()
        .context("starting spark-submit")?;
    let driver_err = || std::fs::read_to_string(home.path().join("driver.err")).unwrap_or_default();

    // Two executors run; the role's quota holds the third, and says why.
    let mut pending = String::new();
    wait_every(
        "two executors running and a third held",
        START,
        Duration::from_millis(500),
        || {
            if let Some(status) = submit.try_wait()? {
                bail!("spark-submit ended early ({status}): {}", driver_err());
            }
            let pods = executor_pods(&admin)?;
            let running = pods.iter().filter(|p| p.1 == "Running").count();
            if let Some(p) = pods.iter().find(|p| p.1 == "Pending") {
                pending.clone_from(&p.0);
            }
            Ok(running == 2 && !pending.is_empty())
        },
    )
    .with_context(|| server.log())?;
    let executors_up = began.elapsed();
    // Both at work for the driver (a Pod deleted before its executor
    // registered is only a request withdrawn, which proves nothing).
    wait_for_log(&driver_err, "(new total is 2)")?;
    let mut described = String::new();
    wait_every(
        "the held executor's explanation",
        START,
        Duration::from_millis(500),
        || {
            described = driver
                .run(&["-n", "spark", "describe", "pod", &pending])?
                .ok()?;
            Ok(described.contains("FailedScheduling"))
        },
    )?;
    assert!(
        described.contains("role spark would use 3 cpus, over its limit of 2"),
        "kubectl describe pod shows Corral's explanation: {described}"
    );

    // A preferred service preempts an executor: its Pod is deleted, and
    // Spark reads that as a loss that is not the application's failure.
    let before: Vec<String> = executor_pods(&admin)?.into_iter().map(|p| p.0).collect();
    c.run_stdin(&["apply", "-f", "-"], URGENT_TWO)?.ok()?;
    wait_for_log(&driver_err, "was deleted by a user or the framework").with_context(|| {
        let tasks = |ns: &str| {
            c.run(&["-n", ns, "get", "tasks"])
                .map(|r| r.stdout)
                .unwrap_or_default()
        };
        let log = driver_err();
        let losses: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("ERROR")
                    || l.contains("WARN")
                    || l.contains("Lost")
                    || l.contains("removed")
            })
            .collect();
        format!(
            "spark tasks:\n{}\nanalytics tasks:\n{}\ndriver's losses:\n{}",
            tasks("spark"),
            tasks("analytics"),
            losses.join("\n")
        )
    })?;
    // Its Pod goes once its task's end is written (Spark read it first).
    wait_every(
        "the preempted executor's Pod to go",
        START,
        Duration::from_millis(250),
        || {
            let now: Vec<String> = executor_pods(&admin)?.into_iter().map(|p| p.0).collect();
            Ok(before.iter().any(|name| !now.contains(name)))
        },
    )?;
    c.run(&[
        "-n",
        "analytics",
        "job",
        "kill",
        "urgent",
        "--wait",
        "--timeout",
        "60",
    ])?
    .ok()?;

    let status = finished(&mut submit, &driver_err)?;
    let ran = began.elapsed();
    let answer = std::fs::read_to_string(home.path().join("driver.out"))?;
    let log = driver_err();
    assert!(status.success(), "spark-submit: {status}\n{answer}\n{log}");
    assert!(
        answer.contains(
            "sum of squares below 1000000: 333332833333500000 (expected 333332833333500000)"
        ),
        "{answer}"
    );
    assert!(
        !log.contains("Marking this executor as failed")
            && !log.contains("missed the deletion event"),
        "the preempted executor was not counted as failed: {log}"
    );
    assert!(
        !log.contains("Uncaught exception"),
        "Spark's stop (collection deletes of pods, configmaps, services, claims) went through: {log}"
    );

    // Nothing is left: Spark deleted its Pods and ConfigMaps, their tasks went with them.
    wait_every(
        "no pods, tasks or configmaps left",
        START,
        Duration::from_millis(500),
        || {
            let left = |kind: &str| -> Result<usize> {
                let out = admin
                    .run(&["-n", "spark", "get", kind, "-o", "name"])?
                    .ok()?;
                Ok(out.lines().filter(|l| !l.contains("kube-root-ca")).count())
            };
            Ok(left("pods")? == 0 && left("tasks.corral.dev")? == 0 && left("configmaps")? == 0)
        },
    )?;
    eprintln!(
        "spark on kubernetes timings: two executors running and the third held {:.1}s after submit; the application ran {:.1}s",
        executors_up.as_secs_f64(),
        ran.as_secs_f64()
    );
    Ok(())
}
