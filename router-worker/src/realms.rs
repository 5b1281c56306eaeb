//! The router's realms by name: the table every session task looks its
//! realm up in at HELLO, changed in place by a config reload. Below the
//! transports and the session, which both read it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::realm::{self, RealmHandle};
use trellis_config::router as config;

/// The realms of a router by name, shared by every session task.
pub type Realms = Arc<RealmTable>;

/// The router's realms; changed in place by [`RealmTable::apply`] on a
/// config reload.
#[derive(Default, Debug)]
pub struct RealmTable {
    // A std RwLock: read for one map lookup at HELLO, written on a reload;
    // never held across an await.
    map: std::sync::RwLock<HashMap<String, RealmHandle>>,
    /// Given to realms added by a reload.
    tokens: std::sync::RwLock<Option<realm::TokenMint>>,
    /// The cluster's backplane, for realms added by a reload.
    cluster: Option<Arc<crate::backplane::Backplane>>,
    /// The router's `options.compat`, for realms added by a reload.
    compat: config::Compat,
}

impl RealmTable {
    /// A table of running realms; `tokens` and `cluster` are given to
    /// realms a reload adds.
    pub fn new(
        map: HashMap<String, RealmHandle>,
        tokens: Option<realm::TokenMint>,
        cluster: Option<Arc<crate::backplane::Backplane>>,
        compat: config::Compat,
    ) -> RealmTable {
        RealmTable {
            map: std::sync::RwLock::new(map),
            tokens: std::sync::RwLock::new(tokens),
            cluster,
            compat,
        }
    }

    /// Start a realm: with a cluster, linked to the other nodes both ways.
    pub fn start(
        cfg: &config::RealmConfig,
        tokens: Option<realm::TokenMint>,
        cluster: Option<&Arc<crate::backplane::Backplane>>,
        compat: config::Compat,
    ) -> RealmHandle {
        let handle = RealmHandle::spawn(
            cfg,
            tokens,
            cluster.map(|b| b.realm_link(&cfg.name)),
            compat,
        );
        if let Some(b) = cluster {
            b.add_realm(handle.clone());
            let (b, h) = (b.clone(), handle.clone());
            tokio::spawn(async move { b.subscribe_realm(h).await });
        }
        handle
    }

    /// The realm named `name`.
    pub fn get(&self, name: &str) -> Option<RealmHandle> {
        self.map.read().ok()?.get(name).cloned()
    }

    /// Every realm, sorted by name.
    pub fn all(&self) -> Vec<RealmHandle> {
        let mut v: Vec<RealmHandle> = self
            .map
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn insert(&self, cfg: &config::RealmConfig) {
        let tokens = self.tokens.read().ok().and_then(|t| t.clone());
        if let Ok(mut m) = self.map.write() {
            m.insert(
                cfg.name.clone(),
                RealmTable::start(cfg, tokens, self.cluster.as_ref(), self.compat),
            );
        }
    }

    /// Bring the realms in line with `new` without touching sessions of
    /// realms that stay: roles, permissions and URI checking change in
    /// place, new realms start, removed realms close their sessions
    /// (GOODBYE `wamp.close.close_realm`). A realm whose `store` changed
    /// cannot change in place.
    ///
    /// # Errors
    /// A realm's store changed: nothing was changed.
    pub async fn apply(
        &self,
        old: &[config::RealmConfig],
        new: &[config::RealmConfig],
    ) -> Result<Vec<String>, String> {
        for n in new {
            if let Some(o) = old.iter().find(|o| o.name == n.name)
                && o.store != n.store
            {
                return Err(format!(
                    "realm {:?}: its store (event history) changed, which needs a restart of the router",
                    n.name
                ));
            }
        }
        let mut changes = Vec::new();
        for n in new {
            match (old.iter().find(|o| o.name == n.name), self.get(&n.name)) {
                (Some(o), Some(handle)) => {
                    if o != n {
                        handle.reconfigure(n).await;
                        changes.push(format!("realm {:?} reconfigured", n.name));
                    }
                }
                _ => {
                    self.insert(n);
                    changes.push(format!("realm {:?} added", n.name));
                }
            }
        }
        for o in old {
            if !new.iter().any(|n| n.name == o.name) {
                let removed = self.map.write().ok().and_then(|mut m| m.remove(&o.name));
                if let Some(handle) = removed {
                    handle.close().await;
                    changes.push(format!("realm {:?} removed", o.name));
                }
            }
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn realm(stats: serde_json::Value) -> config::RealmConfig {
        let mut v = serde_json::json!({"name": "realm1", "roles": [{"name": "anonymous"}]});
        if !stats.is_null() {
            v["stats"] = stats;
        }
        serde_json::from_value(v).expect("a realm config")
    }

    /// A reload that adds, changes or removes a realm's `stats` applies to
    /// the sessions that join after it.
    #[tokio::test]
    async fn a_reload_changes_the_stats_new_sessions_get() {
        let plain = realm(serde_json::Value::Null);
        let table = RealmTable::new(HashMap::new(), None, None, config::Compat::default());
        table
            .apply(&[], std::slice::from_ref(&plain))
            .await
            .expect("first apply");
        let handle = table.get("realm1").expect("realm1 runs");
        assert!(handle.session_stats().is_none());

        let metered = realm(serde_json::json!({"trigger_after_rated_messages": 7}));
        let changes = table
            .apply(std::slice::from_ref(&plain), std::slice::from_ref(&metered))
            .await
            .expect("reload");
        assert_eq!(changes, vec!["realm \"realm1\" reconfigured".to_owned()]);
        let stats = handle.session_stats().expect("stats after the reload");
        assert_eq!(stats.trigger_after_rated_messages, 7);

        table
            .apply(std::slice::from_ref(&metered), std::slice::from_ref(&plain))
            .await
            .expect("reload back");
        assert!(handle.session_stats().is_none());
    }
}
