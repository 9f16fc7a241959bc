//! The push queue: a directory of path lists that a Nix `post-build-hook` fills and
//! `quorate push --queue DIR` drains. The hook only queues (`contrib/post-build-hook.sh`): a
//! hook blocks Nix's build loop, so it must never wait on the network.
//!
//! An item is a file directly in `DIR` whose name does not start with `.`, holding store
//! paths separated by whitespace (a line starting with `#` is a comment). Writers make it
//! appear whole: write `DIR/.<something>`, then rename it into place. Items are drained in
//! name order (the hook names them by time). Draining an item:
//! - every path accepted: the item is deleted;
//! - some rejected for good (by the server, or the local store cannot describe them): the
//!   item moves to `DIR/rejected/` with the reasons appended as comments, and they go to
//!   stderr: a bad item never blocks the queue, and nothing is dropped silently;
//! - a failure that may pass (quorate down, 5xx, rate limited beyond the retries): the item
//!   stays and the drain stops there (the next items would fail alike); a later drain sends
//!   it. An item is thus removed only once the server has accepted or rejected its paths.
//!
//! One drain at a time: it holds an exclusive `flock` on `DIR/.lock`.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{PushError, Pusher, FIRST_BACKOFF, MAX_BACKOFF};

/// Where items rejected for good go, inside the queue directory.
pub const REJECTED_DIR: &str = "rejected";

/// A queue that cannot be drained at all.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The directory or an item could not be read, moved or deleted.
    #[error("queue {path}: {source}")]
    Io {
        /// What was being touched.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another `quorate push --queue` is draining it.
    #[error("another quorate push is draining {0} right now")]
    Busy(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What one drain did.
#[derive(Debug, Default)]
pub struct Drained {
    /// Items whose paths were all accepted (deleted).
    pub sent: usize,
    /// Items with a path rejected for good (moved to `rejected/`).
    pub rejected: usize,
    /// Items still queued.
    pub left: usize,
    /// Why the drain stopped early, if it did.
    pub stopped: Option<String>,
}

/// Drains `dir` once (see the module doc).
pub async fn drain(pusher: &Pusher, dir: &Path) -> Result<Drained, QueueError> {
    let _lock = lock(dir)?;
    let items = items(dir)?;
    let mut drained = Drained::default();
    for (i, item) in items.iter().enumerate() {
        let text = match fs::read(item) {
            Ok(bytes) => bytes,
            // Taken by someone who does not lock (or removed by hand): nothing to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(item)(e)),
        };
        let report = match String::from_utf8(text) {
            Err(_) => Err(vec![(
                String::new(),
                "the item is not UTF-8 text".to_owned(),
            )]),
            Ok(text) => match pusher.push(&paths_in(&text)).await {
                Ok(report) if report.rejected.is_empty() => Ok(report.accepted.len()),
                Ok(report) => Err(report.rejected),
                Err(PushError::Unavailable(why)) | Err(PushError::Server(why)) => {
                    drained.left = items.len() - i;
                    drained.stopped = Some(why);
                    return Ok(drained);
                }
                Err(e @ PushError::Key(_)) => {
                    drained.left = items.len() - i;
                    drained.stopped = Some(e.to_string());
                    return Ok(drained);
                }
            },
        };
        match report {
            Ok(n) => {
                fs::remove_file(item).map_err(io(item))?;
                eprintln!("quorate push: {}: {n} path(s) accepted", name_of(item));
                drained.sent += 1;
            }
            Err(rejected) => {
                set_aside(dir, item, &rejected)?;
                drained.rejected += 1;
            }
        }
    }
    Ok(drained)
}

/// Drains `dir` again and again until SIGINT/SIGTERM: every `poll` while things go well,
/// after a growing wait (up to [`MAX_BACKOFF`]) while the quorate cannot take pushes.
pub async fn watch(pusher: &Pusher, dir: &Path, poll: Duration) -> Result<(), QueueError> {
    let mut backoff = FIRST_BACKOFF;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let wait = match drain(pusher, dir).await {
            Ok(Drained {
                stopped: Some(why),
                left,
                ..
            }) => {
                eprintln!(
                    "quorate push: {left} item(s) stay queued: {why}; next try in {} s",
                    backoff.as_secs()
                );
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
            Ok(_) => {
                backoff = FIRST_BACKOFF;
                poll
            }
            Err(QueueError::Busy(_)) => poll,
            Err(e) => return Err(e),
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut stop => return Ok(()),
        }
    }
}

/// Resolves on SIGINT or SIGTERM (never, if neither can be listened for).
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The queue's items, oldest name first.
fn items(dir: &Path) -> Result<Vec<PathBuf>, QueueError> {
    let mut items = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        let is_file = entry.file_type().map_err(io(dir))?.is_file();
        if is_file && !hidden {
            items.push(entry.path());
        }
    }
    items.sort();
    Ok(items)
}

/// The store paths an item lists.
fn paths_in(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(str::to_owned)
        .collect()
}

/// Moves `item` to `rejected/`, the reasons appended as comments, and says so on stderr.
fn set_aside(dir: &Path, item: &Path, rejected: &[(String, String)]) -> Result<(), QueueError> {
    let aside = dir.join(REJECTED_DIR);
    fs::create_dir_all(&aside).map_err(io(&aside))?;
    let target = aside.join(name_of(item));
    fs::rename(item, &target).map_err(io(item))?;
    let mut file = OpenOptions::new()
        .append(true)
        .open(&target)
        .map_err(io(&target))?;
    for (path, why) in rejected {
        eprintln!("quorate push: {}: rejected {path}: {why}", name_of(item));
        writeln!(file, "# rejected {path}: {}", why.replace('\n', " ")).map_err(io(&target))?;
    }
    eprintln!(
        "quorate push: moved {} to {}",
        name_of(item),
        target.display()
    );
    Ok(())
}

fn name_of(item: &Path) -> String {
    item.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// An exclusive lock on `dir/.lock`, held while the returned file is open.
fn lock(dir: &Path) -> Result<File, QueueError> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if taken != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
            QueueError::Busy(dir.to_owned())
        } else {
            QueueError::Io { path, source: e }
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_lists_paths_by_whitespace_and_ignores_comments() {
        let text =
            "/nix/store/a-x /nix/store/b-y\n# rejected /nix/store/c-z: why\n\n/nix/store/d-w\n";
        assert_eq!(
            paths_in(text),
            ["/nix/store/a-x", "/nix/store/b-y", "/nix/store/d-w"]
        );
    }

    #[test]
    fn hidden_files_and_directories_are_not_items_and_items_come_oldest_name_first() {
        let dir = tempfile::tempdir().expect("tmp");
        for name in ["200-b", "100-a", ".incoming.x", ".lock"] {
            fs::write(dir.path().join(name), "/nix/store/x").expect("write");
        }
        fs::create_dir(dir.path().join(REJECTED_DIR)).expect("mkdir");
        let names: Vec<String> = items(dir.path())
            .expect("listed")
            .iter()
            .map(|p| name_of(p))
            .collect();
        assert_eq!(names, ["100-a", "200-b"]);
    }

    #[test]
    fn one_drain_at_a_time_holds_the_queue() {
        let dir = tempfile::tempdir().expect("tmp");
        let held = lock(dir.path()).expect("first lock");
        assert!(matches!(lock(dir.path()), Err(QueueError::Busy(_))));
        drop(held);
        assert!(lock(dir.path()).is_ok());
    }
}
