//! The journal (format 5): what makes a group durable before SQLite
//! commits it.
//!
//! The writer keeps one SQLite transaction open across many groups and
//! commits it every few tens of milliseconds (see `writer`). In between,
//! each group is written here, as one record, and synced before any of its
//! publishers is answered. After each durable SQLite commit the journal
//! starts again from its beginning: every record before it is in the
//! database.
//!
//! The file is `journal` in the data directory: a header block (a magic
//! line and the database's epoch), then records, each a magic number, the
//! payload's length, its CRC-32 and the payload: the group's messages
//! (sequence number, publish time, channel, event type, data) and the
//! idempotency keys stored with them. The file is written in place, over
//! what an earlier round left, and kept at least [`PREALLOCATED`] bytes
//! long, so a sync has no size or block allocation to record.
//!
//! At start the records are read from the beginning until one does not
//! check out (a torn write, the end of this round, or nothing): those are
//! what this round wrote, followed perhaps by records of an earlier round,
//! whose messages the database already holds. The store replays the
//! records beyond its head (see `writer::Writer::replay`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use comet_protocol::{ChannelName, Data, Epoch, EventType, Message, Seq};
use comet_store::Original;
use comet_store::idempotency::{Fingerprint, KeyHash, KeyRecord};

/// The header block's length; records start after it.
const HEADER_BYTES: u64 = 4096;

/// The header's first line.
const HEADER_MAGIC: &[u8] = b"comet journal 1\n";

/// Each record's first four bytes.
const RECORD_MAGIC: u32 = 0x434d_4a52;

/// A record's magic, payload length and checksum.
const RECORD_HEAD: usize = 12;

/// The file's length at least, written with zeros when created.
pub(crate) const PREALLOCATED: u64 = 2 * 1024 * 1024;

/// The journal file, open for writing.
pub(crate) struct Journal {
    file: File,
    epoch: Epoch,
    /// Where the next record goes.
    end: u64,
}

/// One group as the journal holds it.
#[derive(Default)]
pub(crate) struct JournalGroup {
    pub(crate) messages: Vec<Arc<Message>>,
    pub(crate) keys: Vec<(KeyHash, KeyRecord)>,
}

/// Why a journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JournalError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the journal belongs to another history (epoch {found}, the database's is {expected})")]
    Foreign { found: String, expected: String },
    #[error("the journal's header is not one this build writes")]
    Unknown,
}

impl Journal {
    /// Opens the journal at `path` (creating it for `epoch` if missing)
    /// and reads the groups its records hold, oldest first.
    pub(crate) fn open(
        path: &Path,
        epoch: &Epoch,
    ) -> Result<(Self, Vec<JournalGroup>), JournalError> {
        if !path.exists() {
            create(path, epoch)?;
        }
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        check_header(&file, epoch)?;
        if file.metadata()?.len() < PREALLOCATED {
            preallocate(&file)?;
        }
        let len = file.metadata()?.len();
        let groups = read_groups(&file, epoch, len)?;
        Ok((
            Journal {
                file,
                epoch: epoch.clone(),
                end: HEADER_BYTES,
            },
            groups,
        ))
    }

    /// Writes one group as a record and syncs it. Not synced means not
    /// written: the next record goes where this one was meant to.
    pub(crate) fn write<'a>(
        &mut self,
        messages: impl Iterator<Item = &'a Arc<Message>>,
        keys: impl Iterator<Item = (&'a KeyHash, &'a KeyRecord)>,
    ) -> io::Result<()> {
        let record = encode(messages, keys);
        self.file.write_all_at(&record, self.end)?;
        self.file.sync_data()?;
        self.end += record.len() as u64;
        Ok(())
    }

    /// Starts again from the beginning: everything written so far is in
    /// the database, durably. A file grown beyond [`PREALLOCATED`] by a
    /// large round is cut back to it.
    pub(crate) fn restart(&mut self) -> io::Result<()> {
        self.end = HEADER_BYTES;
        if self.file.metadata()?.len() > PREALLOCATED {
            self.file.set_len(PREALLOCATED)?;
            self.file.sync_all()?;
        }
        Ok(())
    }

    /// The groups of the records written since the last restart: a
    /// record whose sync failed is not among them, even if its bytes
    /// reached the disk.
    pub(crate) fn read(&self) -> io::Result<Vec<JournalGroup>> {
        read_groups(&self.file, &self.epoch, self.end)
    }

    /// Bytes written since the last restart.
    pub(crate) fn written(&self) -> u64 {
        self.end - HEADER_BYTES
    }
}

