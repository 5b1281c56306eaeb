//! `trellis start`: run every router of a validated config until a signal.

use router_worker::{Router, RouterError};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::NodeConfig;

/// Bind every router (all listeners open before anything serves, so a port
/// clash stops the node before it accepts a single client), then serve until
/// `shutdown`.
///
/// # Errors
/// The first router that cannot start, naming its worker index.
pub async fn run(cfg: NodeConfig, shutdown: CancellationToken) -> Result<(), (usize, RouterError)> {
    let started = std::time::Instant::now();
    let mut bound = Vec::new();
    for (index, rc) in &cfg.routers {
        let router = Router::bind(rc).await.map_err(|e| (*index, e))?;
        bound.push((
            rc.id.clone().unwrap_or_else(|| format!("worker{index}")),
            router,
        ));
    }
    let mut tasks = Vec::new();
    for (id, router) in bound {
        let addrs: Vec<String> = router.local_addrs().iter().map(|a| a.to_string()).collect();
        info!(worker = %id, listening = %addrs.join(", "), "router ready");
        tasks.push(tokio::spawn(router.serve(shutdown.child_token())));
    }
    info!(
        config = %cfg.source,
        startup_ms = started.elapsed().as_millis() as u64,
        "node ready"
    );
    for t in tasks {
        let _ = t.await;
    }
    info!("node stopped");
    Ok(())
}
