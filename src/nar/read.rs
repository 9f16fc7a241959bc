//! Reading NAR bytes from local files for clients, within one memory budget for all of them.
//!
//! Every chunk a client body holds — a stored NAR, its zstd copy, or a fetch's temp file being
//! tailed — is a buffer counted against [`CLIENT_READ_BUDGET`] from the read until the HTTP
//! layer has written it and dropped it. Reads are large (1 MiB) while most of the budget is
//! free, and shrink (256 KiB, then 64 KiB) as it fills, so a few clients get few, large
//! reads (fewer system calls and thread hops: the warm path's speed) and many clients
//! together stay within the budget: a read that finds it spent waits for a chunk to be
//! released (back-pressure, never an error). Released buffers are kept for reuse (a few per
//! size), so reads do not pay for fresh zeroed pages.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::limits::CLIENT_READ_BUDGET;

/// Budget units: KiB.
const UNIT: usize = 1024;

/// The read sizes, largest first, with the share of the budget (in eighths) that must be
/// free to use each.
const SIZES: [(usize, usize); 3] = [(1 << 20, 4), (256 << 10, 1), (64 << 10, 0)];

/// The largest chunk a read gives.
pub const LARGEST_READ: usize = SIZES[0].0;

/// Released buffers kept per size for reuse.
const KEEP_PER_SIZE: usize = 8;

/// The budget every client body's chunks come out of.
pub static CLIENTS: ReadBudget = ReadBudget::new(CLIENT_READ_BUDGET);

/// A memory budget for chunks read for clients, and the buffers released back to it.
pub struct ReadBudget {
    total: usize,
    permits: Semaphore,
    spare: [Mutex<Vec<Vec<u8>>>; 3],
}

/// A buffer holding part of a budget; back to its spares when the last `Bytes` of it goes.
struct Held {
    buffer: Vec<u8>,
    len: usize,
    class: usize,
    budget: &'static ReadBudget,
    _permit: SemaphorePermit<'static>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        let mut spare = self.budget.spare[self.class]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if spare.len() < KEEP_PER_SIZE {
            spare.push(buffer);
        }
    }
}

impl ReadBudget {
    /// A budget of `total` bytes (rounded down to KiB; at least one smallest chunk).
    pub const fn new(total: usize) -> Self {
        let units = if total / UNIT < SIZES[2].0 / UNIT {
            SIZES[2].0 / UNIT
        } else {
            total / UNIT
        };
        ReadBudget {
            total: units * UNIT,
            permits: Semaphore::const_new(units),
            spare: [
                Mutex::new(Vec::new()),
                Mutex::new(Vec::new()),
                Mutex::new(Vec::new()),
            ],
        }
    }

    /// Bytes of the budget not held by any chunk right now.
    pub fn free(&self) -> usize {
        self.permits.available_permits() * UNIT
    }

    /// Reads up to `want` bytes of `file` at `offset` (fewer at the end of the file, or when
    /// the budget is filling up) into a budgeted buffer, on the blocking pool. Waits while
    /// the budget is spent.
    pub async fn read_at(
        &'static self,
        file: Arc<File>,
        offset: u64,
        want: usize,
    ) -> io::Result<Bytes> {
        let free = self.free();
        let class = SIZES
            .iter()
            .position(|&(size, eighths)| {
                free >= self.total / 8 * eighths && (size <= want || size == SIZES[2].0)
            })
            .unwrap_or(SIZES.len() - 1);
        let size = SIZES[class].0;
        let len = want.min(size);
        let units = u32::try_from(size / UNIT).unwrap_or(u32::MAX);
        // The semaphore is never closed: this cannot fail.
        let permit = self
            .permits
            .acquire_many(units)
            .await
            .map_err(io::Error::other)?;
        let buffer = self.spare[class]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| vec![0; size]);
        let (buffer, got) = tokio::task::spawn_blocking(move || {
            let mut buffer = buffer;
            let got = read_full_at(&file, &mut buffer[..len], offset);
            (buffer, got)
        })
        .await
        .map_err(io::Error::other)?;
        let got = got?;
        Ok(Bytes::from_owner(Held {
            buffer,
            len: got,
            class,
            budget: self,
            _permit: permit,
        }))
    }

    /// The bytes `range` of a file that does not change (a stored NAR or its copy), as a
    /// stream of budgeted chunks; a file shorter than the range ends the stream in an error.
    /// One read ahead: the next chunk is read while the HTTP layer sends this one.
    pub fn file_stream(
        &'static self,
        file: File,
        range: Range<u64>,
    ) -> BoxStream<'static, io::Result<Bytes>> {
        let ahead = ReadAhead {
            budget: self,
            file: Arc::new(file),
            offset: range.start,
            end: range.end,
            pending: None,
            done: false,
        };
        stream::unfold(ahead, |mut ahead| async move {
            let item = ahead.next().await?;
            Some((item, ahead))
        })
        .boxed()
    }
}

