//! The `trellis` binary: parses the command line, sets up logging and
//! signals, and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use trellis::logging::{self, LogFormat};
use trellis::{control, logs, node, preflight, worker};
use trellis_config::node as config;

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
        /// The node config (else NODE_DIR/config.json or config.yaml when
        /// --node-dir is given, else $TRELLIS_CONFIG, ./.trellis/node.json,
        /// ./.crossbar/config.json|yaml, $XDG_CONFIG_HOME/trellis/node.json,
        /// /etc/trellis/node.json). YAML when it ends in .yaml or .yml.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The node directory: control socket, logs/ (else
        /// $TRELLIS_NODE_DIR, else ./.trellis). `--cbdir` as in Crossbar.io.
        #[arg(long, alias = "cbdir")]
        node_dir: Option<PathBuf>,
    },
    /// Validate a config without starting anything; exit 0 if valid, 78 if not.
    Check {
        /// The node config (located as for `start`).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// A node directory whose config.json or config.yaml to check
        /// (`--cbdir` as in Crossbar.io).
        #[arg(long, alias = "cbdir")]
        node_dir: Option<PathBuf>,
    },
    /// Show the workers of a running node: pid, state, uptime, restarts, memory.
    Status {
        /// The node directory (as for `start`).
        #[arg(long)]
        node_dir: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Refresh the table every second, with each realm's message rates
        /// (`trellis top` does the same).
        #[arg(long, conflicts_with = "json")]
        watch: bool,
    },
    /// Write a working node directory: DIR/.trellis/node.json (a web page
    /// and a WebSocket path on 127.0.0.1:8080, commented) and
    /// DIR/web/index.html. Nothing is overwritten.
    Init {
        /// Where (default: the current directory).
        dir: Option<PathBuf>,
    },
    /// Print a new Ed25519 key pair for cryptosign: the private seed and
    /// the public key, in hex, with how to use them.
    Keygen,
    /// Derive a WAMP-SCRAM principal from a password (read from standard
    /// input, never from the command line) and print it as JSON for
    /// `auth.scram.principals`: the router keeps only derived keys.
    ScramCredential {
        /// The principal's authid (the login name).
        authid: String,
        /// The role the principal gets.
        #[arg(long, default_value = "user")]
        role: String,
        /// The key derivation function: argon2id-13 or pbkdf2.
        #[arg(long, default_value = "argon2id-13")]
        kdf: String,
        /// Iterations (Argon2's time cost; default 4096 for argon2id-13,
        /// 600000 for pbkdf2).
        #[arg(long)]
        iterations: Option<u32>,
        /// Argon2's memory in KiB (argon2id-13 only).
        #[arg(long)]
        memory: Option<u32>,
    },
    /// Turn a JSON config into YAML or back (the extensions say which).
    Convert {
        /// The config to read (.json, .yaml, .yml).
        input: PathBuf,
        /// The file to write (.json, .yaml, .yml); not overwritten.
        output: PathBuf,
    },
    /// The status table and message rates, refreshed every second (as
    /// `trellis status --watch`).
    Top {
        /// The node directory (as for `start`).
        #[arg(long)]
        node_dir: Option<PathBuf>,
    },
    /// Stop a running node and wait until it has stopped.
    Stop {
        /// The node directory (as for `start`).
        #[arg(long)]
        node_dir: Option<PathBuf>,
        /// Seconds to wait for the node to stop.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Print a worker's log (NODE_DIR/logs/WORKER.log).
    Logs {
        /// The worker id.
        worker: String,
        /// The node directory (as for `start`).
        #[arg(long)]
        node_dir: Option<PathBuf>,
        /// Keep printing what is appended.
        #[arg(short, long)]
        follow: bool,
        /// How many lines from the end to print first.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
    },
    /// Print version, serializers, transports and features.
    Version,
    /// Run a guest program under the shim (started by the controller).
    #[command(hide = true)]
    GuestShim {
        /// Seconds the guest gets after SIGTERM before everything is killed.
        #[arg(long, default_value_t = 10.0)]
        grace: f64,
        /// The guest program and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Run a worker (started by the controller, not by hand).
    #[command(hide = true)]
    Worker {
        /// The worker kind.
        #[arg(long = "type", value_enum)]
        kind: worker::Kind,
        /// The worker id.
        #[arg(long)]
        id: String,
        /// The controller's control socket.
        #[arg(long)]
        control: PathBuf,
        /// The process name (`options.title`).
        #[arg(long)]
        title: Option<String>,
        /// The runtime's threads (`options.threads`); one per CPU the
        /// worker may use when absent.
        #[arg(long)]
        threads: Option<usize>,
    },
}

/// mimalloc for every process of the node (controller, router, container):
/// a router allocates per message, and glibc's malloc took about a tenth of
/// its CPU on small calls.
#[global_allocator]
static ALLOCATOR: trellis_alloc::Allocator = trellis_alloc::Allocator;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            print_version();
            ExitCode::SUCCESS
        }
        Command::Init { dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("."));
            match trellis::tools::init(&dir) {
                Ok(files) => {
                    for f in files {
                        println!("wrote {}", f.display());
                    }
                    println!(
                        "check it with `trellis check` and run it with `trellis start`, both in {}; then open http://127.0.0.1:8080/",
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("trellis init: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Keygen => {
            print!("{}", trellis::tools::keygen());
            ExitCode::SUCCESS
        }
        Command::ScramCredential {
            authid,
            role,
            kdf,
            iterations,
            memory,
        } => match trellis::tools::scram_credential(&authid, &role, &kdf, iterations, memory) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("trellis scram-credential: {e}");
                ExitCode::from(2)
            }
        },
        Command::Convert { input, output } => match trellis::tools::convert(&input, &output) {
            Ok(()) => {
                println!("wrote {}", output.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("trellis convert: {e}");
                ExitCode::from(1)
            }
        },
        Command::Check { config, node_dir } => {
            let found = config::locate_node(config.as_deref(), node_dir.as_deref());
            match config::load(found.config.as_deref()) {
                Ok(mut cfg) => {
                    let dir = found.node_dir;
                    cfg.resolve_paths(&dir);
                    if let Err(found) = preflight::preflight(&cfg, &dir) {
                        eprint!("{found}");
                        return ExitCode::from(EX_CONFIG);
                    }
                    for w in cfg
                        .warnings()
                        .into_iter()
                        .chain(trellis_config::preflight::preflight_warnings(&cfg, &dir))
                    {
                        eprintln!("{}: warning: {}: {}", cfg.source, w.path, w.message);
                    }
                    println!("{}: OK", cfg.source);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprint!("{e}");
                    ExitCode::from(EX_CONFIG)
                }
            }
        }
        Command::Top { node_dir }
        | Command::Status {
            node_dir,
            watch: true,
            ..
        } => {
            let dir = control::node_dir(node_dir.as_deref());
            let show = |screen: String| {
                // Clear the terminal, then the new screen.
                print!("\x1b[2J\x1b[H{screen}");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            };
            match block_on(control::watch(&dir, Duration::from_secs(1), show)) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) | Err(e) => {
                    eprintln!("trellis status: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Status { node_dir, json, .. } => {
            let dir = control::node_dir(node_dir.as_deref());
            match block_on(control::status_and_backplane(&dir)) {
                Ok(Ok((workers, (backplane, components, logins)))) => {
                    if json {
                        let mut workers = serde_json::to_value(&workers).unwrap_or_default();
                        for w in workers.as_array_mut().into_iter().flatten() {
                            if let Some(c) = w["id"].as_str().and_then(|id| components.get(id)) {
                                w["components"] = serde_json::to_value(c).unwrap_or_default();
                            }
                        }
                        let mut doc = serde_json::json!({ "workers": workers });
                        if !logins.is_empty() {
                            doc["logins"] = serde_json::to_value(&logins).unwrap_or_default();
                        }
                        if !backplane.is_empty() {
                            doc["backplane"] = serde_json::to_value(&backplane).unwrap_or_default();
                        }
                        println!("{doc}");
                    } else {
                        print!("{}", control::format_table(&workers));
                        print!("{}", control::format_backplane(&backplane));
                        print!("{}", control::format_components(&components));
                        print!("{}", control::format_logins(&logins));
                    }
                    ExitCode::SUCCESS
                }
                Ok(Err(e)) | Err(e) => {
                    eprintln!("trellis status: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Stop { node_dir, timeout } => {
            let dir = control::node_dir(node_dir.as_deref());
            match block_on(control::stop(&dir, Duration::from_secs(timeout))) {
                Ok(Ok(())) => {
                    eprintln!("trellis: the node in {} has stopped", dir.display());
                    ExitCode::SUCCESS
                }
                Ok(Err(e)) | Err(e) => {
                    eprintln!("trellis stop: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Logs {
            worker,
            node_dir,
            follow,
            lines,
        } => {
            let dir = control::node_dir(node_dir.as_deref());
            match logs::show(&dir, &worker, lines, follow) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("trellis logs: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Worker {
            kind,
            id,
            control,
            title,
            threads,
        } => {
            if let Some(t) = title
                && let Ok(name) = std::ffi::CString::new(t)
                && let Err(e) = nix::sys::prctl::set_name(&name)
            {
                eprintln!("trellis worker: cannot set the process name (options.title): {e}");
            }
            run_worker(kind, id, control, threads, cli.log_format)
        }
        Command::GuestShim { grace, command } => match command.split_first() {
            Some((program, args)) => {
                trellis::guest::run(program, args, Duration::from_secs_f64(grace.max(0.0)))
            }
            None => ExitCode::from(2),
        },
        Command::Start { config, node_dir } => {
            let spec = logging::effective_spec(&cli.loglevel);
            // The controller's own router code serves only the control
            // socket: its per-session lines are noise unless asked for.
            let own = if spec.contains("router_worker") {
                spec.clone()
            } else {
                format!("{spec},router_worker=warn")
            };
            let journald = std::env::var_os("JOURNAL_STREAM").is_some();
            if let Err(e) = logging::init_with(&own, cli.log_format, journald) {
                eprintln!("trellis: {e}");
                return ExitCode::from(2);
            }
            let found = config::locate_node(config.as_deref(), node_dir.as_deref());
            let path = found.config;
            let mut cfg = match config::load(path.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    eprintln!(
                        "trellis: nothing was started; fix the config and run `trellis check` to verify"
                    );
                    return ExitCode::from(EX_CONFIG);
                }
            };
            let dir = found.node_dir;
            cfg.resolve_paths(&dir);
            let fetched = block_on(trellis::download::fetch_missing_archives(&cfg, &dir))
                .and_then(|r| r.map_err(|found| found.to_string()));
            if let Err(found) = fetched {
                eprint!("{found}");
                eprintln!(
                    "trellis: nothing was started; fix the config or fetch the archive yourself"
                );
                return ExitCode::from(EX_CONFIG);
            }
            if let Err(found) = preflight::preflight(&cfg, &dir) {
                eprint!("{found}");
                eprintln!(
                    "trellis: nothing was started; fix the config and run `trellis check` to verify"
                );
                return ExitCode::from(EX_CONFIG);
            }
            for w in cfg
                .warnings()
                .into_iter()
                .chain(trellis_config::preflight::preflight_warnings(&cfg, &dir))
            {
                tracing::warn!(config = %cfg.source, key = %w.path, "{}", w.message);
            }
            let opts = node::Options {
                paths_base: dir.clone(),
                node_dir: dir,
                config_path: path,
                log_format: cli.log_format,
                log_spec: spec,
            };
            let runtime = match runtime(None) {
                Ok(r) => r,
                Err(code) => return code,
            };
            runtime.block_on(async move {
                let shutdown = CancellationToken::new();
                let (reload_tx, reload) = tokio::sync::mpsc::channel(1);
                if let Err(e) = watch_signals(shutdown.clone(), Some(reload_tx)) {
                    eprintln!("trellis: cannot install signal handlers: {e}");
                    return ExitCode::from(1);
                }
                match node::run(cfg, opts, shutdown, reload).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("trellis: {e}");
                        ExitCode::from(1)
                    }
                }
            })
        }
    }
}

/// The multi-threaded runtime, with `threads` workers (else one per CPU
/// the process may use, or `TOKIO_WORKER_THREADS`).
fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n);
    }
    builder.enable_all().build().map_err(|e| {
        eprintln!("trellis: cannot start the async runtime: {e}");
        ExitCode::from(1)
    })
}

/// Run a short client task on a small runtime.
fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(f))
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// `trellis worker`: a router or container process under the controller.
fn run_worker(
    kind: worker::Kind,
    id: String,
    control: PathBuf,
    threads: Option<usize>,
    format: LogFormat,
) -> ExitCode {
    let spec = std::env::var("TRELLIS_LOG").unwrap_or_else(|_| "info".into());
    let level = match logging::init_with(&spec, format, false) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("trellis worker: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = match worker::read_config(kind) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let runtime = match runtime(threads) {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        if let Err(e) = watch_worker_signals(shutdown.clone()) {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
        match worker::run(kind, id, &control, cfg, level, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::from(1)
            }
        }
    })
}

/// Workers stop on SIGTERM (from the controller); SIGINT is left to the
/// controller, which decides.
fn watch_worker_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!("SIGTERM received: stopping");
                    shutdown.cancel();
                    return;
                }
                _ = int.recv() => tracing::debug!("SIGINT ignored: the controller stops workers"),
            }
        }
    });
    Ok(())
}

/// SIGTERM or SIGINT start a graceful stop; a second SIGINT exits at once.
fn watch_signals(
    shutdown: CancellationToken,
    reload: Option<tokio::sync::mpsc::Sender<()>>,
) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if let Some(tx) = &reload {
                // One pending reload is enough: it reads the newest file.
                let _ = tx.try_send(());
            }
        }
    });
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
    println!(
        "Trellis {} (commit {}, {}-{})",
        env!("CARGO_PKG_VERSION"),
        env!("TRELLIS_COMMIT"),
        std::env::consts::ARCH,
        std::env::consts::OS
    );
    println!("  built with:  {}", env!("TRELLIS_DEPS"));
    println!("  WAMP:        v2, Basic Profile + the Advanced Profile features announced below");
    println!(
        "  transports:  websocket, rawsocket, web (static files + websocket paths); tcp or unix socket"
    );
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
