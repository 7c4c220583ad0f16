//! A transaction's changes to the writer's catalog, drafted while it runs
//! and applied only once it commits (see `writer`): the channel rows it
//! touches (from the catalog, a tombstone on disk, or new), the head and
//! the store's totals. A failed commit drops the draft, and the catalog
//! stays what the database holds.

use std::collections::{HashMap, HashSet};

use comet_protocol::{ChannelName, Seq};
use comet_store::forgotten::folded_mark_index;
use rusqlite::{Connection, OptionalExtension, params};

use crate::database::{Catalog, ChannelRow};

/// The changes of one transaction, applied to the catalog after it commits.
pub(crate) struct Draft<'a> {
    catalog: &'a Catalog,
    changed: HashMap<i64, (ChannelName, ChannelRow)>,
    by_name: HashMap<ChannelName, i64>,
    /// Channels that were tombstones when this transaction began.
    revived: HashSet<i64>,
    pub(crate) head: Seq,
    pub(crate) bytes: u64,
    pub(crate) messages: u64,
    next_id: i64,
    /// Tombstones deleted (folded into the marks).
    pub(crate) evicted: u64,
}

impl<'a> Draft<'a> {
    pub(crate) fn new(catalog: &'a Catalog) -> Self {
        Self {
            catalog,
            changed: HashMap::new(),
            by_name: HashMap::new(),
            revived: HashSet::new(),
            head: catalog.head,
            bytes: catalog.bytes,
            messages: catalog.messages,
            next_id: catalog.next_id,
            evicted: 0,
        }
    }

    /// The channel's row as this transaction sees it: from the catalog,
    /// from its tombstone on disk, or new (starting from its folded mark).
    pub(crate) fn channel(
        &mut self,
        transaction: &Connection,
        name: &ChannelName,
    ) -> rusqlite::Result<&mut ChannelRow> {
        let id = match self.by_name.get(name) {
            Some(id) => *id,
            None => {
                let row = match self.catalog.channels.get(name) {
                    Some(row) => row.clone(),
                    None => self.not_held(transaction, name)?,
                };
                self.by_name.insert(name.clone(), row.id);
                self.changed.insert(row.id, (name.clone(), row));
                self.by_name[name]
            }
        };
        Ok(&mut self
            .changed
            .get_mut(&id)
            .expect("a drafted channel is in the draft")
            .1)
    }

    /// The row of a channel the catalog does not hold: its tombstone, or a
    /// new one.
    fn not_held(
        &mut self,
        transaction: &Connection,
        name: &ChannelName,
    ) -> rusqlite::Result<ChannelRow> {
        let tombstone = transaction
            .prepare_cached("SELECT id, last_seq, trimmed_upto FROM channels WHERE name = ?1")?
            .query_row([name.as_str()], |row| {
                Ok(ChannelRow {
                    id: row.get(0)?,
                    last_seq: Seq(row.get::<_, i64>(1)? as u64),
                    trimmed_upto: Seq(row.get::<_, i64>(2)? as u64),
                    retained: 0,
                    bytes: 0,
                })
            })
            .optional()?;
        if let Some(row) = tombstone {
            self.revived.insert(row.id);
            return Ok(row);
        }
        let mark: Option<i64> = transaction
            .prepare_cached("SELECT upto FROM forgotten_marks WHERE mark = ?1")?
            .query_row([folded_mark_index(name) as i64], |row| row.get(0))
            .optional()?;
        let mark = Seq(mark.unwrap_or(0) as u64);
        let id = self.next_id;
        self.next_id += 1;
        Ok(ChannelRow {
            id,
            last_seq: mark,
            trimmed_upto: mark,
            retained: 0,
            bytes: 0,
        })
    }

