//! What a store remembers of channels it no longer holds.
//!
//! A channel whose retained messages are all gone (trimmed by the store's
//! total byte limit, or expired) costs nothing but what gap detection
//! needs: a reader that resumes on it from a position before its last
//! message missed something, and must be told. So a store keeps, per
//! forgotten channel, one number, its last sequence number (a *tombstone*),
//! for up to a configured number of channels, most recently forgotten
//! first. Beyond that, older tombstones fold into [`FoldedMarks`]: a fixed
//! table of marks indexed by a hash of the name, each the highest last
//! sequence number of the channels folded into it. Folding is
//! conservative: a reader of a channel that shares a mark may be told of a
//! gap that did not concern it, never the opposite.
//!
//! The hash and the table's size are part of the durable store's format
//! (it keeps the marks on disk): change neither.

use comet_protocol::{ChannelName, Seq};

/// How many marks the folded table holds.
pub const FOLDED_MARKS: usize = 1 << 16;

/// The table index of a channel's mark: the FNV-1a hash of its name,
/// its high bits folded into the low ones.
pub fn folded_mark_index(channel: &ChannelName) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in channel.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits are its weakest: fold the high ones in.
    hash ^= hash >> 32;
    hash ^= hash >> 16;
    (hash % FOLDED_MARKS as u64) as usize
}

/// Marks for channels whose tombstones were let go (see the module doc).
pub struct FoldedMarks {
    marks: Vec<Seq>,
}

impl Default for FoldedMarks {
    fn default() -> Self {
        Self {
            marks: vec![Seq::ZERO; FOLDED_MARKS],
        }
    }
}

impl FoldedMarks {
    /// Folds in a channel forgotten after `last_seq`.
    pub fn fold(&mut self, channel: &ChannelName, last_seq: Seq) {
        let mark = &mut self.marks[folded_mark_index(channel)];
        *mark = (*mark).max(last_seq);
    }

    /// The highest last sequence number a channel folded under this name's
    /// mark may have had.
    pub fn mark(&self, channel: &ChannelName) -> Seq {
        self.marks[folded_mark_index(channel)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> ChannelName {
        ChannelName::new(text).unwrap()
    }

    #[test]
    fn the_index_is_stable_and_spread() {
        // Part of the durable format: these values must never change.
        assert_eq!(folded_mark_index(&name("news")), 0x7bef);
        let distinct: std::collections::HashSet<usize> = (0..1000)
            .map(|i| folded_mark_index(&name(&format!("user.{i}"))))
            .collect();
        assert!(distinct.len() >= 985, "{}", distinct.len());
    }

    #[test]
    fn marks_only_grow() {
        let mut marks = FoldedMarks::default();
        marks.fold(&name("a"), Seq(7));
        marks.fold(&name("a"), Seq(3));
        assert_eq!(marks.mark(&name("a")), Seq(7));
        assert_eq!(marks.mark(&name("unrelated")), Seq::ZERO);
    }
}
