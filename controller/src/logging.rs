//! Logging to stderr through tracing (stdout stays free for command output).
//!
//! The level comes from `TRELLIS_LOG`, else `RUST_LOG`, else `--loglevel`;
//! all accept tracing's filter syntax (`info,router_worker=debug`). Under
//! journald (`JOURNAL_STREAM` set) timestamps and colours are left out, as
//! the journal adds its own.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

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

/// Changes the log level of a running process (`set_loglevel`).
#[derive(Clone)]
pub struct LevelHandle(reload::Handle<EnvFilter, Registry>);

impl LevelHandle {
    /// Replace the filter.
    ///
    /// # Errors
    /// The filter does not parse.
    pub fn set(&self, spec: &str) -> Result<(), String> {
        let filter = parse(spec)?;
        self.0
            .reload(filter)
            .map_err(|e| format!("cannot change the log level: {e}"))
    }
}

/// A level (`info`) or a tracing filter (`info,router_worker=debug`). A
/// bare word must be a level: tracing would take `loud` for a target name
/// and silently log nothing.
///
/// # Errors
/// What is wrong, and what is accepted.
pub fn parse(spec: &str) -> Result<EnvFilter, String> {
    trellis_config::node::log_filter(spec).map(without_payloads)
}

/// Crates whose trace output holds whole frames (payloads, tickets,
/// signatures): capped at debug whatever the filter says. Trellis's own
/// trace lines name message types, ids and sizes only.
const PAYLOAD_LOGGERS: [&str; 2] = ["tungstenite", "tokio_tungstenite"];

fn without_payloads(mut filter: EnvFilter) -> EnvFilter {
    if filter.max_level_hint() != Some(tracing::level_filters::LevelFilter::TRACE) {
        return filter;
    }
    for target in PAYLOAD_LOGGERS {
        if let Ok(d) = format!("{target}=debug").parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// Install the global subscriber.
///
/// # Errors
/// A message naming the bad filter if `loglevel` or the environment's
/// filter cannot be parsed.
pub fn init(loglevel: &str, format: LogFormat) -> Result<LevelHandle, String> {
    let spec = effective_spec(loglevel);
    init_with(&spec, format, std::env::var_os("JOURNAL_STREAM").is_some())
}

/// The filter in force: `TRELLIS_LOG`, else `RUST_LOG`, else `loglevel`.
pub fn effective_spec(loglevel: &str) -> String {
    std::env::var("TRELLIS_LOG")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| loglevel.to_owned())
}

/// Install the global subscriber with this filter; `journald` drops
/// timestamps and colours (the journal adds its own).
///
/// # Errors
/// The filter does not parse.
pub fn init_with(spec: &str, format: LogFormat, journald: bool) -> Result<LevelHandle, String> {
    let (filter, handle) = reload::Layer::new(parse(spec)?);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let fmt: Box<dyn Layer<_> + Send + Sync> = match format {
        LogFormat::Json => fmt.json().boxed(),
        _ if journald && format == LogFormat::Auto => fmt.without_time().with_ansi(false).boxed(),
        _ => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    Ok(LevelHandle(handle))
}

#[cfg(test)]
mod tests {
    use tracing::level_filters::LevelFilter;

    use super::*;

    #[test]
    fn trace_never_reaches_frame_loggers() {
        for spec in [
            "trace",
            "info,tungstenite=trace",
            "tokio_tungstenite=trace,debug",
        ] {
            let s = parse(spec).unwrap().to_string();
            assert!(s.contains("tungstenite=debug"), "{spec}: {s}");
            assert!(s.contains("tokio_tungstenite=debug"), "{spec}: {s}");
            assert!(!s.contains("tungstenite=trace"), "{spec}: {s}");
        }
        // Below trace nothing is added: tungstenite stays as quiet as asked.
        let f = parse("info").unwrap();
        assert_eq!(f.max_level_hint(), Some(LevelFilter::INFO));
        assert!(!f.to_string().contains("tungstenite"));
    }
}
