//! Segments (format 4): the messages of one channel committed in one
//! group, stored as one row.
//!
//! A row of `segments` holds a run of one channel's messages in sequence
//! order, all stamped with the same publish time (the writer stamps a group
//! once): the channel, the last and first sequence numbers, the publish
//! time, and two blobs. `entries` says where each message is (for each:
//! the distance of its sequence number from the previous one, the length
//! of its event type and of its data, as LEB128 varints); `body` holds the
//! event types and data one after the other. Reading the positions never
//! loads the data (SQLite reads a row's columns lazily, and `body` comes
//! last).
//!
//! One row per channel per group, instead of one per message, is what the
//! format is for: a commit of 35 publishes to one channel inserts one row
//! and its index entry, and a trim deletes one. A segment's body holds at
//! most [`SEGMENT_BYTES`] (a larger message has a segment of its own), so
//! loading one to read a message costs a bounded amount.
//!
//! Retention may remove a segment's oldest messages and keep the rest: the
//! channel's `trimmed_upto` then lies inside the segment, and readers and
//! trims skip the entries at or below it. The row goes once its last
//! message is removed.

use std::ops::Range;

use comet_protocol::{Message, Seq};
use rusqlite::{Connection, Params, Row, Statement, params};

use crate::database::sql;

/// A segment closes once its body reaches this many bytes.
pub(crate) const SEGMENT_BYTES: usize = 64 * 1024;

/// The columns a [`SegmentHead`] is read from, in its order.
pub(crate) const HEAD_COLUMNS: &str = "first_seq, channel_id, published_at, entries";

/// A segment as far as positions go: which messages it holds and where
/// their bytes are in its body.
pub(crate) struct SegmentHead {
    pub(crate) first_seq: Seq,
    pub(crate) channel_id: i64,
    pub(crate) published_at: u64,
    pub(crate) entries: Vec<Entry>,
}

/// One message of a segment.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) seq: Seq,
    /// Where its event type is in the body.
    pub(crate) event: Range<usize>,
    /// Where its data is in the body.
    pub(crate) data: Range<usize>,
}

impl Entry {
    /// Its stored size (`comet_store::stored_size`), given its channel's
    /// name length.
    pub(crate) fn size(&self, channel_len: usize) -> u64 {
        (self.data.len() + self.event.len() + channel_len) as u64 + 64
    }
}

impl SegmentHead {
    /// Reads a row selected with [`HEAD_COLUMNS`].
    pub(crate) fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        let first_seq = Seq(row.get::<_, i64>(0)? as u64);
        let entries: Vec<u8> = row.get(3)?;
        Ok(Self {
            first_seq,
            channel_id: row.get(1)?,
            published_at: row.get::<_, i64>(2)? as u64,
            entries: decode_entries(first_seq, &entries).ok_or_else(|| {
                rusqlite::Error::InvalidColumnType(
                    3,
                    format!("the entries of segment {first_seq}"),
                    rusqlite::types::Type::Blob,
                )
            })?,
        })
    }

    /// The entries after `trimmed_upto`: the messages still retained.
    pub(crate) fn retained(&self, trimmed_upto: Seq) -> &[Entry] {
        let start = self
            .entries
            .partition_point(|entry| entry.seq <= trimmed_upto);
        &self.entries[start..]
    }

    /// The sequence number of its last message.
    pub(crate) fn last_seq(&self) -> Seq {
        self.entries
            .last()
            .map_or(self.first_seq, |entry| entry.seq)
    }
}

/// A segment being written: the messages of one channel in one group.
pub(crate) struct SegmentBuilder {
    channel_id: i64,
    published_at: u64,
    first_seq: Seq,
    last_seq: Seq,
    entries: Vec<u8>,
    body: Vec<u8>,
}

impl SegmentBuilder {
    /// A segment starting with `message`.
    pub(crate) fn new(channel_id: i64, message: &Message) -> Self {
        let mut segment = Self {
            channel_id,
            published_at: message.published_at_ms(),
            first_seq: message.seq(),
            last_seq: message.seq(),
            entries: Vec::new(),
            body: Vec::new(),
        };
        segment.push(message);
        segment
    }

