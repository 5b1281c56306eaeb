//! Shared helpers: start a node in a temp dir, run a Python peer, bounded
//! waits that kill what they wait for.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("controller/ has a parent")
        .to_owned()
}

/// The Python interpreter with autobahn installed (`scripts/test` makes it).
pub fn python() -> PathBuf {
    // A relative path is taken from the repository root, not from the
    // test's working directory (controller/).
    let p = std::env::var_os("TRELLIS_TEST_PYTHON")
        .map(|p| repo_root().join(p))
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "{} not found: run scripts/test (it creates the venv with autobahn), or set TRELLIS_TEST_PYTHON",
        p.display()
    );
    p
}

/// A TCP port that was free a moment ago, and never handed out before in
/// this test run (the kernel may give a port just released again, and one
/// node's two transports would then collide).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A one-router node config: realm1, anonymous with full permissions, one
/// WebSocket transport on `port`.
pub fn router_config(port: u16) -> Value {
    json!({
        "version": 2,
        "workers": [{
            "type": "router",
            "id": "router1",
            "realms": [{
                "name": "realm1",
                "roles": [{
                    "name": "anonymous",
                    "permissions": [{
                        "uri": "", "match": "prefix",
                        "allow": {"call": true, "register": true, "publish": true, "subscribe": true},
                        "disclose": {"caller": false, "publisher": false},
                        "cache": true
                    }]
                }]
            }],
            "transports": [{
                "type": "websocket",
                "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port}
            }]
        }]
    })
}

/// The `trellis` binary under test.
pub fn trellis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trellis"))
}

/// `trellis CMD --config CONFIG --node-dir NODE_DIR` (`check` or `start`),
/// to be run as the test needs.
pub fn trellis_in(
    cmd: &str,
    config: &std::path::Path,
    node_dir: impl AsRef<std::path::Path>,
) -> Command {
    let mut c = trellis();
    c.args([cmd, "--config"])
        .arg(config)
        .arg("--node-dir")
        .arg(node_dir.as_ref());
    c
}

/// `trellis check --config PATH`, run to completion.
pub fn trellis_check(path: &std::path::Path) -> std::process::Output {
    trellis()
        .args(["check", "--config"])
        .arg(path)
        .output()
        .expect("run trellis check")
}

/// `trellis check` of `config` written to a file of its own.
pub fn check_json(config: &Value) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec(config).expect("json")).expect("write config");
    trellis_check(&path)
}

/// Add a transport to the first worker (the router) of a config.
pub fn push_transport(cfg: &mut Value, transport: Value) {
    cfg["workers"][0]["transports"]
        .as_array_mut()
        .expect("the first worker has transports")
        .push(transport);
}

/// A running `trellis start`, killed when dropped.
pub struct Node {
    child: Child,
    /// Holds node.json and the captured stderr.
    pub dir: tempfile::TempDir,
    /// The WebSocket port.
    pub port: u16,
}

impl Node {
    /// Start the binary with `config` and wait until `port` accepts.
    pub fn start(config: &Value, port: u16) -> Node {
        Node::start_with(config, port, &[], &[])
    }

    /// As [`Node::start`], with files written into the node directory
    /// first (relative paths in the config start there).
    pub fn start_with_files(config: &Value, port: u16, files: &[(&str, &str)]) -> Node {
        Node::start_inner(config, port, &[], &[], files)
    }

    /// As [`Node::start`], with extra environment variables and arguments
    /// (after `start`).
    pub fn start_with(config: &Value, port: u16, env: &[(&str, &str)], args: &[&str]) -> Node {
        Node::start_inner(config, port, env, args, &[])
    }

    /// As [`Node::start`], with the node's file-descriptor limit (soft and
    /// hard, as `ulimit -n` sets them) at `nofile`.
    pub fn start_with_fd_limit(config: &Value, port: u16, nofile: u32) -> Node {
        Node::launch(config, port, &[], &[], &[], Some(nofile))
    }

    fn start_inner(
        config: &Value,
        port: u16,
        env: &[(&str, &str)],
        args: &[&str],
        files: &[(&str, &str)],
    ) -> Node {
        Node::launch(config, port, env, args, files, None)
    }

