//! The durable queue: an append-only log on disk. An event is acknowledged to the sender only
//! after its `Accepted` record is written *and fsync'd*; a `Done` record (delivered or
//! dead-lettered) retires it. At start the log is replayed: every accepted event without a
//! `Done` is pending again, and the dedupe window is rebuilt.
//!
//! Record framing: `len: u32 LE | crc32: u32 LE | JSON`. A torn or corrupt tail (a crash mid
//! write) ends the replay and is cut off: it can only hold records that were never acknowledged
//! (acks follow the fsync). `Done` records are fsync'd in the background (at most
//! [`DONE_SYNC`] later): losing one in a crash means redelivering that event, never losing it.
//! When nothing is pending and the log exceeds [`COMPACT_BYTES`], it starts over.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often pending `Done` records are fsync'd.
pub const DONE_SYNC: Duration = Duration::from_millis(100);
/// Log size above which an empty queue starts a new file.
pub const COMPACT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest record replay accepts (a corrupt length must not allocate gigabytes).
const MAX_RECORD: u32 = 16 * 1024 * 1024;

/// Which schema a stored event is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    EventGrid,
    CloudEvent,
}

/// One accepted event, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub subscription: String,
    /// Dedupe key: `topic\u{0}id` (Event Grid) or `source\u{0}id` (CloudEvents).
    pub key: String,
    /// Unix milliseconds when accepted.
    pub received_ms: u64,
    pub kind: Kind,
    /// The event's JSON text (Event Grid: exactly as received; CloudEvents: structured form).
    pub json: String,
    /// Request headers kept for delivery (`forward_headers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

/// How an event left the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Delivered,
    DeadLettered,
}

#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Accepted(Event),
    Done { seq: u64, outcome: Outcome },
}

/// What replaying the log found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Accepted and not done, in acceptance order.
    pub pending: Vec<Event>,
    /// Every accepted event's `(subscription, key, received_ms)` (for the dedupe window).
    pub seen: Vec<(String, String, u64)>,
    pub next_seq: u64,
    /// Bytes cut off a torn tail.
    pub truncated: u64,
}

struct Inner {
    file: File,
    len: u64,
}

/// The log. Appends are serialised; `append` returns only once the data is on disk.
pub struct Store {
    path: PathBuf,
    inner: Mutex<Inner>,
    dirty: AtomicBool,
    /// Fault injection for tests: appends fail while set (the "store is down" case).
    fail: AtomicBool,
}