    /// Whether `message` may join: it fits within [`SEGMENT_BYTES`] and
    /// was stamped at the same time.
    pub(crate) fn takes(&self, message: &Message) -> bool {
        let len = message.event().as_str().len() + message.data().len();
        self.body.len() + len <= SEGMENT_BYTES && message.published_at_ms() == self.published_at
    }

    /// Adds `message` (newer than the last one).
    pub(crate) fn push(&mut self, message: &Message) {
        let event = message.event().as_str().as_bytes();
        let data = message.data().bytes();
        write_varint(&mut self.entries, message.seq().0 - self.last_seq.0);
        write_varint(&mut self.entries, event.len() as u64);
        write_varint(&mut self.entries, data.len() as u64);
        self.body.extend_from_slice(event);
        self.body.extend_from_slice(data);
        self.last_seq = message.seq();
    }

    /// Inserts the segment as a new row.
    pub(crate) fn insert(&self, connection: &Connection) -> rusqlite::Result<()> {
        insert_statement(connection)?
            .execute(params![
                self.first_seq.0 as i64,
                self.channel_id,
                self.last_seq.0 as i64,
                self.published_at as i64,
                &self.entries[..],
                &self.body[..],
            ])
            .map(drop)
    }
}

fn insert_statement(connection: &Connection) -> rusqlite::Result<rusqlite::CachedStatement<'_>> {
    connection.prepare_cached(
        "INSERT INTO segments (first_seq, channel_id, last_seq, published_at, entries, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
}

/// Deletes the segment that starts at `first_seq`.
pub(crate) fn delete(connection: &Connection, first_seq: Seq) -> rusqlite::Result<()> {
    connection
        .prepare_cached("DELETE FROM segments WHERE first_seq = ?1")?
        .execute([first_seq.0 as i64])
        .map(drop)
}

/// Deletes channel `channel_id`'s segments whose messages are all at or
/// below `upto` (one range of its index).
pub(crate) fn delete_through(
    connection: &Connection,
    channel_id: i64,
    upto: Seq,
) -> rusqlite::Result<()> {
    connection
        .prepare_cached("DELETE FROM segments WHERE channel_id = ?1 AND last_seq <= ?2")?
        .execute(params![channel_id, sql(upto)])
        .map(drop)
}

/// Reads the segments `statement` selects (with [`HEAD_COLUMNS`]) one by
/// one into `visit`, until it returns false.
pub(crate) fn each(
    statement: &mut Statement<'_>,
    params: impl Params,
    mut visit: impl FnMut(SegmentHead) -> bool,
) -> rusqlite::Result<()> {
    let mut rows = statement.query(params)?;
    while let Some(row) = rows.next()? {
        if !visit(SegmentHead::from_row(row)?) {
            break;
        }
    }
    Ok(())
}

/// A channel's segments holding messages after `?2`, oldest first.
pub(crate) const OF_CHANNEL: &str = "SELECT first_seq, channel_id, published_at, entries
     FROM segments WHERE channel_id = ?1 AND last_seq > ?2 ORDER BY last_seq";

/// [`OF_CHANNEL`] with each segment's body as a fifth column (SQLite
/// loads it only when it is asked for).
pub(crate) const OF_CHANNEL_WITH_BODY: &str =
    "SELECT first_seq, channel_id, published_at, entries, body
     FROM segments WHERE channel_id = ?1 AND last_seq > ?2 ORDER BY last_seq";

/// A channel's segments holding messages after `?2` and up to `?3`,
/// newest first.
pub(crate) const OF_CHANNEL_NEWEST_FIRST: &str =
    "SELECT first_seq, channel_id, published_at, entries FROM segments
     WHERE channel_id = ?1 AND last_seq > ?2 AND first_seq <= ?3 ORDER BY last_seq DESC";