    fn launch(
        config: &Value,
        port: u16,
        env: &[(&str, &str)],
        args: &[&str],
        files: &[(&str, &str)],
        nofile: Option<u32>,
    ) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let node_dir = dir.path().join("node");
        std::fs::create_dir_all(&node_dir).expect("node dir");
        for (name, text) in files {
            std::fs::write(node_dir.join(name), text).expect("write a node file");
        }
        let cfg = dir.path().join("node.json");
        std::fs::write(&cfg, serde_json::to_vec_pretty(config).expect("json"))
            .expect("write config");
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let mut cmd = match nofile {
            None => Command::new(env!("CARGO_BIN_EXE_trellis")),
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")])
                    .arg(env!("CARGO_BIN_EXE_trellis"));
                c
            }
        };
        let child = cmd
            .args(["start", "--config"])
            .arg(&cfg)
            .arg("--node-dir")
            .arg(dir.path().join("node"))
            .args(args)
            .env("RUST_LOG", "info,router_worker=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn trellis");
        let mut node = Node { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return node;
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!(
                    "trellis exited with {status} before listening:\n{}",
                    node.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "trellis did not listen on {port} within 10 s:\n{}",
                node.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// ws://127.0.0.1:PORT/ws
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// The node directory (control socket, logs/).
    pub fn node_dir(&self) -> PathBuf {
        self.dir.path().join("node")
    }

    /// The controller's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A worker's log file (`NODE_DIR/logs/ID.log`) as written so far.
    pub fn worker_log(&self, id: &str) -> String {
        std::fs::read_to_string(self.node_dir().join(format!("logs/{id}.log")))
            .unwrap_or_else(|e| panic!("worker {id}'s log: {e}"))
    }

    /// Everything the node wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Send a signal to the node.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal trellis");
    }

    /// Wait until the node's stderr contains `text` (10 s at most).
    pub fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until worker `id`'s log satisfies `done` (10 s at most): a
    /// worker's lines reach its log file through the controller, a moment
    /// after what they tell of.
    pub fn wait_worker_log(&self, id: &str, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.worker_log(id);
            if done(&log) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in worker {id}'s log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until every worker is up: [`Node::start`] returns once the
    /// first port listens, before later transports are bound.
    pub fn wait_ready(&self) {
        self.wait_log("node ready: every worker is up");
    }

    /// Wait for the node to exit, killing it after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        wait_or_kill(&mut self.child, timeout, "trellis")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node started by hand in a test, stopped when dropped: SIGTERM (the
/// controller stops its workers, so their ports are free after), then
/// SIGKILL if it has not exited within 10 s.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait for a child, killing it (and failing) after `timeout`.
pub fn wait_or_kill(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Output of a Python peer.
pub struct PyOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run `tests/py/SCRIPT ARGS...`, bounded by `timeout`.
pub fn run_python(script: &str, args: &[&str], timeout: Duration) -> PyOutput {
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/py").join(script))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_or_kill(&mut child, timeout, script);
    PyOutput {
        status,
        stdout: o.join().unwrap_or_default(),
        stderr: e.join().unwrap_or_default(),
    }
}

/// Run a Python peer against `node` (its URL first) and fail with everything
/// useful if it does not succeed.
pub fn expect_python_ok(node: &Node, script: &str, args: &[&str]) -> String {
    let mut full = vec![node.url()];
    full.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    expect_python_args_ok(node, script, &refs)
}

/// Run a Python peer with exactly `args`; fail with its output and the
/// node's log if it does not succeed.
pub fn expect_python_args_ok(node: &Node, script: &str, args: &[&str]) -> String {
    let out = run_python(script, args, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({})\n--- stdout\n{}\n--- stderr\n{}\n--- node log\n{}",
        out.status,
        out.stdout,
        out.stderr,
        node.log()
    );
    out.stdout
}

/// Run `tests/js/SCRIPT ARGS...` with Node.js, bounded: (success, output).
pub fn node_js(script: &str, args: &[&str]) -> (bool, String) {
    let js = repo_root().join("tests/js");
    assert!(
        js.join("node_modules/autobahn").exists(),
        "tests/js/node_modules is missing: run scripts/test (it runs npm ci there)"
    );
    let out_path =
        std::env::temp_dir().join(format!("trellis-{script}-{}.log", std::process::id()));
    let out = std::fs::File::create(&out_path).expect("log");
    let mut child = Command::new("node")
        .arg(js.join(script))
        .args(args)
        .current_dir(&js)
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .spawn()
        .expect("node (Node.js) on PATH");
    let status = wait_or_kill(&mut child, Duration::from_secs(90), script);
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    (status.success(), text)
}

/// Wait (10 s at most) until something listens on 127.0.0.1:`port`.
pub fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
