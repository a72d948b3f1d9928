//! The durable log of the embedded queue ([`crate::queue::embedded`]): append-only, on disk.
//!
//! An event is acknowledged to the sender only after its `Accepted` record is written *and
//! fsync'd*; a `Done` record (delivered or dead-lettered) retires it. At start the log is
//! replayed: every accepted event without a `Done` is pending again, and the dedupe window is
//! rebuilt.
//!
//! Record framing: `len: u32 LE | crc32: u32 LE | JSON`. A torn or corrupt tail (a crash mid
//! write) ends the replay and is cut off: it can only hold records that were never acknowledged
//! (acks follow the fsync). A request's events are one record (`AcceptedBatch`), so a crash in
//! the middle of writing them replays none of them, never a part (logs written before that hold
//! one `Accepted` record per event, and replay as they are). `Done` records are fsync'd in the
//! background (at most [`DONE_SYNC`] later): losing one in a crash means redelivering that
//! event, never losing it.
//! When nothing in it is pending any more and the log exceeds [`COMPACT_BYTES`], it is
//! replaced (atomically: new file, fsync, rename) by one holding only the dedupe window's keys.
//! A record with a valid checksum that cannot be decoded stops the start-up instead of being
//! cut off: only a torn tail is ever truncated.
//!
//! Appends are *group-committed*: concurrent requests queue their records, one caller writes
//! everything queued with one `write` and one fsync, and all of them return together, so the
//! disk's fsync rate does not cap the request rate. A failed write is cut off again, so a later
//! record can never follow garbage (which would end a replay early).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often pending `Done` records are fsync'd.
pub const DONE_SYNC: Duration = Duration::from_millis(100);
/// Log size above which an empty queue starts a new file.
pub const COMPACT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest record written or replayed (a corrupt length must not allocate gigabytes; an
/// acknowledged record must never be one replay refuses).
/// A request's events are one record: an 8 MiB body whose event text is all escapes could
/// grow ~6× as a JSON string.
pub const MAX_RECORD: u32 = 64 * 1024 * 1024;

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
    /// One event (what earlier versions wrote per event; still replayed).
    Accepted(Event),
    /// The events of one request, all or none.
    AcceptedBatch(Vec<Event>),
    Done {
        seq: u64,
        outcome: Outcome,
    },
    /// A dedupe key carried over by compaction.
    Seen {
        subscription: String,
        key: String,
        received_ms: u64,
    },
}

