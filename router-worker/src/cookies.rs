//! Cookie tracking (Crossbar.io's `cookie` on a WebSocket transport or
//! path) and what the `cookie` auth method needs of it.
//!
//! A browser's WebSocket upgrade that carries no valid tracking cookie gets
//! a new one (`Set-Cookie`, random, `HttpOnly`, `SameSite`, `Secure` as
//! configured). When a session on that connection logs in by another
//! method, the cookie remembers who it is; a later connection with the
//! cookie that offers `cookie` is welcomed as that principal without
//! credentials. A session that leaves with `wamp.close.logout` makes the
//! cookie anonymous again.
//!
//! The store is bounded (`max_cookies`, the oldest go first) and expires
//! cookies after `max_age`. A `file` store keeps the logged-in cookies
//! across restarts: one JSON object per line, appended as logins and
//! logouts happen, rewritten without the dead lines at start and when it
//! has grown to twice the store's size; the file is the node user's only
//! (0600), since a cookie is a credential. Cookie values never reach the
//! log, the transport details or the authenticators.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use trellis_config::router::CookieConfig;

/// Who a cookie logged in as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CookieLogin {
    pub authid: String,
    pub authrole: String,
    pub authmethod: String,
    pub authprovider: String,
    pub realm: String,
}

#[derive(Debug, Clone)]
struct Record {
    /// Seconds since the epoch.
    created: u64,
    login: Option<CookieLogin>,
}

/// One line of the cookie file.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    id: String,
    created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    login: Option<CookieLogin>,
}

struct Inner {
    records: HashMap<String, Record>,
    /// Lines in the file now (to know when to rewrite it).
    file_lines: usize,
}