/// Creates the journal whole or not at all: written under another name,
/// synced, then renamed into place (and the directory synced).
fn create(path: &Path, epoch: &Epoch) -> io::Result<()> {
    let unfinished = path.with_extension("new");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&unfinished)?;
    let mut header = vec![0u8; HEADER_BYTES as usize];
    let line = [HEADER_MAGIC, epoch.as_str().as_bytes(), b"\n"].concat();
    header[..line.len()].copy_from_slice(&line);
    file.write_all_at(&header, 0)?;
    preallocate(&file)?;
    std::fs::rename(&unfinished, path)?;
    if let Some(directory) = path.parent() {
        File::open(directory)?.sync_all()?;
    }
    Ok(())
}

fn check_header(file: &File, epoch: &Epoch) -> Result<(), JournalError> {
    let mut header = vec![0u8; HEADER_BYTES as usize];
    match file.read_exact_at(&mut header, 0) {
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(JournalError::Unknown);
        }
        read => read?,
    }
    let Some(rest) = header.strip_prefix(HEADER_MAGIC) else {
        return Err(JournalError::Unknown);
    };
    let line_end = rest
        .iter()
        .position(|&byte| byte == b'\n')
        .ok_or(JournalError::Unknown)?;
    let found = String::from_utf8_lossy(&rest[..line_end]).into_owned();
    if found != epoch.as_str() {
        return Err(JournalError::Foreign {
            found,
            expected: epoch.as_str().to_string(),
        });
    }
    Ok(())
}

/// Writes zeros up to [`PREALLOCATED`], so later records overwrite blocks
/// the file already has.
fn preallocate(file: &File) -> io::Result<()> {
    let start = file.metadata()?.len();
    let zeros = vec![0u8; 1024 * 1024];
    let mut at = start;
    while at < PREALLOCATED {
        let len = zeros.len().min((PREALLOCATED - at) as usize);
        file.write_all_at(&zeros[..len], at)?;
        at += len as u64;
    }
    file.sync_all()
}

/// The groups of every record that checks out, from the first on, up to
/// `len` bytes into the file.
fn read_groups(file: &File, epoch: &Epoch, len: u64) -> io::Result<Vec<JournalGroup>> {
    let mut groups = Vec::new();
    let mut at = HEADER_BYTES;
    let mut head = [0u8; RECORD_HEAD];
    while at + RECORD_HEAD as u64 <= len {
        file.read_exact_at(&mut head, at)?;
        let magic = u32::from_le_bytes(head[0..4].try_into().unwrap_or_default());
        let payload_len = u64::from(u32::from_le_bytes(
            head[4..8].try_into().unwrap_or_default(),
        ));
        let checksum = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default());
        let payload_at = at + RECORD_HEAD as u64;
        if magic != RECORD_MAGIC || payload_at + payload_len > len {
            break;
        }
        let mut payload = vec![0u8; payload_len as usize];
        file.read_exact_at(&mut payload, payload_at)?;
        if crc32fast::hash(&payload) != checksum {
            break;
        }
        let Some(group) = decode(&payload, epoch) else {
            break;
        };
        groups.push(group);
        at = payload_at + payload_len;
    }
    Ok(groups)
}

