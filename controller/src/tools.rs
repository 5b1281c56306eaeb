//! The CLI's helpers that need no running node: `trellis init` (a working
//! node directory), `trellis keygen` (an Ed25519 key pair for cryptosign)
//! and `trellis convert` (JSON to YAML and back).

use std::path::{Path, PathBuf};

/// The node config `trellis init` writes: JSON with `//` line comments,
/// which Trellis reads.
pub const INIT_CONFIG: &str = r#"// A Trellis node, as `trellis init` wrote it. Lines starting with // are
// comments (Trellis reads them; a strict JSON tool does not).
// Check it with `trellis check`, run it with `trellis start` from the
// directory above .trellis/. The README's Configuration section lists
// every key.
{
    "version": 2,
    "workers": [
        {
            "type": "router",
            "id": "router1",
            "realms": [
                {
                    "name": "realm1",
                    "roles": [
                        {
                            // Anyone who connects gets this role: every
                            // action on every URI. Fine for a start on your
                            // own machine; give real roles and logins
                            // (ticket, wampcra, cryptosign) before you open
                            // the port to others.
                            "name": "anonymous",
                            "permissions": [
                                {
                                    "uri": "",
                                    "match": "prefix",
                                    "allow": {"call": true, "register": true, "publish": true, "subscribe": true},
                                    "disclose": {"caller": false, "publisher": false},
                                    "cache": true
                                }
                            ]
                        }
                    ]
                }
            ],
            "transports": [
                {
                    // One port for the web page (/) and WAMP over
                    // WebSocket (/ws). Loopback only: set "interface" to
                    // "0.0.0.0" to listen on every address.
                    "type": "web",
                    "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": 8080},
                    "paths": {
                        // Relative to this directory (.trellis/).
                        "/": {"type": "static", "directory": "../web"},
                        "ws": {"type": "websocket"}
                    }
                }
            ]
        }
    ]
}
"#;

/// The page `trellis init` writes: it joins realm1 over WebSocket with no
/// library, to show the node works.
pub const INIT_PAGE: &str = r#"<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>Trellis</title></head>
<body>
<h1>Trellis is running</h1>
<p id="status">connecting to WAMP at /ws ...</p>
<script>
  // A WAMP session in a few lines: HELLO, then WELCOME (or ABORT).
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  const ws = new WebSocket(url, ["wamp.2.json"]);
  const status = document.getElementById("status");
  ws.onopen = () => ws.send(JSON.stringify([1, "realm1", {"roles": {"caller": {}, "subscriber": {}}}]));
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    status.textContent = msg[0] === 2
      ? "joined realm1 as session " + msg[1] + " over " + url
      : "refused: " + JSON.stringify(msg);
  };
  ws.onerror = () => { status.textContent = "cannot connect to " + url; };
</script>
</body>
</html>
"#;

/// Write a working node directory under `dir`: `.trellis/node.json` and
/// `web/index.html`. Returns the files written.
///
/// # Errors
/// A file exists already (nothing is overwritten), or cannot be written.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let files = [
        (dir.join(".trellis/node.json"), INIT_CONFIG),
        (dir.join("web/index.html"), INIT_PAGE),
    ];
    for (path, _) in &files {
        if path.exists() {
            return Err(format!(
                "{} exists already: nothing was written (remove it, or init another directory)",
                path.display()
            ));
        }
    }
    let mut written = Vec::new();
    for (path, text) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// A new Ed25519 key pair, in the forms cryptosign principals and
/// autobahn clients take.
pub fn keygen() -> String {
    let seed = proto::auth::random_bytes::<32>();
    let private = hex::encode(seed);
    let public = proto::auth::cryptosign_pubkey(&seed);
    format!(
        "private key (seed, hex; keep it secret): {private}\n\
         public key (hex):                        {public}\n\
         \n\
         In the node config, a cryptosign principal:\n\
         \x20 \"cryptosign\": {{\"type\": \"static\", \"principals\": {{\"alice\": {{\"realm\": \"realm1\", \"role\": \"user\", \"authorized_keys\": [\"{public}\"]}}}}}}\n\
         In autobahn-python: autobahn.wamp.cryptosign.CryptosignKey.from_bytes(bytes.fromhex(\"<private key>\"))\n\
         In autobahn-js:     autobahn.auth_cryptosign with the private key as its hex seed\n"
    )
}

