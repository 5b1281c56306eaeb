//! Crossbar.io projects as their users meet Trellis: a project directory
//! with its config in `.crossbar/` (and a second config beside it), its web
//! folder named `".."`, a Python component on a `pythonpath` of `".."`,
//! checked and started from the project's directory (and from above it,
//! and from `.crossbar` itself) with a relative `--cbdir`, an absolute one,
//! and none, as Crossbar.io's READMEs say to run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support::{KillOnDrop, free_port, python, run_python, trellis, wait_port};

/// A project: `.crossbar/config.json` (web on `web`, WebSocket at /ws, a
/// container running `hello.Hello` from the project directory),
/// `.crossbar/config-alt.yaml` (another port, its own web folder), the
/// page and the component beside `.crossbar`.
struct Project {
    _tmp: tempfile::TempDir,
    /// The directory that holds the project.
    parent: PathBuf,
    /// The project directory (holds `.crossbar`).
    root: PathBuf,
    web: u16,
    alt: u16,
}

impl Project {
    fn new() -> Project {
        let tmp = tempfile::tempdir().expect("tmp");
        let parent = tmp.path().to_path_buf();
        let root = parent.join("my-project");
        let cb = root.join(".crossbar");
        std::fs::create_dir_all(&cb).expect("mkdir .crossbar");
        std::fs::create_dir_all(root.join("alt-web")).expect("mkdir alt-web");
        std::fs::write(root.join("index.html"), "<h1>my project</h1>\n").expect("page");
        std::fs::write(root.join("alt-web/index.html"), "<h1>alt</h1>\n").expect("alt page");
        std::fs::write(
            root.join("hello.py"),
            r#"import os

from autobahn.asyncio.wamp import ApplicationSession


class Hello(ApplicationSession):
    async def onJoin(self, details):
        here = os.path.dirname(os.path.abspath(__file__))
        await self.register(lambda: {"from": here}, "com.project.hello")
"#,
        )
        .expect("component");
        let (web, alt) = (free_port(), free_port());
        let config = json!({
            "version": 2,
            "controller": {},
            "workers": [
                {"type": "router",
                 "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
                     {"uri": "", "match": "prefix",
                      "allow": {"call": true, "register": true, "publish": true, "subscribe": true},
                      "disclose": {"caller": false, "publisher": false}, "cache": true}]}]}],
                 "transports": [{"type": "web",
                     "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": web},
                     "paths": {"/": {"type": "static", "directory": ".."},
                               "ws": {"type": "websocket"}}}]},
                {"type": "container",
                 "options": {"pythonpath": [".."]},
                 "components": [{"type": "class", "classname": "hello.Hello", "realm": "realm1",
                     "transport": {"type": "websocket",
                         "endpoint": {"type": "tcp", "host": "127.0.0.1", "port": web},
                         "url": format!("ws://127.0.0.1:{web}/ws")}}]}
            ]
        });
        std::fs::write(
            cb.join("config.json"),
            serde_json::to_vec_pretty(&config).expect("json"),
        )
        .expect("config.json");
        std::fs::write(
            cb.join("config-alt.yaml"),
            format!(
                "version: 2\nworkers:\n  - type: router\n    transports:\n      - type: web\n        endpoint: {{type: tcp, interface: 127.0.0.1, port: {alt}}}\n        paths:\n          /: {{type: static, directory: ../alt-web}}\n"
            ),
        )
        .expect("config-alt.yaml");
        Project {
            _tmp: tmp,
            parent,
            root,
            web,
            alt,
        }
    }

    fn cbdir(&self) -> PathBuf {
        self.root.join(".crossbar")
    }

    /// `trellis ARGS` started in `cwd`, its output in `log`; stopped when
    /// the guard goes.
    fn start(&self, cwd: &Path, args: &[&str], log: &Path) -> KillOnDrop {
        let child = self
            .trellis(cwd, args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("trellis start");
        KillOnDrop(child)
    }

    /// `com.project.hello` answers, from `hello.py` in the project
    /// directory (`what` and the node's `log` say which start on failure).
    fn hello_answers_from_the_project(&self, log: &Path, what: &str) {
        let out = run_python(
            "node_peer.py",
            &[
                "call",
                &format!("ws://127.0.0.1:{}/ws", self.web),
                "com.project.hello",
                "20",
            ],
            Duration::from_secs(40),
        );
        assert!(
            out.status.success(),
            "{what}: {}{}\n--- node log\n{}",
            out.stdout,
            out.stderr,
            std::fs::read_to_string(log).unwrap_or_default()
        );
        let answer: serde_json::Value =
            serde_json::from_str(out.stdout.trim()).expect("JSON result");
        assert_eq!(
            Path::new(answer["from"].as_str().expect("from")),
            self.root.canonicalize().expect("root"),
            "{what}"
        );
    }

    /// `trellis ARGS` run in `cwd`, with the test venv active (as a user
    /// runs it with theirs).
    fn trellis(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut cmd = trellis();
        cmd.current_dir(cwd).args(args);
        let venv = python()
            .parent()
            .and_then(Path::parent)
            .expect("the venv")
            .to_path_buf();
        cmd.env("VIRTUAL_ENV", venv)
            .env_remove("TRELLIS_NODE_DIR")
            .env_remove("TRELLIS_CONFIG");
        cmd
    }
}