fn encode<'a>(
    messages: impl Iterator<Item = &'a Arc<Message>>,
    keys: impl Iterator<Item = (&'a KeyHash, &'a KeyRecord)>,
) -> Vec<u8> {
    let mut record = vec![0u8; RECORD_HEAD];
    let mut count_at = record.len();
    record.extend_from_slice(&0u32.to_le_bytes());
    let mut count = 0u32;
    for message in messages {
        count += 1;
        record.extend_from_slice(&message.seq().0.to_le_bytes());
        record.extend_from_slice(&message.published_at_ms().to_le_bytes());
        push_bytes(&mut record, message.channel().as_str().as_bytes());
        push_bytes(&mut record, message.event().as_str().as_bytes());
        push_bytes(&mut record, message.data().bytes());
    }
    record[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
    count_at = record.len();
    record.extend_from_slice(&0u32.to_le_bytes());
    let mut count = 0u32;
    for (hash, key) in keys {
        count += 1;
        record.extend_from_slice(&key.original.seq.0.to_le_bytes());
        record.extend_from_slice(&hash.0);
        record.extend_from_slice(&key.fingerprint.0);
        record.extend_from_slice(&key.original.subscribers.to_le_bytes());
        record.extend_from_slice(&key.at_ms.to_le_bytes());
    }
    record[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
    let payload_len = (record.len() - RECORD_HEAD) as u32;
    let checksum = crc32fast::hash(&record[RECORD_HEAD..]);
    record[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    record[4..8].copy_from_slice(&payload_len.to_le_bytes());
    record[8..12].copy_from_slice(&checksum.to_le_bytes());
    record
}

fn push_bytes(record: &mut Vec<u8>, bytes: &[u8]) {
    record.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    record.extend_from_slice(bytes);
}

/// A record's payload read back; `None` if it does not make sense.
fn decode(payload: &[u8], epoch: &Epoch) -> Option<JournalGroup> {
    let mut reader = Reader(payload);
    let mut group = JournalGroup::default();
    for _ in 0..reader.u32()? {
        let seq = Seq(reader.u64()?);
        let published_at = reader.u64()?;
        let channel = ChannelName::new(std::str::from_utf8(reader.bytes()?).ok()?).ok()?;
        let event = EventType::new(std::str::from_utf8(reader.bytes()?).ok()?).ok()?;
        let data = Data::from_utf8(Bytes::copy_from_slice(reader.bytes()?)).ok()?;
        group.messages.push(Arc::new(Message::new(
            epoch.clone(),
            seq,
            channel,
            event,
            data,
            published_at,
        )));
    }
    for _ in 0..reader.u32()? {
        let seq = Seq(reader.u64()?);
        let hash = KeyHash(reader.array()?);
        let fingerprint = Fingerprint(reader.array()?);
        let subscribers = reader.u64()?;
        let at_ms = reader.u64()?;
        let record = KeyRecord {
            fingerprint,
            original: Original { seq, subscribers },
            at_ms,
        };
        group.keys.push((hash, record));
    }
    reader.0.is_empty().then_some(group)
}

/// Reads a payload front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.0.len() < len {
            return None;
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch() -> Epoch {
        Epoch::new("journal1").unwrap()
    }

    fn message(seq: u64, data: &str) -> Arc<Message> {
        Arc::new(Message::new(
            epoch(),
            Seq(seq),
            ChannelName::new("news").unwrap(),
            EventType::new("message").unwrap(),
            Data::from_utf8(Bytes::from(data.to_string())).unwrap(),
            1_700_000_000_000 + seq,
        ))
    }

    fn key(seq: u64) -> (KeyHash, KeyRecord) {
        let record = KeyRecord {
            fingerprint: Fingerprint([seq as u8; 16]),
            original: Original {
                seq: Seq(seq),
                subscribers: 3,
            },
            at_ms: 42,
        };
        (KeyHash([7; 16]), record)
    }

    /// What a group holds, comparable.
    type Seen = Vec<(
        Vec<(u64, String, String, String, u64)>,
        Vec<(KeyHash, KeyRecord)>,
    )>;

    fn seen(groups: &[JournalGroup]) -> Seen {
        let message = |message: &Arc<Message>| {
            (
                message.seq().0,
                message.channel().to_string(),
                message.event().as_str().to_string(),
                String::from_utf8(message.data().bytes().to_vec()).unwrap(),
                message.published_at_ms(),
            )
        };
        let group = |group: &JournalGroup| {
            (
                group.messages.iter().map(message).collect(),
                group.keys.clone(),
            )
        };
        groups.iter().map(group).collect()
    }

    fn write(journal: &mut Journal, group: &JournalGroup) {
        let keys = group.keys.iter().map(|(hash, record)| (hash, record));
        journal.write(group.messages.iter(), keys).unwrap();
    }

    fn group(seqs: std::ops::RangeInclusive<u64>, with_key: bool) -> JournalGroup {
        let messages: Vec<_> = seqs.map(|seq| message(seq, "hello")).collect();
        let keys = if with_key {
            vec![key(messages[0].seq().0)]
        } else {
            Vec::new()
        };
        JournalGroup { messages, keys }
    }

    fn directory() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "comet-journal-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn groups_written_are_read_back_in_order_after_a_reopen() {
        let path = directory().join("journal");
        let (mut journal, found) = Journal::open(&path, &epoch()).unwrap();
        assert!(found.is_empty());
        let written = [group(1..=3, true), group(4..=4, false)];
        for group in &written {
            write(&mut journal, group);
        }
        drop(journal);
        let (_, found) = Journal::open(&path, &epoch()).unwrap();
        assert_eq!(seen(&found), seen(&written));
    }

    #[test]
    fn a_torn_record_ends_what_is_read_wherever_it_was_cut() {
        let path = directory().join("journal");
        let (mut journal, _) = Journal::open(&path, &epoch()).unwrap();
        let first = group(1..=2, true);
        write(&mut journal, &first);
        let end_of_first = HEADER_BYTES + journal.written();
        write(&mut journal, &group(3..=5, true));
        let end_of_second = HEADER_BYTES + journal.written();
        drop(journal);
        let whole = std::fs::read(&path).unwrap();
        // Cut the second record after each of its bytes: what the file
        // held before (here, every bit the other way) follows.
        for cut in end_of_first..end_of_second {
            let mut torn = whole.clone();
            for byte in &mut torn[cut as usize..end_of_second as usize] {
                *byte = !*byte;
            }
            std::fs::write(&path, &torn).unwrap();
            let (_, found) = Journal::open(&path, &epoch()).unwrap();
            assert_eq!(seen(&found), seen(&[group(1..=2, true)]), "cut at {cut}");
        }
        // A flipped bit inside it is caught by the checksum.
        let mut flipped = whole.clone();
        flipped[end_of_second as usize - 3] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let (_, found) = Journal::open(&path, &epoch()).unwrap();
        assert_eq!(seen(&found), seen(&[first]));
    }

    #[test]
    fn after_a_restart_the_new_round_is_read_first_and_the_old_one_after_it() {
        let path = directory().join("journal");
        let (mut journal, _) = Journal::open(&path, &epoch()).unwrap();
        write(&mut journal, &group(1..=10, false));
        write(&mut journal, &group(11..=20, false));
        journal.restart().unwrap();
        assert_eq!(journal.written(), 0);
        write(&mut journal, &group(21..=21, false));
        drop(journal);
        let (_, found) = Journal::open(&path, &epoch()).unwrap();
        // The short new record overwrote the start of the first old one;
        // what follows it is not a record, so reading stops there.
        assert_eq!(seen(&found), seen(&[group(21..=21, false)]));
    }

    #[test]
    fn a_record_past_the_last_synced_one_is_not_read_back_while_open() {
        // As a record whose write reached the disk but whose sync failed:
        // its bytes lie after the end, which stays where it was.
        let path = directory().join("journal");
        let (mut journal, _) = Journal::open(&path, &epoch()).unwrap();
        write(&mut journal, &group(1..=2, false));
        let unsynced = group(3..=3, false);
        let record = encode(unsynced.messages.iter(), std::iter::empty());
        journal
            .file
            .write_all_at(&record, HEADER_BYTES + journal.written())
            .unwrap();
        assert_eq!(seen(&journal.read().unwrap()), seen(&[group(1..=2, false)]));
    }

    #[test]
    fn a_journal_of_another_history_is_refused() {
        let path = directory().join("journal");
        drop(Journal::open(&path, &epoch()).unwrap());
        let other = Epoch::new("journal2").unwrap();
        assert!(matches!(
            Journal::open(&path, &other),
            Err(JournalError::Foreign { .. })
        ));
        std::fs::write(&path, b"something else").unwrap();
        assert!(matches!(
            Journal::open(&path, &epoch()),
            Err(JournalError::Unknown)
        ));
    }

    #[test]
    fn the_file_is_preallocated_and_a_grown_one_is_cut_back_at_a_restart() {
        let path = directory().join("journal");
        let (mut journal, _) = Journal::open(&path, &epoch()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOCATED);
        let big = "x".repeat(1024 * 1024);
        for seq in 1..=3 {
            let group = JournalGroup {
                messages: vec![message(seq, &big)],
                keys: Vec::new(),
            };
            write(&mut journal, &group);
        }
        assert!(std::fs::metadata(&path).unwrap().len() > PREALLOCATED);
        journal.restart().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOCATED);
    }
}