/// A WAMP-SCRAM principal for `authid`, derived from the password read on
/// standard input (prompted for without echo on a terminal), as the JSON
/// object `auth.scram.principals` takes: `{"authid": {...}}`.
///
/// # Errors
/// A bad KDF or cost, an empty password, or standard input unreadable.
pub fn scram_credential(
    authid: &str,
    role: &str,
    kdf: &str,
    iterations: Option<u32>,
    memory: Option<u32>,
) -> Result<String, String> {
    let iterations = iterations.unwrap_or(if kdf == "pbkdf2" { 600_000 } else { 4096 });
    let memory = memory.or((kdf == "argon2id-13").then_some(512));
    let kdf = proto::scram::Kdf::parse(kdf, iterations, memory)?;
    let password = zeroize::Zeroizing::new(read_password()?);
    if password.trim().is_empty() {
        return Err("the password is empty: type it, or pipe it to standard input".into());
    }
    let salt = proto::auth::random_bytes::<16>();
    let c = proto::scram::derive(password.as_bytes(), &salt, kdf)?;
    let mut principal = serde_json::json!({
        "kdf": kdf.name(),
        "iterations": kdf.iterations(),
        "salt": hex::encode(&c.salt),
        "stored-key": hex::encode(c.stored_key),
        "server-key": hex::encode(c.server_key),
        "role": role,
    });
    if let Some(m) = kdf.memory() {
        principal["memory"] = m.into();
    }
    let out = serde_json::json!({ authid: principal });
    serde_json::to_string_pretty(&out).map_err(|e| e.to_string())
}

/// One line from standard input, without its line end; on a terminal, with
/// a prompt on standard error and echo off.
fn read_password() -> Result<String, String> {
    use nix::sys::termios;
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let saved = if stdin.is_terminal() {
        eprint!("password (not echoed): ");
        let _ = std::io::stderr().flush();
        termios::tcgetattr(&stdin).ok().inspect(|t| {
            let mut quiet = t.clone();
            quiet.local_flags.remove(termios::LocalFlags::ECHO);
            let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &quiet);
        })
    } else {
        None
    };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &t);
        eprintln!();
    }
    read.map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let end = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(end);
    Ok(line)
}

/// Turn a JSON config into YAML or back, by the files' extensions.
///
/// # Errors
/// An extension is not `.json`, `.yaml` or `.yml`; the input cannot be
/// read or parsed; the output exists or cannot be written.
pub fn convert(input: &Path, output: &Path) -> Result<(), String> {
    let kind = |p: &Path| match p
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("json") => Ok(false),
        Some("yaml" | "yml") => Ok(true),
        _ => Err(format!(
            "{}: give a .json, .yaml or .yml file (the extension says which format)",
            p.display()
        )),
    };
    let (from_yaml, to_yaml) = (kind(input)?, kind(output)?);
    if output.exists() {
        return Err(format!(
            "{} exists already: nothing was written",
            output.display()
        ));
    }
    let text = std::fs::read_to_string(input)
        .map_err(|e| format!("cannot read {}: {e}", input.display()))?;
    let value: serde_json::Value = if from_yaml {
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: not YAML: {e}", input.display()))?
    } else {
        serde_json::from_str(&trellis_config::node::strip_line_comments(&text))
            .map_err(|e| format!("{}: not JSON: {e}", input.display()))?
    };
    let out = if to_yaml {
        serde_saphyr::to_string(&value).map_err(|e| e.to_string())?
    } else {
        let mut s = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
        s.push('\n');
        s
    };
    std::fs::write(output, out).map_err(|e| format!("cannot write {}: {e}", output.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_node_that_checks_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let files = init(dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        let cfg = trellis_config::node::load(Some(&dir.path().join(".trellis/node.json"))).unwrap();
        assert_eq!(cfg.workers.len(), 1);
        let err = init(dir.path()).unwrap_err();
        assert!(err.contains("exists already"), "{err}");
    }

    #[test]
    fn keygen_gives_a_matching_pair() {
        let text = keygen();
        let field = |label: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(label))
                .map(|v| v.trim().to_owned())
                .unwrap()
        };
        let private = field("private key (seed, hex; keep it secret):");
        let public = field("public key (hex):");
        let mut seed = [0u8; 32];
        hex::decode_to_slice(&private, &mut seed).unwrap();
        assert_eq!(proto::auth::cryptosign_pubkey(&seed), public);
        assert!(proto::auth::parse_pubkey(&public).is_ok());
    }

    #[test]
    fn convert_round_trips_and_names_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("a.json");
        std::fs::write(&json, INIT_CONFIG).unwrap();
        let yaml = dir.path().join("a.yaml");
        convert(&json, &yaml).unwrap();
        let back = dir.path().join("b.json");
        convert(&yaml, &back).unwrap();
        let original: serde_json::Value =
            serde_json::from_str(&trellis_config::node::strip_line_comments(INIT_CONFIG)).unwrap();
        let again: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&back).unwrap()).unwrap();
        assert_eq!(original, again);
        assert!(trellis_config::node::load(Some(&yaml)).is_ok());
        assert!(
            convert(&json, &yaml)
                .unwrap_err()
                .contains("exists already")
        );
        let txt = dir.path().join("a.txt");
        assert!(
            convert(&json, &txt)
                .unwrap_err()
                .contains(".json, .yaml or .yml")
        );
        std::fs::write(dir.path().join("bad.json"), "{").unwrap();
        let err = convert(&dir.path().join("bad.json"), &dir.path().join("c.yaml")).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
    }
}
