//! Parking: how a waiting long poll is answered the moment a message is
//! stored.
//!
//! A long poll that finds nothing waits for one message. Woken the usual
//! way, every waiting poll of a channel becomes a runnable task, and its
//! answer goes out only when the scheduler reaches it, behind whatever else
//! became ready meanwhile (the re-polls of the clients already answered among
//! them). A parked poll instead leaves a [`Catch`] with the hub. When the
//! next message of its channels is stored, the feed marks the poll *caught*
//! and wakes it (cheap: this happens inside the store's commit), and the
//! publisher, as soon as its append returns, hands the message to every
//! caught poll in one loop, so all those answers are written before anything
//! else runs.
//!
//! Correctness never depends on that loop: a caught poll is always woken as
//! well, and if it runs first it finds its message with [`Parked::caught`]
//! and answers itself. Whoever comes second does nothing; a `Catch` must
//! make sure of that.

use std::sync::{Arc, OnceLock};

use comet_protocol::{Message, Seq};

/// The answering side of a parked poll (implemented by a transport).
pub trait Catch: Send + Sync {
    /// The poll was caught: wake whatever waits for it. It may be called
    /// inside the store's commit, more than once, and before or after
    /// `deliver`: it must be quick and must not block.
    fn wake(&self);

    /// Answers the poll with `message`, the first one of its channels after
    /// its position, if it has not been answered yet. Called at most once,
    /// right after the publish that stored `message`, in the publisher's
    /// context; it must not block (a write that would block is left to the
    /// woken poll).
    fn deliver(&self, message: &Arc<Message>);
}

/// One parked poll, as the feed keeps it.
pub(crate) struct Slot {
    /// Only messages after this are for the poll.
    pub(crate) after: Seq,
    pub(crate) catch: Arc<dyn Catch>,
    /// Decided once, by whichever comes first: `Some(message)` when a
    /// commit caught the poll, `None` when its `Parked` was dropped (the
    /// poll withdrew). A caught poll can no longer be withdrawn, and a
    /// withdrawn one can no longer be caught, so nothing is ever handed to
    /// a poll that gave up.
    outcome: OnceLock<Option<Arc<Message>>>,
}

impl Slot {
    pub(crate) fn new(after: Seq, catch: Arc<dyn Catch>) -> Self {
        Self {
            after,
            catch,
            outcome: OnceLock::new(),
        }
    }

    fn is_withdrawn(&self) -> bool {
        matches!(self.outcome.get(), Some(None))
    }

    /// Records `message` as what caught the poll; false if something
    /// already did (a poll of several channels is caught once) or the poll
    /// withdrew.
    pub(crate) fn catch_by(&self, message: &Arc<Message>) -> bool {
        self.outcome.set(Some(message.clone())).is_ok()
    }

    /// Withdraws the poll; false if a commit caught it first.
    fn withdraw(&self) -> bool {
        self.outcome.set(None).is_ok()
    }

    pub(crate) fn caught(&self) -> Option<Arc<Message>> {
        self.outcome.get().cloned().flatten()
    }
}

/// The parked polls of one channel.
///
/// Withdrawing a poll only marks its slot; withdrawn slots leave the list
/// at the next message of the channel, or when the list has doubled since
/// it was last swept. So withdrawing costs the same with ten thousand polls
/// parked as with one (a quiet channel's polls all time out together), and
/// the list never holds much more than twice the polls still parked.
#[derive(Default)]
pub(crate) struct ParkedList {
    slots: Vec<Arc<Slot>>,
    sweep_at: usize,
}

impl ParkedList {
    pub(crate) fn push(&mut self, slot: Arc<Slot>) {
        if self.slots.len() >= self.sweep_at {
            self.slots.retain(|slot| !slot.is_withdrawn());
            self.sweep_at = (self.slots.len() * 2).max(64);
        }
        self.slots.push(slot);
    }

    /// Takes out the slots `message` catches, marks them caught and adds
    /// them to `caught`; drops withdrawn slots on the way.
    pub(crate) fn release(&mut self, message: &Arc<Message>, caught: &mut Vec<Arc<Slot>>) {
        let seq = message.seq();
        self.slots.retain(|slot| {
            if slot.is_withdrawn() {
                return false;
            }
            if slot.after >= seq {
                return true;
            }
            if slot.catch_by(message) {
                caught.push(slot.clone());
            }
            false
        });
    }

    /// Takes out every slot and withdraws it (those a commit caught are
    /// already on their way): the slots to wake, so their polls read again.
    pub(crate) fn withdraw_all(&mut self) -> Vec<Arc<Slot>> {
        self.sweep_at = 0;
        std::mem::take(&mut self.slots)
            .into_iter()
            .filter(|slot| slot.withdraw())
            .collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Takes back the slot pushed last (parking refused before the list's
    /// lock was let go, so no commit saw it).
    pub(crate) fn pop(&mut self) {
        self.slots.pop();
    }
}

/// A parked poll. Dropping it withdraws the poll from its channels.
pub struct Parked {
    pub(crate) slot: Arc<Slot>,
}

impl Parked {
    /// The message that caught the poll, if one did: the first message of
    /// its channels after its position.
    pub fn caught(&self) -> Option<Arc<Message>> {
        self.slot.caught()
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.slot.withdraw();
    }
}