fn http_get(port: u16, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

/// Every way a Crossbar.io user checks a project: OK, and no warning
/// about the web folder (`..` is the project directory every time).
#[test]
fn check_from_the_project_as_crossbar_users_do() {
    let p = Project::new();
    let abs = p.cbdir().display().to_string();
    let sub = "my-project/.crossbar".to_owned();
    for (cwd, args, source) in [
        (&p.root, vec!["check"], ".crossbar/config.json"),
        (
            &p.root,
            vec!["check", "--cbdir", ".crossbar"],
            ".crossbar/config.json",
        ),
        (&p.root, vec!["check", "--cbdir", &abs], "config.json"),
        (
            &p.root,
            vec![
                "check",
                "--cbdir",
                ".crossbar",
                "--config",
                "config-alt.yaml",
            ],
            ".crossbar/config-alt.yaml",
        ),
        (
            &p.root,
            vec!["check", "--config", "config-alt.yaml"],
            ".crossbar/config-alt.yaml",
        ),
        (&p.cbdir(), vec!["check", "--cbdir", "."], "config.json"),
        (
            &p.parent,
            vec!["check", "--cbdir", &sub],
            "my-project/.crossbar/config.json",
        ),
    ] {
        let out = p.trellis(cwd, &args).output().expect("trellis check");
        let err = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?} in {}: {stdout}{err}",
            cwd.display()
        );
        assert!(
            stdout.contains(source) && stdout.contains(": OK"),
            "{args:?}: read {stdout}, wanted {source}"
        );
        assert!(!err.contains("warning"), "{args:?}: {err}");
    }
}

/// Started as Crossbar.io's READMEs say: the page from `..`, the Python
/// component from `pythonpath: [".."]`, the node directory `.crossbar`
/// (where `trellis status` finds it, run in the project with no
/// arguments), whether `--cbdir` is given relative, from above, or not at
/// all.
#[test]
fn start_from_the_project_as_crossbar_users_do() {
    let p = Project::new();
    let sub = "my-project/.crossbar".to_owned();
    for (cwd, args) in [
        (&p.root, vec!["start"]),
        (&p.root, vec!["start", "--cbdir", ".crossbar"]),
        (&p.parent, vec!["start", "--cbdir", &sub]),
    ] {
        let log = p.root.join("start.log");
        let _node = p.start(cwd, &args, &log);
        wait_port(p.web, "the project's web transport");
        let (code, body) = http_get(p.web, "/");
        assert_eq!(
            (code.as_str(), body.as_str()),
            ("200", "<h1>my project</h1>\n"),
            "{args:?}: the page from \"..\"\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        p.hello_answers_from_the_project(
            &log,
            &format!("{args:?}: the component from pythonpath \"..\""),
        );
        assert!(
            p.cbdir().join("control.sock").exists(),
            "{args:?}: the node directory is .crossbar"
        );
        assert!(
            !p.root.join(".trellis").exists(),
            "{args:?}: nothing in .trellis"
        );
        let status = p
            .trellis(&p.root, &["status", "--json"])
            .output()
            .expect("trellis status");
        assert!(
            status.status.success(),
            "{args:?}: trellis status in the project: {status:?}"
        );
    }
}

