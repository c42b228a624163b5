//! Harness for the end-to-end tests: runs the `corral` binary (built by
//! `cargo build -p corral-cli`, or `$CORRAL_BIN`) as a real server process on
//! a free loopback port, and stock clients (`kubectl` 1.32.3 and `helm`
//! 3.17.2 from `.tools/bin`, installed by `scripts/install-tools.sh`) against
//! it, each with fresh cache directories. Processes are stopped by PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool(env: &str, default: PathBuf) -> Result<PathBuf> {
    let p = std::env::var_os(env).map(PathBuf::from).unwrap_or(default);
    if !p.exists() {
        bail!(
            "{} not found (set {env}, or run scripts/install-tools.sh and cargo build -p corral-cli)",
            p.display()
        );
    }
    Ok(p)
}

/// The `corral` binary.
pub fn corral_bin() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    tool("CORRAL_BIN", target.join("debug/corral"))
}

/// kubectl 1.32.3.
pub fn kubectl_bin() -> Result<PathBuf> {
    tool(
        "CORRAL_KUBECTL",
        workspace().join(".tools/bin/kubectl-1.32.3"),
    )
}

/// helm 3.17.2.
pub fn helm_bin() -> Result<PathBuf> {
    tool("CORRAL_HELM", workspace().join(".tools/bin/helm"))
}

/// A running `corral server`, killed on drop if still running.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// `$CORRAL_HOME` of the server.
    pub home: PathBuf,
    _temp_home: Option<tempfile::TempDir>,
    /// The admin kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    /// For `corral up`: the arguments of the `corral down` that stops the
    /// tasks it started when it is dropped (host processes outlive it).
    down: Option<Vec<String>>,
}

impl Server {
    /// Starts `corral server` over the embedded store on a free port, in a
    /// fresh home directory.
    pub fn start() -> Result<Self> {
        let temp = tempfile::tempdir()?;
        let mut s = Self::start_in(temp.path(), &[])?;
        s._temp_home = Some(temp);
        Ok(s)
    }

    /// Starts it in a fresh home directory with extra arguments.
    pub fn start_with(extra: &[&str]) -> Result<Self> {
        let temp = tempfile::tempdir()?;
        let mut s = Self::start_in(temp.path(), extra)?;
        s._temp_home = Some(temp);
        Ok(s)
    }

    /// Starts it with `home` as `$CORRAL_HOME` and extra arguments.
    pub fn start_in(home: &Path, extra: &[&str]) -> Result<Self> {
        Self::spawn("server", home, "127.0.0.1:0", extra, &[])
    }

    /// Starts it with `home` as `$CORRAL_HOME`, listening on `listen`
    /// (`127.0.0.1:PORT`: a server started again where agents expect it).
    pub fn start_at(home: &Path, listen: &str, extra: &[&str]) -> Result<Self> {
        Self::spawn("server", home, listen, extra, &[])
    }

    /// Starts `corral up` (server, controllers and one agent) with `home` as
    /// `$CORRAL_HOME`, extra arguments and environment variables.
    pub fn up_in(home: &Path, extra: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        Self::spawn("up", home, "127.0.0.1:0", extra, env)
    }

