//! Retention inside the writer's transactions: trimming a channel to its
//! count limit (in batches), the store to its total bytes, messages past
//! their age (whole segments, see `segment`), and letting go of the oldest
//! tombstones. Each step records what it removed in the transaction's
//! [`Draft`], which the writer applies to its catalog once the transaction
//! commits. A trim that stops inside a segment moves the channel's
//! `trimmed_upto` and leaves the row; the row goes with its last message.

use comet_protocol::{ChannelName, Seq};
use comet_store::forgotten::folded_mark_index;
use rusqlite::{Connection, OptionalExtension, params};

use crate::database::sql;
use crate::segment::{self, HEAD_COLUMNS, SegmentHead};

use crate::draft::Draft;

/// How many messages a channel may hold beyond its count limit before a
/// commit trims it (a sixteenth of the limit, at most [`MAX_TRIM_SLACK`]):
/// a commit of a few messages then rarely also deletes as many old rows
/// elsewhere in the table (measured: 19 to 20 % more durable publishes/s
/// with 1 and 8 publishers). Readers never see the extra messages: they
/// count as trimmed (`reader`).
pub(crate) fn trim_slack(max_messages: usize) -> u64 {
    (max_messages / 16).min(MAX_TRIM_SLACK) as u64
}

/// The most a full channel may hold beyond its limit between trims. With
/// a large limit, a larger batch means a channel trims once in many
/// commits instead of in each one (measured with a limit of 100,000 and
/// 64 publishers: 1.055x the publishes/s of a cap of 64, the median of
/// eight alternating pairs); at most 1,024 messages stay on disk unseen.
const MAX_TRIM_SLACK: usize = 1024;

/// Tombstones are let go in batches (a sixteenth of the bound, at most
/// this many) once a batch is beyond the bound: one larger delete now and
/// then costs much less than a small one in every commit (measured: with a
/// new channel forgotten at every publish, 9.6k against 14.3k durable
/// publishes/s).
pub(crate) const EVICT_STEP: usize = 1024;

/// Lets go of a batch of the oldest tombstones once a batch is beyond
/// `keep` (so at most `keep` plus a sixteenth are kept), folding each into
/// its mark. Runs after the draft's rows are saved, so it sees this
/// transaction's tombstones too.
pub(crate) fn evict_tombstones(
    transaction: &Connection,
    draft: &mut Draft<'_>,
    keep: usize,
) -> rusqlite::Result<()> {
    let batch = (keep / 16).clamp(1, EVICT_STEP) as u64;
    let excess = draft.forgotten().saturating_sub(keep as u64);
    if excess < batch {
        return Ok(());
    }
    let excess = excess.min(EVICT_STEP as u64);
    let evicted = transaction
        .prepare_cached(
            "DELETE FROM channels WHERE id IN (
                 SELECT id FROM channels WHERE retained = 0 ORDER BY last_seq LIMIT ?1)
             RETURNING name, last_seq",
        )?
        .query_map([excess as i64], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut fold = transaction.prepare_cached(
        "INSERT INTO forgotten_marks (mark, upto) VALUES (?1, ?2)
         ON CONFLICT (mark) DO UPDATE SET upto = max(upto, excluded.upto)",
    )?;
    for (name, last_seq) in &evicted {
        // Names were validated when stored; one that is not cannot be
        // looked up by a reader either.
        if let Ok(name) = ChannelName::new(name) {
            fold.execute(params![folded_mark_index(&name) as i64, last_seq])?;
        }
    }
    draft.evicted += evicted.len() as u64;
    Ok(())
}

/// Keeps at most `max_messages` in each of the `touched` channels (each
/// named once).
pub(crate) fn trim_by_count(
    transaction: &Connection,
    draft: &mut Draft<'_>,
    touched: &[ChannelName],
    max_messages: usize,
) -> rusqlite::Result<()> {
    let slack = trim_slack(max_messages);
    let max_messages = max_messages.max(1) as u64;
    for name in touched {
        let channel = draft.channel(transaction, name)?;
        if channel.retained <= max_messages + slack {
            continue;
        }
        let excess = (channel.retained - max_messages) as usize;
        let (id, trimmed_upto) = (channel.id, channel.trimmed_upto);
        let oldest = oldest_of_channel(transaction, id, trimmed_upto, excess, name.as_str().len())?;
        segment::delete_through(transaction, id, oldest.upto)?;
        draft.removed(transaction, id, oldest.upto, oldest.count, oldest.bytes)?;
    }
    Ok(())
}

/// A channel's oldest retained messages, as many as asked for (or all).
#[derive(Default)]
pub(crate) struct Oldest {
    /// The newest of them.
    pub(crate) upto: Seq,
    pub(crate) count: u64,
    pub(crate) bytes: u64,
}

