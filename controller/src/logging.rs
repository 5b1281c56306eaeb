//! Logging to stderr through tracing (stdout stays free for command output).
//!
//! The level comes from `TRELLIS_LOG`, else `RUST_LOG`, else `--loglevel`;
//! all accept tracing's filter syntax (`info,router_worker=debug`). Under
//! journald (`JOURNAL_STREAM` set) timestamps and colours are left out, as
//! the journal adds its own.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable; plain under journald, coloured on a terminal.
    Auto,
    /// Human-readable with colours when stderr is a terminal.
    Pretty,
    /// One JSON object per line, for machines.
    Json,
}

/// Install the global subscriber.
///
/// # Errors
/// A message naming the bad filter if `loglevel` or the environment's
/// filter cannot be parsed.
pub fn init(loglevel: &str, format: LogFormat) -> Result<(), String> {
    let spec = std::env::var("TRELLIS_LOG")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| loglevel.to_owned());
    let filter = EnvFilter::try_new(&spec).map_err(|e| {
        format!("invalid log level or filter {spec:?}: {e} (use error, warn, info, debug or trace)")
    })?;
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder.json().try_init(),
        _ if journald && format == LogFormat::Auto => {
            builder.without_time().with_ansi(false).try_init()
        }
        _ => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}
