//! The `trellis` binary: parses the command line, sets up logging and
//! signals, and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use trellis::config;
use trellis::logging::{self, LogFormat};

/// Exit status for an invalid configuration (sysexits EX_CONFIG); pair it
/// with `RestartPreventExitStatus=78` in a systemd unit.
const EX_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(name = "trellis", version, about = "Trellis: a WAMP v2 router node")]
struct Cli {
    /// Log level: error, warn, info, debug or trace (TRELLIS_LOG or RUST_LOG override it).
    #[arg(long, global = true, default_value = "info")]
    loglevel: String,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the node (the embedded default config when none is found).
    Start {
        /// The node config (else $TRELLIS_CONFIG, ./.trellis/node.json,
        /// $XDG_CONFIG_HOME/trellis/node.json, /etc/trellis/node.json).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The node directory (logs and runtime files).
        #[arg(long)]
        node_dir: Option<PathBuf>,
    },
    /// Validate a config without starting anything; exit 0 if valid, 78 if not.
    Check {
        /// The node config (located as for `start`).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Print version, serializers, transports and features.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            print_version();
            ExitCode::SUCCESS
        }
        Command::Check { config } => {
            let path = config::locate(config.as_deref());
            match config::load(path.as_deref()) {
                Ok(cfg) => {
                    println!("{}: OK", cfg.source);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprint!("{e}");
                    ExitCode::from(EX_CONFIG)
                }
            }
        }
        Command::Start { config, node_dir } => {
            if let Err(e) = logging::init(&cli.loglevel, cli.log_format) {
                eprintln!("trellis: {e}");
                return ExitCode::from(2);
            }
            if let Some(dir) = node_dir
                && let Err(e) = std::fs::create_dir_all(&dir)
            {
                eprintln!(
                    "trellis: cannot create the node directory {}: {e}",
                    dir.display()
                );
                return ExitCode::from(1);
            }
            let path = config::locate(config.as_deref());
            let cfg = match config::load(path.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    eprintln!(
                        "trellis: nothing was started; fix the config and run `trellis check` to verify"
                    );
                    return ExitCode::from(EX_CONFIG);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("trellis: cannot start the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            runtime.block_on(async move {
                let shutdown = CancellationToken::new();
                if let Err(e) = watch_signals(shutdown.clone()) {
                    eprintln!("trellis: cannot install signal handlers: {e}");
                    return ExitCode::from(1);
                }
                match trellis::node::run(cfg, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err((index, e)) => {
                        tracing::error!(worker = index, "{e}");
                        ExitCode::from(1)
                    }
                }
            })
        }
    }
}

/// SIGTERM or SIGINT start a graceful stop; a second SIGINT exits at once.
fn watch_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received: stopping"),
            _ = int.recv() => tracing::info!("SIGINT received: stopping (press Ctrl-C again to exit at once)"),
        }
        shutdown.cancel();
        if int.recv().await.is_some() {
            tracing::warn!("second SIGINT: exiting now");
            std::process::exit(130);
        }
    });
    Ok(())
}

fn print_version() {
    println!("Trellis {}", env!("CARGO_PKG_VERSION"));
    println!("  WAMP:        v2, Basic Profile + the Advanced Profile features announced below");
    println!("  transports:  websocket (tcp)");
    println!("  serializers: json, msgpack, cbor (and json.batched, msgpack.batched)");
    println!(
        "  auth:        anonymous, ticket, wampcra, cryptosign (static or dynamic), one-time tokens (embedded, redis)"
    );
    let roles = router_worker::session::router_roles();
    for (role, v) in &roles {
        if let Some(features) = v
            .as_dict()
            .and_then(|d| d.get("features"))
            .and_then(|f| f.as_dict())
        {
            let names: Vec<&str> = features.keys().map(String::as_str).collect();
            println!("  {role:<12} {}", names.join(", "));
        }
    }
}