/// `--cbdir DIR --config NAME` reads `DIR/NAME`, as `crossbar start
/// --config config-foo.json` does, and its relative paths start at DIR.
#[test]
fn another_config_in_the_same_crossbar_directory() {
    let p = Project::new();
    let log = p.root.join("alt.log");
    let _node = p.start(
        &p.root,
        &[
            "start",
            "--cbdir",
            ".crossbar",
            "--config",
            "config-alt.yaml",
        ],
        &log,
    );
    wait_port(p.alt, "the alternative config's web transport");
    let (code, body) = http_get(p.alt, "/");
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("200", "<h1>alt</h1>\n"),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// A relative `--cbdir` no longer turns `".."` into an empty path, and a
/// `--cbdir` that is a symlink resolves `..` as Crossbar.io does: from
/// where the link is.
#[test]
fn a_symlinked_cbdir_resolves_dot_dot_beside_the_link() {
    let p = Project::new();
    let elsewhere = p.parent.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::fs::write(elsewhere.join("index.html"), "<h1>beside the link</h1>\n").expect("page");
    // The component's pythonpath ".." is there too.
    std::fs::copy(p.root.join("hello.py"), elsewhere.join("hello.py")).expect("copy");
    std::os::unix::fs::symlink(p.cbdir(), elsewhere.join("cb")).expect("symlink");
    let out = p
        .trellis(&elsewhere, &["check", "--cbdir", "cb"])
        .output()
        .expect("check");
    assert!(out.status.success(), "{out:?}");
    let log = elsewhere.join("start.log");
    let _node = p.start(&elsewhere, &["start", "--cbdir", "cb"], &log);
    wait_port(p.web, "web");
    let (code, body) = http_get(p.web, "/");
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("200", "<h1>beside the link</h1>\n"),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// crossbar-examples' MQTT project in dynamic mode, as its users run it:
/// `trellis start` in the project directory (plain, and with a relative
/// `--cbdir .crossbar`), the config in `.crossbar`
/// as the example has it (only the ports are free ones), the codec a
/// router component on `pythonpath: [".."]` in a realm of its own, an MQTT
/// transport and a universal one with MQTT, RawSocket, WebSocket and the
/// project's directory as web root.
#[test]
fn crossbars_mqtt_dynamic_example_runs_as_it_is() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("dynamic");
    let cb = root.join(".crossbar");
    std::fs::create_dir_all(&cb).expect("mkdir .crossbar");
    std::fs::write(
        root.join("codec.py"),
        r#"import struct

from twisted.internet.defer import inlineCallbacks
from autobahn.twisted.wamp import ApplicationSession

FORMAT = ">Hl8s"


class MyCodec(ApplicationSession):

    @inlineCallbacks
    def onJoin(self, details):

        def decode(mapped_topic, topic, payload):
            pid, seq, ran = struct.unpack(FORMAT, payload)
            return {"args": [pid, seq, ran.hex()]}

        def encode(mapped_topic, topic, args, kwargs):
            pid, seq, ran = args
            return struct.pack(FORMAT, pid, seq, bytes.fromhex(ran))

        yield self.register(decode, "com.example.mqtt.decode")
        yield self.register(encode, "com.example.mqtt.encode")
        self.log.info("MyCodec ready!")
"#,
    )
    .expect("codec.py");
    let (mqtt, universal) = (free_port(), free_port());
    let mapping = json!({"": {"type": "dynamic", "realm": "codec",
        "encoder": "com.example.mqtt.encode", "decoder": "com.example.mqtt.decode"}});
    let config = json!({
        "version": 2,
        "workers": [{
            "type": "router",
            "options": {"pythonpath": [".."]},
            "realms": [
                {"name": "codec", "roles": [{"name": "codec", "permissions": [
                    {"uri": "com.example.mqtt.", "match": "prefix",
                     "allow": {"call": false, "register": true, "publish": false, "subscribe": false},
                     "disclose": {"caller": false, "publisher": false}, "cache": true}]}]},
                {"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
                    {"uri": "", "match": "prefix",
                     "allow": {"call": true, "register": true, "publish": true, "subscribe": true},
                     "disclose": {"caller": true, "publisher": true}, "cache": true}]}]}
            ],
            "transports": [
                {"type": "mqtt", "endpoint": {"type": "tcp", "port": mqtt},
                 "options": {"realm": "realm1", "role": "anonymous", "payload_mapping": mapping}},
                {"type": "universal", "endpoint": {"type": "tcp", "port": universal},
                 "mqtt": {"options": {"realm": "realm1", "role": "anonymous", "payload_mapping": mapping}},
                 "rawsocket": {"serializers": ["cbor", "msgpack", "ubjson", "json"]},
                 "websocket": {"ws": {"type": "websocket", "serializers": ["cbor", "msgpack", "ubjson", "json"]}},
                 "web": {"paths": {"/": {"type": "static", "directory": "..",
                                          "options": {"enable_directory_listing": true}}}}}
            ],
            "components": [{"type": "class", "classname": "codec.MyCodec", "realm": "codec", "role": "codec"}]
        }]
    });
    std::fs::write(
        cb.join("config.json"),
        serde_json::to_vec_pretty(&config).expect("json"),
    )
    .expect("config.json");
    let venv = python()
        .parent()
        .and_then(Path::parent)
        .expect("the venv")
        .to_path_buf();
    let check = trellis()
        .current_dir(&root)
        .arg("check")
        .env("VIRTUAL_ENV", &venv)
        .output()
        .expect("trellis check");
    assert!(check.status.success(), "trellis check: {check:?}");
    // As its README says to run it: `crossbar start` in the project, or
    // with `--cbdir .crossbar`.
    for args in [vec!["start"], vec!["start", "--cbdir", ".crossbar"]] {
        let log = root.join("start.log");
        let child = trellis()
            .current_dir(&root)
            .args(&args)
            .env("VIRTUAL_ENV", &venv)
            .env_remove("TRELLIS_NODE_DIR")
            .env_remove("TRELLIS_CONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("trellis start");
        let _node = KillOnDrop(child);
        wait_port(universal, "the universal transport");
        let out = run_python(
            "mqtt_dynamic_project.py",
            &["127.0.0.1", &mqtt.to_string(), &universal.to_string()],
            Duration::from_secs(60),
        );
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            out.status.success(),
            "{args:?}: {}{}\n--- node log\n{text}",
            out.stdout,
            out.stderr
        );
        for check in [
            "the decoder turned mqtt bytes into wamp args",
            "the encoder turned wamp args into mqtt bytes",
        ] {
            assert!(
                out.stdout.contains(&format!("ok {check}")),
                "{check}: {}",
                out.stdout
            );
        }
        let (code, body) = http_get(universal, "/");
        assert_eq!(code, "200", "the project directory as web root");
        assert!(body.contains("codec.py"), "a directory listing: {body}");
    }
}

