//! Crossbar.io's `archive` web service: files served from a zip archive
//! (read at bind time, objects inflated per request with a size bound, so
//! a zip bomb costs the requester a 500, not the router its memory).

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;

/// Largest object inflated for one request.
pub const MAX_OBJECT: u64 = 64 << 20;

/// One `archive` path.
pub struct Archive {
    /// None: the file is not there, and every object is 404 (as Crossbar.io
    /// serves it).
    zip: Option<Mutex<zip::ZipArchive<std::io::Cursor<Vec<u8>>>>>,
    prefix: String,
    default_object: String,
    /// `options.default_file`: the object for a path that names nothing.
    default_file: Option<String>,
    pub mime_types: BTreeMap<String, String>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What a request for an object found.
pub enum Object {
    Found(Vec<u8>),
    NotFound,
    /// Larger than [`MAX_OBJECT`], or not readable.
    Unreadable,
}

impl Archive {
    /// Read `file` (relative to the node directory). A file that is not
    /// there makes an archive with nothing in it ([`Archive::missing`]), as
    /// Crossbar.io serves it.
    ///
    /// # Errors
    /// The file cannot be read or is not a zip archive (the message says
    /// which, and with `origin` set, how to have it downloaded).
    pub fn open(
        file: &str,
        origin: Option<&str>,
        prefix: Option<&str>,
        default_object: Option<&str>,
        mime_types: BTreeMap<String, String>,
    ) -> Result<Archive, String> {
        let zip = match std::fs::read(file) {
            Ok(bytes) => Some(Mutex::new(
                zip::ZipArchive::new(std::io::Cursor::new(bytes))
                    .map_err(|e| format!("{file:?} is not a zip archive: {e}"))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(match origin {
                    Some(o) => format!(
                        "cannot read {file:?} ({e}); with \"download\": true, `trellis start` fetches it from its origin {:?}",
                        trellis_config::preflight::shown_url(o)
                    ),
                    None => format!("cannot read {file:?}: {e}"),
                });
            }
        };
        Ok(Archive {
            zip,
            // Joined as Crossbar.io joins it (`os.path.join`): a prefix
            // without a trailing slash is a directory all the same.
            prefix: match prefix.unwrap_or("") {
                "" => String::new(),
                p if p.ends_with('/') => p.to_owned(),
                p => format!("{p}/"),
            },
            default_object: default_object.unwrap_or("index.html").to_owned(),
            default_file: None,
            mime_types,
        })
    }

    /// With Crossbar.io's `options.default_file`: the object served for a
    /// path that names nothing in the archive.
    #[must_use]
    pub fn with_default_file(mut self, file: Option<String>) -> Archive {
        self.default_file = file;
        self
    }

    /// Whether the file was not there (every object is 404).
    pub fn missing(&self) -> bool {
        self.zip.is_none()
    }

    /// The object for `rest` (the request path under the service, not
    /// decoded): the default object for a directory.
    pub fn get(&self, rest: &str) -> (String, Object) {
        match (self.get_limited(rest, MAX_OBJECT), &self.default_file) {
            ((_, Object::NotFound), Some(file)) => self.get_limited(file, MAX_OBJECT),
            (found, _) => found,
        }
    }

    fn get_limited(&self, rest: &str, limit: u64) -> (String, Object) {
        let Ok(decoded) = percent_encoding::percent_decode_str(rest).decode_utf8() else {
            return (String::new(), Object::NotFound);
        };
        let rest = decoded.trim_start_matches('/');
        if rest.split('/').any(|s| s == ".." || s.contains('\0')) {
            return (String::new(), Object::NotFound);
        }
        let name = if rest.is_empty() || rest.ends_with('/') {
            format!("{}{rest}{}", self.prefix, self.default_object)
        } else {
            format!("{}{rest}", self.prefix)
        };
        let Some(zip) = &self.zip else {
            return (name, Object::NotFound);
        };
        let Ok(mut zip) = zip.lock() else {
            return (name, Object::Unreadable);
        };
        let Ok(entry) = zip.by_name(&name) else {
            return (name, Object::NotFound);
        };
        if entry.is_dir() {
            return (name, Object::NotFound);
        }
        let mut out = Vec::new();
        // The declared size may lie: read one byte more than allowed.
        match entry.take(limit + 1).read_to_end(&mut out) {
            Ok(n) if (n as u64) <= limit => (name, Object::Found(out)),
            _ => (name, Object::Unreadable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn archive(dir: &std::path::Path) -> Archive {
        archive_with_prefix(dir, "web/")
    }

    fn archive_with_prefix(dir: &std::path::Path, prefix: &str) -> Archive {
        let file = dir.join("site.zip");
        let mut w = zip::ZipWriter::new(std::fs::File::create(&file).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        for (name, body) in [
            ("web/index.html", "<h1>zip</h1>".to_owned()),
            ("web/js/app.js", "x()".to_owned()),
            ("web/big.txt", "0".repeat(5000)),
            ("secret.txt", "no".to_owned()),
        ] {
            w.start_file(name, opts).unwrap();
            w.write_all(body.as_bytes()).unwrap();
        }
        w.finish().unwrap();
        Archive::open(
            file.to_str().unwrap(),
            None,
            Some(prefix),
            None,
            BTreeMap::new(),
        )
        .unwrap()
    }

    #[test]
    fn default_file_answers_for_what_is_not_there() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive(dir.path()).with_default_file(Some("index.html".into()));
        assert_eq!(found(a.get("app/route").1).as_deref(), Some("<h1>zip</h1>"));
        assert_eq!(found(a.get("js/app.js").1).as_deref(), Some("x()"));
        // Still nothing outside the prefix.
        assert_eq!(
            found(a.get("../secret.txt").1).as_deref(),
            Some("<h1>zip</h1>")
        );
        let none = archive(dir.path());
        assert!(matches!(none.get("app/route").1, Object::NotFound));
    }

    /// crossbar-examples write `"object_prefix": "autobahn-js-browser-20.9.2"`,
    /// no trailing slash: Crossbar.io joins it as a directory.
    #[test]
    fn a_prefix_without_its_slash_is_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive_with_prefix(dir.path(), "web");
        assert_eq!(found(a.get("/").1).as_deref(), Some("<h1>zip</h1>"));
        assert_eq!(found(a.get("js/app.js").1).as_deref(), Some("x()"));
        assert!(matches!(a.get("../secret.txt").1, Object::NotFound));
    }

    fn found(o: Object) -> Option<String> {
        match o {
            Object::Found(b) => Some(String::from_utf8(b).unwrap()),
            _ => None,
        }
    }

    #[test]
    fn objects_defaults_and_nothing_outside_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive(dir.path());
        assert_eq!(found(a.get("").1).as_deref(), Some("<h1>zip</h1>"));
        assert_eq!(found(a.get("/js/app.js").1).as_deref(), Some("x()"));
        assert_eq!(found(a.get("js/%61pp.js").1).as_deref(), Some("x()"));
        for p in [
            "../secret.txt",
            "js/../../secret.txt",
            "%2e%2e/secret.txt",
            "nope",
            "js/",
        ] {
            assert!(matches!(a.get(p).1, Object::NotFound), "{p}");
        }
        // An object over the bound is refused, whatever its header says.
        assert!(matches!(
            a.get_limited("big.txt", 1000).1,
            Object::Unreadable
        ));
        assert!(matches!(a.get_limited("big.txt", 5000).1, Object::Found(_)));
    }

    #[test]
    fn a_missing_archive_is_empty_and_a_bad_one_refused() {
        let a = Archive::open(
            "/nonexistent.zip",
            Some("https://x/a.zip"),
            None,
            None,
            BTreeMap::new(),
        )
        .expect("served as empty, as Crossbar.io serves it");
        assert!(a.missing());
        assert!(matches!(a.get("").1, Object::NotFound));
        assert!(matches!(a.get("index.html").1, Object::NotFound));
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.zip");
        std::fs::write(&junk, "not a zip").unwrap();
        let err =
            Archive::open(junk.to_str().unwrap(), None, None, None, BTreeMap::new()).unwrap_err();
        assert!(err.contains("is not a zip archive"), "{err}");
    }
}