/// The `count` oldest messages channel `id` retains after `trimmed_upto`
/// (its name `name_len` bytes long). Reads positions only.
pub(crate) fn oldest_of_channel(
    connection: &Connection,
    id: i64,
    trimmed_upto: Seq,
    count: usize,
    name_len: usize,
) -> rusqlite::Result<Oldest> {
    let mut oldest = Oldest {
        upto: trimmed_upto,
        ..Oldest::default()
    };
    let mut left = count;
    let mut statement = connection.prepare_cached(segment::OF_CHANNEL)?;
    segment::each(&mut statement, params![id, sql(trimmed_upto)], |segment| {
        let retained = segment.retained(trimmed_upto);
        let taken = &retained[..retained.len().min(left)];
        left -= taken.len();
        oldest.count += taken.len() as u64;
        oldest.bytes += taken.iter().map(|entry| entry.size(name_len)).sum::<u64>();
        if let Some(last) = taken.last() {
            oldest.upto = last.seq;
        }
        left > 0
    })?;
    Ok(oldest)
}

/// Removes the store's oldest messages until it holds at most `max_bytes`;
/// never `keep` (the newest message).
///
/// The oldest messages are taken in sequence order across channels, and
/// segments of one group interleave (a group's messages to `a` and `b`
/// alternate), so this merges the segments in order of their first
/// messages: one is opened only once its first message is the oldest left.
pub(crate) fn trim_by_bytes(
    transaction: &Connection,
    draft: &mut Draft<'_>,
    max_bytes: u64,
    keep: Seq,
) -> rusqlite::Result<()> {
    if draft.bytes <= max_bytes {
        return Ok(());
    }
    let mut next = transaction.prepare_cached(&format!(
        "SELECT {HEAD_COLUMNS} FROM segments WHERE first_seq > ?1 ORDER BY first_seq LIMIT 1"
    ))?;
    let mut fetch = |after: Seq| {
        next.query_row([sql(after)], SegmentHead::from_row)
            .optional()
    };
    // Segments being trimmed, each with the index of its oldest entry left
    // and the length of its channel's name.
    let mut open: Vec<(SegmentHead, usize, usize)> = Vec::new();
    let mut upcoming = fetch(Seq::ZERO)?;
    let mut emptied = Vec::new();
    while draft.bytes > max_bytes {
        let oldest_open = open
            .iter()
            .enumerate()
            .map(|(index, (segment, at, _))| (segment.entries[*at].seq, index))
            .min();
        let opens_first = match (&upcoming, oldest_open) {
            (Some(segment), Some((seq, _))) => segment.first_seq < seq,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if opens_first {
            let segment = upcoming.take().expect("an upcoming segment");
            upcoming = fetch(segment.first_seq)?;
            match draft.held(transaction, segment.channel_id)? {
                Some((name_len, channel)) => {
                    let at = segment.entries.len() - segment.retained(channel.trimmed_upto).len();
                    if at < segment.entries.len() {
                        open.push((segment, at, name_len));
                    } else {
                        emptied.push(segment.first_seq);
                    }
                }
                // Of no channel held: nothing to account for.
                None => emptied.push(segment.first_seq),
            }
            continue;
        }
        let Some((seq, index)) = oldest_open else {
            break;
        };
        if seq >= keep {
            break;
        }
        let (segment, at, name_len) = &mut open[index];
        let size = segment.entries[*at].size(*name_len);
        draft.removed(transaction, segment.channel_id, seq, 1, size)?;
        *at += 1;
        if *at == segment.entries.len() {
            emptied.push(segment.first_seq);
            open.swap_remove(index);
        }
    }
    for first_seq in emptied {
        segment::delete(transaction, first_seq)?;
    }
    Ok(())
}

/// Removes up to `at_most` segments of messages published before
/// `cutoff_ms`, oldest first; true if more may remain. Times follow
/// sequence order (the writer stamps them as it numbers them, one stamp
/// per group), so the scan stops at the first segment young enough to
/// keep.
pub(crate) fn trim_by_age(
    transaction: &Connection,
    draft: &mut Draft<'_>,
    cutoff_ms: u64,
    at_most: usize,
) -> rusqlite::Result<bool> {
    let mut oldest = transaction.prepare_cached(&format!(
        "SELECT {HEAD_COLUMNS} FROM segments ORDER BY first_seq LIMIT 256"
    ))?;
    let mut removed = 0;
    loop {
        let page = oldest_page(&mut oldest, [])?;
        if page.is_empty() {
            return Ok(false);
        }
        for segment in &page {
            if segment.published_at >= cutoff_ms {
                return Ok(false);
            }
            if removed >= at_most {
                return Ok(true);
            }
            segment::delete(transaction, segment.first_seq)?;
            removed += 1;
            let Some((name_len, channel)) = draft.held(transaction, segment.channel_id)? else {
                continue;
            };
            let retained = segment.retained(channel.trimmed_upto);
            let bytes = retained.iter().map(|entry| entry.size(name_len)).sum();
            let count = retained.len() as u64;
            let upto = segment.last_seq();
            draft.removed(transaction, segment.channel_id, upto, count, bytes)?;
        }
    }
}

/// A page of the oldest segments.
fn oldest_page(
    query: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<SegmentHead>> {
    query.query_map(params, SegmentHead::from_row)?.collect()
}