/// A transport's (or path's) cookies. Its `Debug` shows no cookie.
pub struct CookieStore {
    cfg: CookieConfig,
    /// `Secure`: the config's, else whether the endpoint has TLS.
    secure: bool,
    file: Option<PathBuf>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for CookieStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieStore")
            .field("name", &self.cfg.name)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl CookieStore {
    /// The store for `cfg` (a file store reads its file); `tls`: the
    /// endpoint has TLS (the default of `secure`).
    ///
    /// # Errors
    /// The file cannot be read or written (the message names it).
    pub fn open(cfg: &CookieConfig, tls: bool) -> Result<CookieStore, String> {
        let file = (cfg.store.kind == "file").then(|| PathBuf::from(&cfg.store.filename));
        let store = CookieStore {
            secure: cfg.secure.unwrap_or(tls),
            cfg: cfg.clone(),
            file,
            inner: Mutex::new(Inner {
                records: HashMap::new(),
                file_lines: 0,
            }),
        };
        if let Some(path) = &store.file {
            let text = if cfg.store.purge_on_startup {
                String::new()
            } else {
                match std::fs::read_to_string(path) {
                    Ok(t) => t,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                    Err(e) => {
                        return Err(format!(
                            "cannot read the cookie file {}: {e}",
                            path.display()
                        ));
                    }
                }
            };
            let now = now_secs();
            let mut inner = store.lock();
            let mut bad = 0usize;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let Ok(l) = serde_json::from_str::<Line>(line) else {
                    bad += 1;
                    continue;
                };
                inner.records.insert(
                    l.id,
                    Record {
                        created: l.created,
                        login: l.login,
                    },
                );
            }
            inner
                .records
                .retain(|_, r| r.login.is_some() && r.created + cfg.max_age > now);
            store.evict(&mut inner);
            store.rewrite(&mut inner)?;
            if bad > 0 {
                warn!(file = %path.display(), lines = bad, "cookie file lines that are not cookie records were dropped");
            }
            info!(file = %path.display(), cookies = inner.records.len(), "cookie store read");
            drop(inner);
        }
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data: go on with it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keep fewer than `max_cookies`: the expired go, then a tenth of
    /// the store at once (the oldest, those not logged in first), so that a
    /// flood of new connections costs one pass per tenth, not one per
    /// connection.
    fn evict(&self, inner: &mut Inner) {
        let max = self.cfg.max_cookies.max(1);
        if inner.records.len() < max {
            return;
        }
        let now = now_secs();
        let max_age = self.cfg.max_age;
        inner.records.retain(|_, r| r.created + max_age > now);
        if inner.records.len() < max {
            return;
        }
        let cut = (max / 10).max(1).min(inner.records.len());
        let mut order: Vec<((bool, u64), String)> = inner
            .records
            .iter()
            .map(|(k, r)| ((r.login.is_some(), r.created), k.clone()))
            .collect();
        order.select_nth_unstable_by(cut - 1, |a, b| a.0.cmp(&b.0));
        for (_, k) in order.into_iter().take(cut) {
            inner.records.remove(&k);
        }
    }

    /// Write the file anew with the logged-in cookies only (0600, through
    /// a temporary file and a rename).
    fn rewrite(&self, inner: &mut Inner) -> Result<(), String> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let mut text = String::new();
        let mut n = 0;
        for (id, r) in &inner.records {
            if r.login.is_some() {
                let line = Line {
                    id: id.clone(),
                    created: r.created,
                    login: r.login.clone(),
                };
                if let Ok(l) = serde_json::to_string(&line) {
                    text.push_str(&l);
                    text.push('\n');
                    n += 1;
                }
            }
        }
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| format!("cannot write the cookie file {}: {e}", path.display()))?;
        inner.file_lines = n;
        Ok(())
    }

    /// Append a line for `id` as it is now (a login or a logout).
    fn persist(&self, inner: &mut Inner, id: &str) {
        let Some(path) = &self.file else {
            return;
        };
        let Some(r) = inner.records.get(id) else {
            return;
        };
        let line = Line {
            id: id.to_owned(),
            created: r.created,
            login: r.login.clone(),
        };
        // Bounded by the store (at most 2 × max_cookies + 64 lines), and
        // O(1) to check: the store's size, not a count of its logins.
        let result = if inner.file_lines + 1 > 2 * inner.records.len() + 64 {
            self.rewrite(inner)
        } else {
            let append = || -> std::io::Result<()> {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(path)?;
                let mut text = serde_json::to_string(&line).map_err(std::io::Error::other)?;
                text.push('\n');
                f.write_all(text.as_bytes())
            };
            append()
                .map(|()| inner.file_lines += 1)
                .map_err(|e| format!("cannot write the cookie file {}: {e}", path.display()))
        };
        if let Err(e) = result {
            warn!("{e}: the login is kept in memory only");
        }
    }

    /// The cookie a connection goes on with: the one presented when it is
    /// known and alive, else a new one; and whether it is new (it must
    /// then be set).
    pub fn track(&self, presented: Option<&str>) -> (String, bool) {
        let now = now_secs();
        let mut inner = self.lock();
        if let Some(id) = presented
            && let Some(r) = inner.records.get(id)
        {
            if r.created + self.cfg.max_age > now {
                return (id.to_owned(), false);
            }
            inner.records.remove(id);
        }
        self.evict(&mut inner);
        let id = self.new_id();
        inner.records.insert(
            id.clone(),
            Record {
                created: now,
                login: None,
            },
        );
        (id, true)
    }

    fn new_id(&self) -> String {
        let len = self.cfg.length.clamp(12, 64);
        let bytes: [u8; 48] = proto::auth::random_bytes();
        let mut id = URL_SAFE_NO_PAD.encode(bytes);
        id.truncate(len);
        id
    }

    /// Who the cookie logged in as, if it did and is still alive.
    pub fn login(&self, id: &str) -> Option<CookieLogin> {
        let inner = self.lock();
        let r = inner.records.get(id)?;
        (r.created + self.cfg.max_age > now_secs())
            .then(|| r.login.clone())
            .flatten()
    }

    /// Remember that the cookie's connection logged in as `login`.
    pub fn set_login(&self, id: &str, login: CookieLogin) {
        let mut inner = self.lock();
        let Some(r) = inner.records.get_mut(id) else {
            return;
        };
        if r.login.as_ref() == Some(&login) {
            return;
        }
        r.login = Some(login);
        self.persist(&mut inner, id);
    }

    /// Forget the cookie's login (`wamp.close.logout`).
    pub fn logout(&self, id: &str) {
        let mut inner = self.lock();
        let Some(r) = inner.records.get_mut(id) else {
            return;
        };
        if r.login.take().is_some() {
            self.persist(&mut inner, id);
        }
    }

    /// The `Set-Cookie` header value for `id`.
    pub fn set_cookie(&self, id: &str) -> String {
        let same_site = match self.cfg.same_site.as_str() {
            "strict" => "Strict",
            "none" => "None",
            _ => "Lax",
        };
        let mut v = format!(
            "{}={id}; Max-Age={}; Path=/; HttpOnly; SameSite={same_site}",
            self.cfg.name, self.cfg.max_age
        );
        if self.secure {
            v.push_str("; Secure");
        }
        v
    }

    /// The tracking cookie's value in a `Cookie` header, if there.
    pub fn presented<'a>(&self, header: &'a str) -> Option<&'a str> {
        header.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == self.cfg.name).then_some(v.trim())
        })
    }

    /// A `Cookie` header without the tracking cookie (what authenticators
    /// and logs may see).
    pub fn without_ours(&self, header: &str) -> String {
        header
            .split(';')
            .map(str::trim)
            .filter(|pair| pair.split_once('=').is_none_or(|(k, _)| k != self.cfg.name))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The router's cookie stores: one per file, so that two paths naming one
/// file share it; a memory store per transport or path.
#[derive(Debug, Default)]
pub struct CookieStores {
    files: Vec<(String, std::sync::Arc<CookieStore>)>,
}

impl CookieStores {
    /// The store of a WebSocket transport (or path) `t`, if it tracks
    /// cookies.
    ///
    /// # Errors
    /// A file store cannot be read or written.
    pub fn for_transport(
        &mut self,
        t: &trellis_config::router::TransportConfig,
    ) -> Result<Option<std::sync::Arc<CookieStore>>, String> {
        let Some(cfg) = &t.cookie else {
            return Ok(None);
        };
        let tls = t.endpoint.tls.is_some();
        if cfg.store.kind == "file"
            && let Some((_, s)) = self.files.iter().find(|(f, _)| *f == cfg.store.filename)
        {
            return Ok(Some(s.clone()));
        }
        let store = std::sync::Arc::new(CookieStore::open(cfg, tls)?);
        if cfg.store.kind == "file" {
            self.files.push((cfg.store.filename.clone(), store.clone()));
        }
        Ok(Some(store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(store: serde_json::Value) -> CookieConfig {
        serde_json::from_value(serde_json::json!({"store": store, "max_cookies": 3}))
            .expect("cookie config")
    }

    fn login(who: &str) -> CookieLogin {
        CookieLogin {
            authid: who.into(),
            authrole: "user".into(),
            authmethod: "wampcra".into(),
            authprovider: "static".into(),
            realm: "realm1".into(),
        }
    }

    #[test]
    fn a_cookie_is_tracked_logged_in_and_out() {
        let s = CookieStore::open(&cfg(serde_json::json!({"type": "memory"})), false).unwrap();
        let (id, new) = s.track(None);
        assert!(new && id.len() == 24, "{id}");
        assert_eq!(s.track(Some(&id)), (id.clone(), false));
        let (other, new) = s.track(Some("forged-or-forgotten"));
        assert!(new && other != id);
        assert_eq!(s.login(&id), None);
        s.set_login(&id, login("joe"));
        assert_eq!(s.login(&id), Some(login("joe")));
        s.logout(&id);
        assert_eq!(s.login(&id), None);
        let header = s.set_cookie(&id);
        assert!(header.starts_with(&format!(
            "cbtid={id}; Max-Age=604800; Path=/; HttpOnly; SameSite=Lax"
        )));
        assert!(!header.contains("Secure"));
        assert_eq!(
            s.presented(&format!("a=1; cbtid={id}; b=2")),
            Some(id.as_str())
        );
        assert_eq!(s.without_ours(&format!("a=1; cbtid={id}; b=2")), "a=1; b=2");
    }

    #[test]
    fn the_store_is_bounded_oldest_unlogged_first() {
        let s = CookieStore::open(&cfg(serde_json::json!({"type": "memory"})), true).unwrap();
        let (a, _) = s.track(None);
        s.set_login(&a, login("a"));
        let (b, _) = s.track(None);
        let (c, _) = s.track(None);
        let (d, _) = s.track(None);
        // Three at most: an anonymous one went, the logged-in one stayed.
        let inner = s.lock();
        assert_eq!(inner.records.len(), 3);
        assert!(inner.records.contains_key(&a) && inner.records.contains_key(&d));
        assert!(!(inner.records.contains_key(&b) && inner.records.contains_key(&c)));
        drop(inner);
        assert!(s.set_cookie(&a).ends_with("; Secure"));
    }

    #[test]
    fn a_file_store_keeps_logins_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cookies.dat");
        let store = serde_json::json!({"type": "file", "filename": file.display().to_string()});
        let s = CookieStore::open(&cfg(store.clone()), false).unwrap();
        let (joe, _) = s.track(None);
        let (ann, _) = s.track(None);
        s.set_login(&joe, login("joe"));
        s.set_login(&ann, login("ann"));
        s.logout(&ann);
        drop(s);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let s = CookieStore::open(&cfg(store.clone()), false).unwrap();
        assert_eq!(s.login(&joe), Some(login("joe")));
        assert_eq!(s.login(&ann), None);
        assert_eq!(s.track(Some(&joe)), (joe.clone(), false));
        // Rewritten at start: one line, the live login.
        assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 1);
        drop(s);
        let mut purge = store;
        purge["purge_on_startup"] = serde_json::json!(true);
        let s = CookieStore::open(&cfg(purge), false).unwrap();
        assert_eq!(s.login(&joe), None);
    }
}