/// A file being streamed, with the read of its next chunk already under way.
struct ReadAhead {
    budget: &'static ReadBudget,
    file: Arc<File>,
    /// Where the chunk being read (or next to read) starts.
    offset: u64,
    end: u64,
    pending: Option<tokio::task::JoinHandle<io::Result<Bytes>>>,
    done: bool,
}

impl ReadAhead {
    fn start(&self) -> tokio::task::JoinHandle<io::Result<Bytes>> {
        let want = usize::try_from(self.end - self.offset).unwrap_or(usize::MAX);
        let (budget, file, offset) = (self.budget, Arc::clone(&self.file), self.offset);
        tokio::spawn(async move { budget.read_at(file, offset, want).await })
    }

    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        if self.done || self.offset >= self.end {
            return None;
        }
        let pending = match self.pending.take() {
            Some(pending) => pending,
            None => self.start(),
        };
        let read = pending.await.map_err(io::Error::other).and_then(|r| r);
        let chunk = match read {
            Ok(chunk) if chunk.is_empty() => {
                self.done = true;
                return Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "stored file ends at byte {}, before {}",
                        self.offset, self.end
                    ),
                )));
            }
            Ok(chunk) => chunk,
            Err(err) => {
                self.done = true;
                return Some(Err(err));
            }
        };
        self.offset += chunk.len() as u64;
        if self.offset < self.end {
            self.pending = Some(self.start());
        }
        Some(Ok(chunk))
    }
}

/// Reads until `out` is full or the file ends; the count read.
fn read_full_at(file: &File, out: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < out.len() {
        match file.read_at(&mut out[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut tmp = tempfile::NamedTempFile::new().expect("temp file");
        tmp.write_all(bytes).expect("write");
        let file = File::open(tmp.path()).expect("open");
        (tmp, file)
    }

    /// A budget of its own, so that tests running at once do not share one.
    fn budget(total: usize) -> &'static ReadBudget {
        Box::leak(Box::new(ReadBudget::new(total)))
    }

    async fn collect(stream: BoxStream<'static, io::Result<Bytes>>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut stream = stream;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_file_streams_whole_and_by_range_in_budgeted_chunks() {
        let bytes: Vec<u8> = (0..3_500_000u32).map(|i| (i % 251) as u8).collect();
        let budget = budget(8 << 20);
        let (_tmp, file) = file_of(&bytes);
        let whole = collect(budget.file_stream(file, 0..bytes.len() as u64)).await;
        assert!(whole.expect("read") == bytes);
        let (_tmp, file) = file_of(&bytes);
        let part = collect(budget.file_stream(file, 1_000_001..2_500_000)).await;
        assert!(part.expect("read") == bytes[1_000_001..2_500_000]);
        // Every chunk was released: the whole budget is free again.
        assert_eq!(budget.free(), 8 << 20);
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_range_ends_in_an_error() {
        let (_tmp, file) = file_of(&[7; 1000]);
        let err = collect(budget(1 << 20).file_stream(file, 0..2000))
            .await
            .expect_err("short");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn held_chunks_count_against_the_budget_until_dropped_and_reads_shrink_as_it_fills() {
        let budget = budget(8 << 20);
        let (_tmp, file) = file_of(&vec![1; 4 << 20]);
        let file = Arc::new(file);
        let mut held = Vec::new();
        // Hold chunks until the budget is nearly spent: reads get smaller on the way.
        while budget.free() >= 64 << 10 {
            held.push(
                budget
                    .read_at(Arc::clone(&file), 0, 1 << 20)
                    .await
                    .expect("read"),
            );
        }
        assert!(held.first().is_some_and(|c| c.len() == 1 << 20));
        assert!(held.last().is_some_and(|c| c.len() == 64 << 10));
        let total: usize = held.iter().map(Bytes::len).sum();
        assert!(total <= 8 << 20, "{total}");
        // Spent: the next read waits until a chunk is released.
        let waiting = tokio::spawn(budget.read_at(Arc::clone(&file), 0, 1 << 20));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "a read waits while the budget is spent"
        );
        held.pop();
        let chunk = waiting.await.expect("task").expect("read");
        assert!(!chunk.is_empty());
        drop((held, chunk));
        assert_eq!(budget.free(), 8 << 20);
    }
}