/// The entries of a segment starting at `first_seq`; `None` if the blob is
/// not a valid list.
pub(crate) fn decode_entries(first_seq: Seq, mut blob: &[u8]) -> Option<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut seq = first_seq.0;
    let mut offset = 0usize;
    while !blob.is_empty() {
        seq = seq.checked_add(read_varint(&mut blob)?)?;
        let event_len = usize::try_from(read_varint(&mut blob)?).ok()?;
        let data_len = usize::try_from(read_varint(&mut blob)?).ok()?;
        let event = offset..offset.checked_add(event_len)?;
        let data = event.end..event.end.checked_add(data_len)?;
        offset = data.end;
        entries.push(Entry {
            seq: Seq(seq),
            event,
            data,
        });
    }
    Some(entries)
}

/// The entry list of a segment of one message (for the upgrade from
/// format 3, which stored a row per message).
pub(crate) fn single_entry(event_len: usize, data_len: usize) -> Vec<u8> {
    let mut entries = Vec::with_capacity(6);
    write_varint(&mut entries, 0);
    write_varint(&mut entries, event_len as u64);
    write_varint(&mut entries, data_len as u64);
    entries
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_written() {
        let mut blob = Vec::new();
        for (gap, event, data) in [(0, 7, 0), (1, 7, 300), (200_000, 3, 70_000)] {
            write_varint(&mut blob, gap);
            write_varint(&mut blob, event);
            write_varint(&mut blob, data);
        }
        let entries = decode_entries(Seq(10), &blob).unwrap();
        let seqs: Vec<u64> = entries.iter().map(|entry| entry.seq.0).collect();
        assert_eq!(seqs, [10, 11, 200_011]);
        assert_eq!(entries[1].event, 7..14);
        assert_eq!(entries[1].data, 14..314);
        assert_eq!(entries[2].data, 317..70_317);
    }

    fn message(seq: u64, data_len: usize, at: u64) -> Message {
        Message::new(
            comet_store::new_epoch(),
            Seq(seq),
            comet_protocol::ChannelName::new("a").unwrap(),
            comet_protocol::EventType::message(),
            comet_protocol::Data::from("x".repeat(data_len)),
            at,
        )
    }

    #[test]
    fn a_segment_takes_messages_of_its_time_up_to_its_size() {
        let event = "message".len();
        let mut segment = SegmentBuilder::new(1, &message(1, 1000, 7));
        assert!(segment.takes(&message(2, 1000, 7)));
        assert!(!segment.takes(&message(2, 1000, 8)), "another stamp");
        assert!(!segment.takes(&message(2, SEGMENT_BYTES, 7)), "too large");
        segment.push(&message(2, SEGMENT_BYTES - 2 * (1000 + event) - event, 7));
        assert_eq!(segment.body.len(), SEGMENT_BYTES - 1000 - event);
        assert!(segment.takes(&message(3, 1000, 7)), "exactly full");
        assert!(!segment.takes(&message(3, 1001, 7)));
        let large = SegmentBuilder::new(1, &message(4, 2 * SEGMENT_BYTES, 7));
        assert!(
            !large.takes(&message(5, 0, 7)),
            "a large message stays alone"
        );
    }

    #[test]
    fn an_entry_counts_the_stored_size_of_its_message() {
        let stored = message(9, 321, 7);
        let segment = SegmentBuilder::new(1, &stored);
        let entries = decode_entries(Seq(9), &segment.entries).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].size("a".len()),
            comet_store::stored_size(&stored)
        );
        assert_eq!(
            &segment.body[entries[0].data.clone()],
            stored.data().bytes()
        );
    }

    #[test]
    fn a_damaged_entry_list_is_refused() {
        assert!(decode_entries(Seq(1), &[0x80]).is_none(), "cut varint");
        assert!(decode_entries(Seq(1), &[0, 1]).is_none(), "missing length");
        assert!(decode_entries(Seq(1), &[0xff; 12]).is_none(), "too long");
    }
}