/// A container with no `pythonpath` imports its component from the
/// directory the node was started in, as Crossbar.io's workers do (they
/// run in the controller's working directory with `python -m`):
/// `containers/failures/container/*` in crossbar-examples rely on it.
/// Started from elsewhere, `check` says where it looked.
#[test]
fn a_component_without_pythonpath_comes_from_the_start_directory() {
    let p = Project::new();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.cbdir().join("config.json")).expect("config"))
            .expect("json");
    config["workers"][1]
        .as_object_mut()
        .expect("container")
        .remove("options");
    std::fs::write(
        p.cbdir().join("config-nopath.json"),
        serde_json::to_vec_pretty(&config).expect("json"),
    )
    .expect("write");
    let args = ["--cbdir", ".crossbar", "--config", "config-nopath.json"];
    let out = p
        .trellis(&p.root, &[&["check"][..], &args].concat())
        .output()
        .expect("check");
    assert!(out.status.success(), "{out:?}");

    let sub = [
        "--cbdir",
        "my-project/.crossbar",
        "--config",
        "config-nopath.json",
    ];
    let out = p
        .trellis(&p.parent, &[&["check"][..], &sub].concat())
        .output()
        .expect("check from above");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("cannot import 'hello'")
            && text.contains(&*p.parent.to_string_lossy())
            && text.contains("the directory the node was started from"),
        "{text}"
    );

    let log = p.root.join("nopath.log");
    let _node = p.start(&p.root, &[&["start"][..], &args].concat(), &log);
    wait_port(p.web, "web");
    p.hello_answers_from_the_project(&log, "the component from the start directory");
}

/// An origin server for archives (`tests/py/archive_origin.py`), over TLS
/// when given a certificate and key.
struct Origin {
    child: KillOnDrop,
    port: u16,
}

impl Origin {
    fn start(dir: &Path, tls: Option<(&Path, &Path)>) -> Origin {
        use std::io::BufRead;
        let port = free_port();
        let mut cmd = Command::new(python());
        cmd.arg(crate::support::repo_root().join("tests/py/archive_origin.py"))
            .arg(port.to_string())
            .arg(dir);
        if let Some((cert, key)) = tls {
            cmd.arg(cert).arg(key);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("origin server");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        out.read_line(&mut first).expect("origin says ready");
        assert_eq!(first.trim(), "ready");
        // Keep reading: it prints a line per request.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Origin {
            child: KillOnDrop(child),
            port,
        }
    }
}