/// [`Record::Accepted`] and [`Record::AcceptedBatch`] as written: serialized the same, without
/// copying the events.
#[derive(Serialize)]
enum RecordRef<'a> {
    #[cfg_attr(not(test), allow(dead_code))]
    Accepted(&'a Event),
    AcceptedBatch(Vec<&'a Event>),
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
    /// Accepted records in this file without a `Done` (orphans of removed subscriptions too).
    live: u64,
}

/// Appends waiting for the next group commit.
#[derive(Default)]
struct Commit {
    /// (ticket, records, bytes)
    queue: Vec<(u64, u64, Vec<u8>)>,
    writing: bool,
    next_ticket: u64,
    /// Outcome per ticket, taken by its waiter.
    results: HashMap<u64, Result<(), String>>,
}

/// The log. `append` returns only once the data is on disk.
pub struct Store {
    path: PathBuf,
    inner: Mutex<Inner>,
    dirty: AtomicBool,
    /// Fault injection for tests: appends fail while set (the "store is down" case).
    #[cfg(any(test, feature = "test-util"))]
    fail: AtomicBool,
    /// Set when a failed write could not be cut off: the log refuses appends from then on.
    broken: AtomicBool,
    commit: Mutex<Commit>,
    committed: Condvar,
}

fn frame(record: &impl Serialize) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(record)?;
    let len = u32::try_from(json.len())
        .ok()
        .filter(|l| *l <= MAX_RECORD)
        .ok_or_else(|| std::io::Error::other(format!("record larger than {MAX_RECORD} bytes")))?;
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// Reads records until the end or the first torn/corrupt one; returns them and the good length.
/// A record whose checksum is right but whose content cannot be read is an error: cutting it
/// off would lose every acknowledged record after it.
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
            Err(e) => {
                return Err(std::io::Error::other(format!(
                    "event log record at byte {good} has a valid checksum but cannot be read \
                     ({e}); refusing to start rather than drop what follows it"
                )));
            }
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
        let mut accept = |e: Event, rec: &mut Recovered| {
            rec.next_seq = rec.next_seq.max(e.seq + 1);
            rec.seen
                .push((e.subscription.clone(), e.key.clone(), e.received_ms));
            accepted.push(e);
        };
        for r in records {
            match r {
                Record::Accepted(e) => accept(e, &mut rec),
                Record::AcceptedBatch(events) => {
                    for e in events {
                        accept(e, &mut rec);
                    }
                }
                Record::Done { seq, .. } => {
                    done.insert(seq);
                }
                Record::Seen {
                    subscription,
                    key,
                    received_ms,
                } => rec.seen.push((subscription, key, received_ms)),
            }
        }
        rec.pending = accepted
            .into_iter()
            .filter(|e| !done.contains(&e.seq))
            .collect();
        sync_dir(dir);
        let live = rec.pending.len() as u64;
        let store = Store {
            path,
            inner: Mutex::new(Inner {
                file,
                len: good,
                live,
            }),
            dirty: AtomicBool::new(false),
            #[cfg(any(test, feature = "test-util"))]
            fail: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            commit: Mutex::new(Commit::default()),
            committed: Condvar::new(),
        };
        Ok((store, rec))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn commit_lock(&self) -> std::sync::MutexGuard<'_, Commit> {
        self.commit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `buf` at the end (fsync'd when `sync`); on failure cuts the file back so no
    /// partial record stays, or marks the log broken if even that fails.
    fn write(&self, buf: &[u8], sync: bool, live: i64) -> std::io::Result<()> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(std::io::Error::other(
                "event log broken by an earlier failed write",
            ));
        }
        let mut inner = self.lock();
        let result = inner
            .file
            .write_all(buf)
            .and_then(|()| if sync { inner.file.sync_data() } else { Ok(()) });
        match result {
            Ok(()) => {
                inner.len += buf.len() as u64;
                inner.live = inner.live.saturating_add_signed(live);
                Ok(())
            }
            Err(e) => {
                let len = inner.len;
                if inner
                    .file
                    .set_len(len)
                    .and_then(|()| inner.file.sync_data())
                    .is_err()
                {
                    self.broken.store(true, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }

    /// Appends `events` durably: all are on disk (fsync'd) when this returns `Ok`. Concurrent
    /// callers share one write and one fsync. Blocking: call it from `spawn_blocking`.
    pub fn append<E: Borrow<Event>>(&self, events: &[E]) -> std::io::Result<()> {
        #[cfg(any(test, feature = "test-util"))]
        if self.fail.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("store unavailable (injected)"));
        }
        let buf = frame(&RecordRef::AcceptedBatch(
            events.iter().map(Borrow::borrow).collect(),
        ))?;
        let mut c = self.commit_lock();
        let ticket = c.next_ticket;
        c.next_ticket += 1;
        c.queue.push((ticket, events.len() as u64, buf));
        loop {
            if let Some(result) = c.results.remove(&ticket) {
                return result.map_err(std::io::Error::other);
            }
            if c.writing {
                c = self.committed.wait(c).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Become the writer for everything queued so far (our own record included).
            c.writing = true;
            let batch = std::mem::take(&mut c.queue);
            drop(c);
            let all: Vec<u8> = batch
                .iter()
                .flat_map(|(_, _, b)| b.iter().copied())
                .collect();
            let count: u64 = batch.iter().map(|(_, n, _)| n).sum();
            let live = i64::try_from(count).unwrap_or(i64::MAX);
            let outcome = self.write(&all, true, live).map_err(|e| e.to_string());
            c = self.commit_lock();
            for (t, _, _) in batch {
                c.results.insert(t, outcome.clone());
            }
            c.writing = false;
            self.committed.notify_all();
        }
    }

    /// Records that `seqs` left the queue (synced within [`DONE_SYNC`] by [`Store::sync`]).
    pub fn done(&self, seqs: &[u64], outcome: Outcome) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for seq in seqs {
            buf.extend_from_slice(&frame(&Record::Done { seq: *seq, outcome })?);
        }
        self.write(&buf, false, -i64::try_from(seqs.len()).unwrap_or(i64::MAX))?;
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

    /// Replaces a large log whose records are all done by one holding only `carry` (the
    /// dedupe window's keys). Atomic: new file, fsync, rename, fsync of the directory. Runs
    /// under the log's lock, so no append can land in between. Returns whether it compacted.
    pub fn compact(&self, carry: &[(String, String, u64)]) -> std::io::Result<bool> {
        self.compact_above(COMPACT_BYTES, carry)
    }

    fn compact_above(
        &self,
        threshold: u64,
        carry: &[(String, String, u64)],
    ) -> std::io::Result<bool> {
        let mut inner = self.lock();
        if inner.live > 0 || inner.len < threshold {
            return Ok(false);
        }
        let mut buf = Vec::new();
        for (subscription, key, received_ms) in carry {
            buf.extend_from_slice(&frame(&Record::Seen {
                subscription: subscription.clone(),
                key: key.clone(),
                received_ms: *received_ms,
            })?);
        }
        let tmp = self.path.with_extension("log.new");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir);
        }
        inner.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)?;
        inner.len = buf.len() as u64;
        Ok(true)
    }

    /// Whether the log is large and nothing in it is pending.
    pub fn wants_compaction(&self) -> bool {
        let inner = self.lock();
        inner.live == 0 && inner.len >= COMPACT_BYTES
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
    #[cfg(any(test, feature = "test-util"))]
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
            s.append(&[event(0)]).expect("append");
            s.append(&[event(1)]).expect("append");
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
    fn compaction_waits_for_pending_events_and_keeps_the_dedupe_keys() {
        let dir = tempfile::tempdir().expect("tmp");
        let (s, _) = Store::open(dir.path()).expect("open");
        s.append(&[event(0), event(1)]).expect("append");
        let carry = vec![("s".to_string(), "t\u{0}0".to_string(), 5)];
        assert!(
            !s.compact_above(0, &carry).expect("compact"),
            "events still pending"
        );
        s.done(&[0, 1], Outcome::Delivered).expect("done");
        assert!(s.compact_above(0, &carry).expect("compact"));
        s.append(&[event(2)]).expect("append after compaction");
        drop(s);
        let (_, r) = Store::open(dir.path()).expect("reopen");
        assert_eq!(r.pending.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
        assert!(
            r.seen
                .contains(&("s".to_string(), "t\u{0}0".to_string(), 5)),
            "{:?}",
            r.seen
        );
    }

    #[test]
    fn an_unreadable_record_with_a_valid_checksum_stops_the_start_instead_of_truncating() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let (s, _) = Store::open(dir.path()).expect("open");
            s.append(&[event(0)]).expect("append");
        }
        let path = dir.path().join("events.log");
        let mut bytes = std::fs::read(&path).expect("read");
        let json = br#"{"FromTheFuture":1}"#;
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(json).to_le_bytes());
        bytes.extend_from_slice(json);
        let len = bytes.len();
        std::fs::write(&path, &bytes).expect("write");
        assert!(Store::open(dir.path()).is_err());
        assert_eq!(
            std::fs::read(&path).expect("read").len(),
            len,
            "nothing cut off"
        );
    }

    #[test]
    fn concurrent_appends_are_all_durable() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let (s, _) = Store::open(dir.path()).expect("open");
            let s = std::sync::Arc::new(s);
            let threads: Vec<_> = (0..8u64)
                .map(|t| {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        for i in 0..50 {
                            s.append(&[event(t * 1000 + i)]).expect("append");
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("join");
            }
        }
        let (_, r) = Store::open(dir.path()).expect("reopen");
        assert_eq!(r.pending.len(), 400);
        assert_eq!(r.truncated, 0);
    }

    #[test]
    fn a_borrowed_accepted_record_is_framed_like_an_owned_one() {
        let e = event(7);
        assert_eq!(
            frame(&RecordRef::Accepted(&e)).expect("frame"),
            frame(&Record::Accepted(e.clone())).expect("frame")
        );
        let f = event(8);
        assert_eq!(
            frame(&RecordRef::AcceptedBatch(vec![&e, &f])).expect("frame"),
            frame(&Record::AcceptedBatch(vec![e.clone(), f.clone()])).expect("frame")
        );
    }

    /// A request torn anywhere (here its last byte) replays none of its events: the events of
    /// one `append` are one record.
    #[test]
    fn a_torn_request_replays_none_of_its_events() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let (s, _) = Store::open(dir.path()).expect("open");
            s.append(&[event(0)]).expect("append");
            s.append(&[event(1), event(2), event(3)]).expect("append");
        }
        let path = dir.path().join("events.log");
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.pop();
        std::fs::write(&path, &bytes).expect("write");
        let (_, r) = Store::open(dir.path()).expect("reopen");
        assert_eq!(r.pending.iter().map(|e| e.seq).collect::<Vec<_>>(), [0]);
        assert!(r.truncated > 0);
    }

    /// Logs written with one `Accepted` record per event (before requests were one record)
    /// replay unchanged.
    #[test]
    fn a_log_of_single_event_records_still_replays() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut bytes = Vec::new();
        for seq in 0..3 {
            bytes.extend_from_slice(&frame(&Record::Accepted(event(seq))).expect("frame"));
        }
        bytes.extend_from_slice(
            &frame(&Record::Done {
                seq: 1,
                outcome: Outcome::Delivered,
            })
            .expect("frame"),
        );
        std::fs::write(dir.path().join("events.log"), &bytes).expect("write");
        let (_, r) = Store::open(dir.path()).expect("open");
        assert_eq!(r.pending.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(r.next_seq, 3);
        assert_eq!(r.truncated, 0);
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
