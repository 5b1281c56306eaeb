//! Per-worker logs: `NODE_DIR/logs/WORKER.log`, rotated by size, and a
//! copy of every line on the controller's stderr prefixed with the worker
//! id (so journald gets it all). Also `trellis logs`: the last lines of a
//! worker's file, and `--follow`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use crate::logging::LogFormat;

/// Longest line kept whole; longer ones are split.
const MAX_LINE: usize = 64 * 1024;

/// The log directory of a node.
pub fn dir(node_dir: &Path) -> PathBuf {
    node_dir.join("logs")
}

/// One worker's log file with size-based rotation.
pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    keep: u32,
}

impl LogFile {
    /// Open (append) `dir/ID.log`.
    ///
    /// # Errors
    /// The directory or file cannot be created.
    pub fn open(dir: &Path, id: &str, max_size: u64, keep: u32) -> io::Result<LogFile> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{id}.log"));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path,
            file,
            size,
            max_size,
            keep,
        })
    }

    /// Append one line (a newline is added), rotating first if the file
    /// would grow past its limit.
    ///
    /// # Errors
    /// The write or the rotation failed.
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        let n = line.len() as u64 + 1;
        if self.size > 0 && self.size + n > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += n;
        Ok(())
    }

    /// `ID.log` → `ID.log.1` → … → `ID.log.KEEP` (dropped).
    fn rotate(&mut self) -> io::Result<()> {
        let name = |i: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        if self.keep == 0 {
            self.file.set_len(0)?;
        } else {
            for i in (1..self.keep).rev() {
                let from = name(i);
                if from.exists() {
                    std::fs::rename(&from, name(i + 1))?;
                }
            }
            std::fs::rename(&self.path, name(1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// Where one worker's output goes: its file and the controller's stderr.
#[derive(Clone)]
pub struct Sink {
    id: Arc<str>,
    // A std Mutex: held only for one synchronous line write, never across
    // an await. Both output pipes of the worker share the file.
    file: Arc<Mutex<Option<LogFile>>>,
    format: LogFormat,
}

impl Sink {
    /// A sink for worker `id` writing to `file` (none if it could not be
    /// opened; stderr still gets everything).
    pub fn new(id: &str, file: Option<LogFile>, format: LogFormat) -> Sink {
        Sink {
            id: id.into(),
            file: Arc::new(Mutex::new(file)),
            format,
        }
    }

    /// Record one line of the worker's output.
    pub fn line(&self, line: &str, stream: &str) {
        if let Ok(mut f) = self.file.lock()
            && let Some(file) = f.as_mut()
            && let Err(e) = file.write_line(line)
        {
            eprintln!(
                "[controller] cannot write {}: {e}; the worker's log goes to stderr only",
                file.path.display()
            );
            *f = None;
        }
        let mut err = io::stderr().lock();
        let _ = match self.format {
            LogFormat::Json => writeln!(err, "{}", as_json(&self.id, stream, line)),
            _ => writeln!(err, "[{}] {line}", self.id),
        };
    }

    /// Copy a pipe of the worker's output, line by line, until it closes.
    pub async fn pump<R: AsyncRead + Unpin>(self, pipe: R, stream: &'static str) {
        let mut lines = FramedRead::new(pipe, LinesCodec::new_with_max_length(MAX_LINE));
        while let Some(item) = lines.next().await {
            match item {
                Ok(l) => self.line(&l, stream),
                Err(LinesCodecError::MaxLineLengthExceeded) => {
                    self.line("[line longer than 64 KiB cut]", stream)
                }
                Err(LinesCodecError::Io(_)) => break,
            }
        }
    }
}

/// A worker's line for `--log-format json`: its own JSON object with a
/// `worker` field added, or the raw text wrapped in one.
fn as_json(id: &str, stream: &str, line: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("worker".into(), id.into());
            serde_json::Value::Object(m).to_string()
        }
        _ => serde_json::json!({ "worker": id, "stream": stream, "message": line }).to_string(),
    }
}

/// `trellis logs`: print the last `lines` lines of `WORKER.log`, then, with
/// `follow`, everything appended (across rotations) until interrupted.
///
/// # Errors
/// A message naming the file, or listing the workers that have logs.
pub fn show(node_dir: &Path, worker: &str, lines: usize, follow: bool) -> Result<(), String> {
    let dir = dir(node_dir);
    let path = dir.join(format!("{worker}.log"));
    let mut file = File::open(&path).map_err(|e| {
        let known: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".log"))
                            .map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
        if known.is_empty() {
            format!(
                "no log for worker {worker:?} at {} ({e}); is {} the node directory (--node-dir)?",
                path.display(),
                node_dir.display()
            )
        } else {
            format!(
                "no log for worker {worker:?} at {} ({e}); workers with logs: {}",
                path.display(),
                known.join(", ")
            )
        }
    })?;
    let mut out = io::stdout().lock();
    for l in tail(&mut file, lines).map_err(|e| format!("cannot read {}: {e}", path.display()))? {
        if writeln!(out, "{l}").is_err() {
            return Ok(());
        }
    }
    let _ = out.flush();
    if !follow {
        return Ok(());
    }
    drop(out);
    follow_file(&path, file).map_err(|e| format!("cannot follow {}: {e}", path.display()))
}

/// The last `n` lines of a file (reads at most the last 4 MiB).
fn tail(file: &mut File, n: usize) -> io::Result<Vec<String>> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(4 << 20);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(n);
    Ok(all[from..].iter().map(|s| (*s).to_owned()).collect())
}

/// Print what is appended to `path`; reopen it when it is rotated.
fn follow_file(path: &Path, file: File) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut ino = file.metadata()?.ino();
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n > 0 {
            let mut out = io::stdout().lock();
            if out.write_all(line.as_bytes()).is_err() || out.flush().is_err() {
                return Ok(());
            }
            continue;
        }
        std::thread::sleep(Duration::from_millis(200));
        // Rotated: the name now points at a new file; read it from the start.
        if let Ok(meta) = std::fs::metadata(path)
            && meta.ino() != ino
            && let Ok(f) = File::open(path)
        {
            ino = meta.ino();
            reader = BufReader::new(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_configured_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = LogFile::open(dir.path(), "w", 100, 2).unwrap();
        for i in 0..30 {
            f.write_line(&format!("line {i:02} ........")).unwrap();
        }
        let names: Vec<String> = {
            let mut v: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names, ["w.log", "w.log.1", "w.log.2"]);
        for n in &names {
            let len = std::fs::metadata(dir.path().join(n)).unwrap().len();
            assert!(len <= 100, "{n} has {len} bytes");
        }
        let last = std::fs::read_to_string(dir.path().join("w.log")).unwrap();
        assert!(last.ends_with("line 29 ........\n"), "{last}");
        let mut file = File::open(dir.path().join("w.log")).unwrap();
        assert_eq!(tail(&mut file, 1).unwrap(), ["line 29 ........"]);
    }

    #[test]
    fn json_lines_get_the_worker_id() {
        let v: serde_json::Value =
            serde_json::from_str(&as_json("r1", "stderr", r#"{"level":"INFO","msg":"x"}"#))
                .unwrap();
        assert_eq!(v["worker"], "r1");
        assert_eq!(v["msg"], "x");
        let v: serde_json::Value =
            serde_json::from_str(&as_json("g", "stdout", "plain text")).unwrap();
        assert_eq!(v["message"], "plain text");
        assert_eq!(v["stream"], "stdout");
    }
}