fn frame(record: &Record) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(record)?;
    let len =
        u32::try_from(json.len()).map_err(|_| std::io::Error::other("record larger than 4 GiB"))?;
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// Reads records until the end or the first torn/corrupt one; returns them and the good length.
fn replay(file: &mut File) -> std::io::Result<(Vec<Record>, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::new(&mut *file);
    let mut records = Vec::new();
    let mut good = 0u64;
    loop {
        let mut head = [0u8; 8];
        match reader.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_RECORD {
            break;
        }
        let mut json = vec![0u8; len as usize];
        if reader.read_exact(&mut json).is_err() || crc32fast::hash(&json) != crc {
            break;
        }
        match serde_json::from_slice::<Record>(&json) {
            Ok(r) => records.push(r),
            Err(_) => break,
        }
        good += 8 + u64::from(len);
    }
    Ok((records, good))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Store {
    /// Opens (creating) `dir/events.log` and replays it.
    pub fn open(dir: &Path) -> std::io::Result<(Store, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("events.log");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let total = file.metadata()?.len();
        let (records, good) = replay(&mut file)?;
        let mut rec = Recovered {
            truncated: total - good,
            ..Recovered::default()
        };
        if good < total {
            file.set_len(good)?;
            file.sync_all()?;
        }
        let mut accepted: Vec<Event> = Vec::new();
        let mut done = std::collections::HashSet::new();
        for r in records {
            match r {
                Record::Accepted(e) => {
                    rec.next_seq = rec.next_seq.max(e.seq + 1);
                    rec.seen
                        .push((e.subscription.clone(), e.key.clone(), e.received_ms));
                    accepted.push(e);
                }
                Record::Done { seq, .. } => {
                    done.insert(seq);
                }
            }
        }
        rec.pending = accepted
            .into_iter()
            .filter(|e| !done.contains(&e.seq))
            .collect();
        sync_dir(dir);
        let store = Store {
            path,
            inner: Mutex::new(Inner { file, len: good }),
            dirty: AtomicBool::new(false),
            fail: AtomicBool::new(false),
        };
        Ok((store, rec))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `events` as one write and fsyncs: all are on disk when this returns `Ok`.
    /// Blocking: call it from a blocking-capable context (`spawn_blocking`).
    pub fn append(&self, events: &[Event]) -> std::io::Result<()> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("store unavailable (injected)"));
        }
        let mut buf = Vec::new();
        for e in events {
            buf.extend_from_slice(&frame(&Record::Accepted(e.clone()))?);
        }
        let mut inner = self.lock();
        inner.file.write_all(&buf)?;
        inner.file.sync_data()?;
        inner.len += buf.len() as u64;
        Ok(())
    }

    /// Records that `seqs` left the queue (synced within [`DONE_SYNC`] by [`Store::sync`]).
    pub fn done(&self, seqs: &[u64], outcome: Outcome) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for seq in seqs {
            buf.extend_from_slice(&frame(&Record::Done { seq: *seq, outcome })?);
        }
        let mut inner = self.lock();
        inner.file.write_all(&buf)?;
        inner.len += buf.len() as u64;
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Fsyncs `Done` records written since the last call.
    pub fn sync(&self) -> std::io::Result<()> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            self.lock().file.sync_data()?;
        }
        Ok(())
    }

    /// Starts a new, empty log when nothing is pending and the file is large.
    pub fn compact_if_empty(&self, pending: usize) -> std::io::Result<bool> {
        let mut inner = self.lock();
        if pending > 0 || inner.len < COMPACT_BYTES {
            return Ok(false);
        }
        inner.file.set_len(0)?;
        inner.file.sync_all()?;
        inner.len = 0;
        Ok(true)
    }

    pub fn len(&self) -> u64 {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Test hook: make appends fail (or work again).
    pub fn inject_failure(&self, fail: bool) {
        self.fail.store(fail, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Event {
        Event {
            seq,
            subscription: "s".into(),
            key: format!("t\u{0}{seq}"),
            received_ms: 1,
            kind: Kind::EventGrid,
            json: format!("{{\"id\":\"{seq}\"}}"),
            headers: vec![],
        }
    }

    #[test]
    fn pending_survives_reopen_and_done_retires() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let (s, r) = Store::open(dir.path()).expect("open");
            assert!(r.pending.is_empty());
            s.append(&[event(0), event(1), event(2)]).expect("append");
            s.done(&[1], Outcome::Delivered).expect("done");
            s.sync().expect("sync");
        }
        let (_, r) = Store::open(dir.path()).expect("reopen");
        let seqs: Vec<u64> = r.pending.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [0, 2]);
        assert_eq!(r.next_seq, 3);
        assert_eq!(r.seen.len(), 3);
    }

    #[test]
    fn a_torn_tail_is_cut_and_earlier_records_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let (s, _) = Store::open(dir.path()).expect("open");
            s.append(&[event(0), event(1)]).expect("append");
        }
        let path = dir.path().join("events.log");
        let mut bytes = std::fs::read(&path).expect("read");
        let full = bytes.len();
        bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, b'{']);
        std::fs::write(&path, &bytes).expect("write");
        let (s, r) = Store::open(dir.path()).expect("reopen");
        assert_eq!(r.pending.len(), 2);
        assert_eq!(r.truncated, 9);
        assert_eq!(s.len(), full as u64);
        // A flipped byte inside the last record: it is dropped, the first kept.
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let (_, r) = Store::open(dir.path()).expect("reopen");
        assert_eq!(r.pending.iter().map(|e| e.seq).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn injected_failure_refuses_appends() {
        let dir = tempfile::tempdir().expect("tmp");
        let (s, _) = Store::open(dir.path()).expect("open");
        s.inject_failure(true);
        assert!(s.append(&[event(0)]).is_err());
        s.inject_failure(false);
        s.append(&[event(0)]).expect("append");
    }
}