    /// The row of channel `id` as this transaction sees it, with the
    /// length of its name; `None` for a channel neither the catalog nor
    /// this draft holds.
    pub(crate) fn held(
        &mut self,
        transaction: &Connection,
        id: i64,
    ) -> rusqlite::Result<Option<(usize, &mut ChannelRow)>> {
        let name = match self.changed.get(&id) {
            Some((name, _)) => name.clone(),
            None => match self.catalog.names.get(&id) {
                Some(name) => name.clone(),
                None => return Ok(None),
            },
        };
        let channel = self.channel(transaction, &name)?;
        Ok(Some((name.as_str().len(), channel)))
    }

    /// Accounts for `count` removed messages of channel `id` (one the
    /// catalog or this draft holds), of `bytes` in all, the newest of them
    /// `upto`.
    pub(crate) fn removed(
        &mut self,
        transaction: &Connection,
        id: i64,
        upto: Seq,
        count: u64,
        bytes: u64,
    ) -> rusqlite::Result<()> {
        let Some((_, channel)) = self.held(transaction, id)? else {
            return Ok(());
        };
        channel.retained = channel.retained.saturating_sub(count);
        channel.bytes = channel.bytes.saturating_sub(bytes);
        channel.trimmed_upto = channel.trimmed_upto.max(upto);
        self.bytes = self.bytes.saturating_sub(bytes);
        self.messages = self.messages.saturating_sub(count);
        Ok(())
    }

    /// Tombstones on disk once this transaction commits.
    pub(crate) fn forgotten(&self) -> u64 {
        let mut forgotten = self.catalog.forgotten;
        for (id, (_, row)) in &self.changed {
            let was_tombstone = self.revived.contains(id);
            let is_tombstone = row.retained == 0;
            match (was_tombstone, is_tombstone) {
                (false, true) => forgotten += 1,
                (true, false) => forgotten = forgotten.saturating_sub(1),
                _ => {}
            }
        }
        forgotten.saturating_sub(self.evicted)
    }

    /// Writes the changed channel rows and the head.
    pub(crate) fn save(&self, transaction: &Connection) -> rusqlite::Result<()> {
        let mut upsert = transaction.prepare_cached(
            "INSERT INTO channels (id, name, last_seq, trimmed_upto, retained, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET last_seq = ?3, trimmed_upto = ?4, retained = ?5, bytes = ?6",
        )?;
        for (name, row) in self.changed.values() {
            upsert.execute(params![
                row.id,
                name.as_str(),
                row.last_seq.0 as i64,
                row.trimmed_upto.0 as i64,
                row.retained as i64,
                row.bytes as i64,
            ])?;
        }
        transaction
            .prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'head'")?
            .execute([self.head.0.to_string()])?;
        Ok(())
    }

    /// The changes, to apply once the transaction committed.
    pub(crate) fn finish(self) -> Changes {
        Changes {
            forgotten: self.forgotten(),
            changed: self.changed,
            head: self.head,
            bytes: self.bytes,
            messages: self.messages,
            next_id: self.next_id,
        }
    }
}

/// A committed transaction's changes to the catalog.
pub(crate) struct Changes {
    changed: HashMap<i64, (ChannelName, ChannelRow)>,
    head: Seq,
    bytes: u64,
    messages: u64,
    next_id: i64,
    forgotten: u64,
}

impl Changes {
    /// The channel rows changed, by name.
    pub(crate) fn channels(&self) -> impl Iterator<Item = (&ChannelName, &ChannelRow)> {
        self.changed.values().map(|(name, row)| (name, row))
    }

    /// Makes the catalog what the database now holds.
    pub(crate) fn apply(self, catalog: &mut Catalog) {
        for (id, (name, row)) in self.changed {
            if row.retained > 0 {
                catalog.names.insert(id, name.clone());
                catalog.channels.insert(name, row);
            } else {
                // Forgotten: its row stays on disk as a tombstone.
                catalog.names.remove(&id);
                catalog.channels.remove(&name);
            }
        }
        catalog.head = self.head;
        catalog.bytes = self.bytes;
        catalog.messages = self.messages;
        catalog.next_id = self.next_id;
        catalog.forgotten = self.forgotten;
    }
}