    fn spawn(
        command: &str,
        home: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let home = home.to_owned();
        let kubeconfig = home.join("kubeconfig");
        // Wait for the kubeconfig of this run, not one left by a previous run.
        let _ = std::fs::remove_file(&kubeconfig);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.join("server.log"))?;
        let child = Command::new(corral_bin()?)
            .args([command, "--listen", listen, "--home"])
            .arg(&home)
            .args(extra)
            .envs(env.iter().copied())
            .env_remove("CORRAL_STORE")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting corral server")?;
        let down = (command == "up").then(|| {
            let flag = |name: &str| {
                extra
                    .iter()
                    .position(|a| *a == name)
                    .and_then(|i| extra.get(i + 1))
                    .map(|v| (*v).to_owned())
            };
            let mut args = vec!["down".to_owned(), "--home".to_owned(), s(&home)];
            args.extend(["--grace-seconds".to_owned(), "1".to_owned()]);
            match flag("--containerd-address") {
                // Its own containerd: its tasks there too.
                Some(address) => {
                    args.extend(["--containerd-address".to_owned(), address]);
                    if let Some(r) = flag("--runtimes") {
                        args.extend(["--runtimes".to_owned(), r]);
                    }
                }
                // The machine's containerd is not this test's.
                None => args.extend(["--runtimes".to_owned(), "process".to_owned()]),
            }
            args
        });
        let mut server = Server {
            child,
            home,
            _temp_home: None,
            kubeconfig,
            down,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.kubeconfig.exists() {
            if let Some(status) = server.child.try_wait()? {
                bail!("corral server exited with {status}: {}", server.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "corral server did not write its kubeconfig in time: {}",
                    server.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("server.log")).unwrap_or_default()
    }

    /// Waits up to `timeout` for the process to exit by itself; its status,
    /// or None if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(self) -> Result<std::process::ExitStatus> {
        self.signal("-TERM")
    }

    /// Kills it with SIGKILL (no clean-up), as a crash would: what it
    /// started keeps running, for a next start to re-adopt.
    pub fn crash(mut self) -> Result<()> {
        self.down = None;
        self.kill()
    }

    /// Kills it with SIGKILL and waits for it, keeping the handle (for a
    /// server started again in its place, with `start_at`).
    pub fn kill(&mut self) -> Result<()> {
        if let Ok(None) = self.child.try_wait() {
            self.child.kill()?;
        }
        self.child.wait()?;
        Ok(())
    }

    /// Sends SIGINT (Ctrl-C) and waits for a clean exit.
    pub fn interrupt(self) -> Result<std::process::ExitStatus> {
        self.signal("-INT")
    }

    /// Ends it with `signal`: what it started keeps running, for a next
    /// start to re-adopt.
    fn signal(mut self, signal: &str) -> Result<std::process::ExitStatus> {
        self.down = None;
        let pid = self.child.id().to_string();
        Command::new("kill").args([signal, &pid]).status()?;
        self.wait_exit(Duration::from_secs(15))?
            .context("corral server did not stop on SIGTERM")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // What `corral up` started must not outlive the test (a leftover
        // task holding a host port fails the next test that wants it).
        if let (Some(args), Ok(bin)) = (&self.down, corral_bin()) {
            let _ = Command::new(bin)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// What a client command printed.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Fails unless the command succeeded; returns stdout.
    pub fn ok(self) -> Result<String> {
        if self.code != 0 {
            bail!("exit {}: {}{}", self.code, self.stdout, self.stderr);
        }
        Ok(self.stdout)
    }
}

/// kubectl with a fresh cache directory, pointed at a server.
#[derive(Debug)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
}

impl Kubectl {
    /// The pinned kubectl 1.32.3.
    pub fn new(server: &Server) -> Result<Self> {
        Self::with_binary(server, kubectl_bin()?)
    }

    /// The pinned kubectl with another identity's kubeconfig.
    pub fn with_kubeconfig(kubeconfig: PathBuf) -> Result<Self> {
        Ok(Kubectl {
            bin: kubectl_bin()?,
            kubeconfig,
            cache: tempfile::tempdir()?,
        })
    }

    /// Another kubectl binary (e.g. the machine's).
    pub fn with_binary(server: &Server, bin: PathBuf) -> Result<Self> {
        Ok(Kubectl {
            bin,
            kubeconfig: server.kubeconfig.clone(),
            cache: tempfile::tempdir()?,
        })
    }

    /// The command, ready for more arguments.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path());
        c
    }

    /// Runs `kubectl ARGS`.
    pub fn run(&self, args: &[&str]) -> Result<Run> {
        Ok(Run::from(self.command().args(args).output()?))
    }

    /// Creates Corral Role `name` (weight 1), as an administrator does
    /// before a team runs jobs on it: a Job naming a Role that does not
    /// exist is refused.
    pub fn corral_role(&self, name: &str) -> Result<()> {
        let manifest = format!(
            "apiVersion: corral.dev/v1alpha1\nkind: Role\nmetadata:\n  name: {name}\nspec:\n  weight: 1\n"
        );
        self.run_stdin(&["apply", "-f", "-"], &manifest)?.ok()?;
        Ok(())
    }

    /// The bearer token and the server URL of the kubeconfig's first user
    /// and cluster (`corral up`'s admin).
    pub fn token_and_url(&self) -> Result<(String, String)> {
        let field = |path: &str| -> Result<String> {
            let out = self
                .run(&[
                    "config",
                    "view",
                    "--raw",
                    "-o",
                    &format!("jsonpath={{{path}}}"),
                ])?
                .ok()?;
            Ok(out.trim().to_owned())
        };
        let (token, url) = (
            field(".users[0].user.token")?,
            field(".clusters[0].cluster.server")?,
        );
        if token.is_empty() {
            bail!("the kubeconfig holds no token");
        }
        Ok((token, url))
    }

    /// Runs `kubectl ARGS` with `stdin` as input.
    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Result<Run> {
        let mut c = self.command();
        c.args(args);
        run_with_stdin(c, stdin)
    }
}

/// The `corral` client verbs, pointed at a server.
#[derive(Debug)]
pub struct Corral {
    kubeconfig: PathBuf,
}

impl Corral {
    /// `corral --kubeconfig <server's>`.
    pub fn new(server: &Server) -> Self {
        Corral {
            kubeconfig: server.kubeconfig.clone(),
        }
    }