/// crossbar-examples serve autobahn-js from an archive Crossbar.io
/// downloads (`"download": true`, an `origin` that redirects, `hashes`):
/// `check` says it will be fetched, `start` fetches it over HTTP or HTTPS,
/// follows the redirect, checks the fingerprint, keeps it in the node
/// directory and serves from it; the next start needs no network. A
/// download whose fingerprint is wrong is refused, naming both, and
/// nothing is kept.
#[test]
fn an_archive_with_download_is_fetched_from_its_origin_once() {
    use sha2::Digest;
    use std::io::Write;
    let tmp = tempfile::tempdir().expect("tmp");
    let files = tmp.path().join("origin");
    std::fs::create_dir_all(&files).expect("mkdir");
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file(
        "autobahn-js-browser-1.0/autobahn.min.js",
        zip::write::SimpleFileOptions::default(),
    )
    .expect("zip entry");
    zip.write_all(b"/* autobahn */\n").expect("zip write");
    let bytes = zip.finish().expect("zip").into_inner();
    std::fs::write(files.join("autobahn.zip"), &bytes).expect("zip file");
    let good = hex::encode(sha2::Sha256::digest(&bytes));

    let root = tmp.path().join("project");
    let cb = root.join(".crossbar");
    std::fs::create_dir_all(&cb).expect("mkdir");
    let web = free_port();
    let write_config = |origin: &str, hashes: &[&str]| {
        let cfg = json!({"version": 2, "workers": [{"type": "router", "transports": [{
            "type": "web", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": web},
            "paths": {"autobahn": {
                "type": "archive", "archive": "autobahn-v1.0.zip", "origin": origin,
                "object_prefix": "autobahn-js-browser-1.0", "default_object": "autobahn.min.js",
                "download": true, "cache": true, "hashes": hashes,
                "mime_types": {".min.js": "text/javascript"}}}}]}]});
        std::fs::write(
            cb.join("config.json"),
            serde_json::to_vec(&cfg).expect("json"),
        )
        .expect("config");
    };
    let run = |env: &[(&str, &Path)]| {
        let mut cmd = trellis();
        cmd.current_dir(&root)
            .args(["start", "--cbdir", ".crossbar"])
            .env_remove("TRELLIS_NODE_DIR")
            .env_remove("TRELLIS_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    };
    let serves = |what: &str| {
        wait_port(web, what);
        let (code, body) = http_get(web, "/autobahn/");
        assert_eq!(
            (code.as_str(), body.as_str()),
            ("200", "/* autobahn */\n"),
            "{what}"
        );
    };

    // Over HTTP, through a redirect.
    let origin = Origin::start(&files, None);
    write_config(
        &format!("http://127.0.0.1:{}/old/autobahn.zip", origin.port),
        &[&good],
    );
    let out = trellis()
        .current_dir(&root)
        .args(["check", "--cbdir", ".crossbar"])
        .output()
        .expect("check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("paths.autobahn.archive") && err.contains("`trellis start` downloads it from"),
        "{err}"
    );
    assert!(
        !cb.join("autobahn-v1.0.zip").exists(),
        "check downloads nothing"
    );
    {
        let _node = KillOnDrop(run(&[]).spawn().expect("start"));
        serves("the downloaded archive");
    }
    assert_eq!(
        std::fs::read(cb.join("autobahn-v1.0.zip")).expect("kept in the node directory"),
        bytes
    );
    drop(origin);
    {
        let _node = KillOnDrop(run(&[]).spawn().expect("start again"));
        serves("the kept archive, with the origin gone");
    }

    // A fingerprint that does not match: refused, nothing kept.
    std::fs::remove_file(cb.join("autobahn-v1.0.zip")).expect("rm");
    let origin = Origin::start(&files, None);
    let other = "ab".repeat(32);
    write_config(
        &format!("http://127.0.0.1:{}/files/autobahn.zip", origin.port),
        &[&other],
    );
    let out = run(&[])
        .stderr(Stdio::piped())
        .output()
        .expect("start with a wrong hash");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("paths.autobahn.origin") && err.contains(&good) && err.contains(&other),
        "{err}"
    );
    assert!(!cb.join("autobahn-v1.0.zip").exists(), "nothing kept");
    let leftovers: Vec<_> = std::fs::read_dir(&cb)
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains("download"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    drop(origin);

    // Over HTTPS, the origin's CA from SSL_CERT_FILE.
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("rcgen");
    let (cert, key) = (tmp.path().join("origin.crt"), tmp.path().join("origin.key"));
    std::fs::write(&cert, c.cert.pem()).expect("cert");
    std::fs::write(&key, c.signing_key.serialize_pem()).expect("key");
    let origin = Origin::start(&files, Some((&cert, &key)));
    write_config(
        &format!("https://127.0.0.1:{}/old/autobahn.zip", origin.port),
        &[&good],
    );
    {
        let _node = KillOnDrop(
            run(&[("SSL_CERT_FILE", &cert)])
                .spawn()
                .expect("start over https"),
        );
        serves("the archive downloaded over HTTPS");
    }
    let _ = &origin.child;
}
