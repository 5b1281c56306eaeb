//! Where the config and the node directory are: `--config`, `--cbdir`,
//! `.trellis/node.json`, `.crossbar/config.json|yaml`, as Crossbar.io finds them.

use super::*;

/// The config of a Crossbar.io node directory: `DIR/config.json`, else
/// `DIR/config.yaml` (`None` if it has neither).
pub fn in_node_dir(dir: &Path) -> Option<PathBuf> {
    ["config.json", "config.yaml", "config.yml"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// JSON with whole-line `//` comments made plain JSON: each comment line
/// becomes empty, so error positions stay right. (A JSON string cannot
/// span lines, so no string is touched.)
pub fn strip_line_comments(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Find the config file the way users expect: `--config`, then
/// `$TRELLIS_CONFIG`, `./.trellis/node.json`, Crossbar.io's
/// `./.crossbar/config.json` or `config.yaml`,
/// `$XDG_CONFIG_HOME/trellis/node.json` (or `~/.config/…`),
/// `/etc/trellis/node.json`. `None` means: use the embedded default.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os("TRELLIS_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let mut candidates = vec![PathBuf::from(".trellis/node.json")];
    candidates.extend(in_node_dir(Path::new(".crossbar")));
    match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(x) => candidates.push(PathBuf::from(x).join("trellis/node.json")),
        None => {
            if let Some(home) = std::env::var_os("HOME") {
                candidates.push(PathBuf::from(home).join(".config/trellis/node.json"));
            }
        }
    }
    candidates.push(PathBuf::from("/etc/trellis/node.json"));
    candidates.into_iter().find(|p| p.is_file())
}

/// The config to read and the node directory to run in.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    /// The config file (`None`: the embedded default).
    pub config: Option<PathBuf>,
    /// The node directory, absolute (symlinks kept, as Crossbar.io keeps
    /// them in `--cbdir`).
    pub node_dir: PathBuf,
}

/// Where a Crossbar.io project keeps its node directory.
pub const CROSSBAR_DIR: &str = ".crossbar";

/// The config and node directory for `trellis start` and `check`, as
/// Crossbar.io finds them:
/// - `--cbdir DIR --config NAME`: `DIR/NAME` for a relative NAME (as
///   `crossbar start --config config-foo.json` reads it from the node
///   directory), else NAME as given;
/// - `--config PATH` alone: PATH (else `.crossbar/PATH` when only that
///   exists); the node directory is the config's own when it is a
///   `.crossbar` directory, else `.trellis`;
/// - `--cbdir DIR` alone: `DIR/config.json|yaml`, else the usual places;
/// - neither: the usual places ([`locate`]), and a `.crossbar/config.*`
///   found there makes `.crossbar` the node directory.
///
/// `$TRELLIS_NODE_DIR` stands for a missing `--cbdir`.
pub fn locate_node(config: Option<&Path>, node_dir: Option<&Path>) -> Located {
    let env_dir = std::env::var_os("TRELLIS_NODE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let given_dir = node_dir.map(Path::to_owned).or(env_dir);
    // The node directory that goes with a config found or named.
    let dir_of = |cfg: &Path| -> PathBuf {
        match cfg.parent() {
            Some(parent) if parent.file_name().is_some_and(|n| n == CROSSBAR_DIR) => {
                paths::absolute(parent)
            }
            _ => paths::absolute(Path::new(".trellis")),
        }
    };
    match (config, given_dir) {
        (Some(c), Some(d)) => {
            let in_dir = d.join(c);
            let config = if c.is_relative() && (in_dir.is_file() || !c.is_file()) {
                in_dir
            } else {
                c.to_owned()
            };
            Located {
                config: Some(config),
                node_dir: paths::absolute(&d),
            }
        }
        (Some(c), None) => {
            let in_crossbar = Path::new(CROSSBAR_DIR).join(c);
            let config = if c.is_relative() && !c.is_file() && in_crossbar.is_file() {
                in_crossbar
            } else {
                c.to_owned()
            };
            Located {
                node_dir: dir_of(&config),
                config: Some(config),
            }
        }
        (None, Some(d)) => Located {
            config: in_node_dir(&d).or_else(|| locate(None)),
            node_dir: paths::absolute(&d),
        },
        (None, None) => {
            let config = locate(None);
            Located {
                node_dir: config
                    .as_deref()
                    .map_or_else(|| paths::absolute(Path::new(".trellis")), dir_of),
                config,
            }
        }
    }
}