    /// Runs `corral ARGS`.
    pub fn run(&self, args: &[&str]) -> Result<Run> {
        Ok(Run::from(
            Command::new(corral_bin()?)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args)
                .env_remove("KUBECONFIG")
                .stdin(Stdio::null())
                .output()?,
        ))
    }

    /// Runs `corral ARGS` with `stdin` as input.
    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Result<Run> {
        let mut c = Command::new(corral_bin()?);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env_remove("KUBECONFIG");
        run_with_stdin(c, stdin)
    }
}

/// Runs `command` with `stdin` as its input, capturing what it prints.
fn run_with_stdin(mut command: Command, stdin: &str) -> Result<Run> {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(stdin.as_bytes())?;
    Ok(Run::from(child.wait_with_output()?))
}

/// A free `127.0.0.1:PORT` to listen on: a server started there can be
/// started again at the same address (its agents and clients find it).
pub fn free_address() -> Result<String> {
    Ok(format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    ))
}

/// Polls `check` until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, check: impl FnMut() -> Result<bool>) -> Result<()> {
    wait_every(what, timeout, Duration::from_millis(50), check)
}

/// Polls `check` every `every` (for checks too costly to run back to
/// back, such as a LIST of thousands of objects) until it holds or
/// `timeout` passes.
pub fn wait_every(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// `examples/` in the workspace (what the README's tour applies).
pub fn examples() -> PathBuf {
    workspace().join("examples")
}

/// `more-examples/` in the workspace (examples that need more than the tour).
pub fn more_examples() -> PathBuf {
    workspace().join("more-examples")
}

/// A path as text.
pub fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A private containerd started by `scripts/containerd.sh` in a temporary
/// directory, with the test image imported into its own namespace; stopped
/// (containers, daemon) on drop.
#[derive(Debug)]
pub struct Containerd {
    dir: tempfile::TempDir,
    /// Its socket.
    pub address: PathBuf,
    /// The containerd namespace of this test's containers.
    pub namespace: String,
    stopped: bool,
}

/// The image `scripts/containerd.sh` imports.
pub const TEST_IMAGE: &str = "docker.io/library/testbox:latest";

impl Containerd {
    /// Starts one; `namespace` keeps this test's cgroups apart from others'.
    pub fn start(namespace: &str) -> Result<Self> {
        // Short: a unix socket path must stay under 108 bytes.
        let dir = tempfile::Builder::new().prefix("ctd").tempdir_in("/tmp")?;
        let out = Command::new("bash")
            .arg(workspace().join("scripts/containerd.sh"))
            .arg("start")
            .arg(dir.path())
            .env("CORRAL_CONTAINERD_NAMESPACE", namespace)
            .output()
            .context("running scripts/containerd.sh")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains("ready") {
            bail!(
                "containerd.sh start failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Containerd {
            address: dir.path().join("state/containerd.sock"),
            dir,
            namespace: namespace.to_owned(),
            stopped: false,
        })
    }

    /// Stops the daemon and its containers.
    pub fn stop(&mut self) -> Result<()> {
        if !self.stopped {
            self.stopped = true;
            let st = Command::new("bash")
                .arg(workspace().join("scripts/containerd.sh"))
                .arg("stop")
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            anyhow::ensure!(st.success(), "containerd.sh stop failed");
        }
        Ok(())
    }

    /// The OCI archive of the test image `scripts/containerd.sh` built.
    pub fn image_archive(&self) -> PathBuf {
        self.dir.path().join("testbox.tar")
    }

    /// `ctr` against this daemon and namespace.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.address)
            .args(["-n", &self.namespace])
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A running `corral agent`, killed on drop if still running.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    /// Starts `corral agent` for `server` with extra arguments (node name,
    /// runtimes, resources…), logging to `<server home>/<log_name>.log`.
    pub fn start(server: &Server, log_name: &str, args: &[&str]) -> Result<Self> {
        let log = server.home.join(format!("{log_name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new(corral_bin()?)
            .arg("agent")
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .arg("--home")
            .arg(&server.home)
            .arg("--config-dir")
            .arg(server.home.join("no-agent-config"))
            // Tests run side by side: each agent's log endpoint on a free port.
            .arg("--log-listen=127.0.0.1:0")
            .args(args)
            .env("CORRAL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting corral agent")?;
        Ok(Agent { child, log })
    }

    /// Starts one standing in for `nodes` simulated nodes named
    /// `NAME-0`…, each offering `resources`.
    pub fn simulated(server: &Server, name: &str, nodes: usize, resources: &str) -> Result<Self> {
        let nodes = nodes.to_string();
        Self::start(
            server,
            name,
            &[
                "--node-name",
                name,
                "--runtimes",
                "simulated",
                "--simulate-nodes",
                &nodes,
                "--resources",
                resources,
            ],
        )
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it with SIGKILL (no clean-up), as a crash would.
    pub fn crash(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
