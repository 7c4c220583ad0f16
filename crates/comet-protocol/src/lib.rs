//! The words Comet speaks on the wire, and nothing else.
//!
//! This crate owns the vocabulary shared by the server, the hub, the stores
//! and the clients: validated names ([`ChannelName`], [`ChannelList`],
//! [`EventType`], [`IdempotencyKey`]), positions in a history ([`Epoch`], [`Seq`], [`Cursor`]),
//! the [`Message`] itself, and the byte-exact encodings every transport sends
//! ([`sse`], [`json`], [`ws`]).
//!
//! It does no I/O and knows no async runtime: everything here is a pure
//! function of its input, so it is tested byte by byte without sockets.
//! Untrusted input is validated into these types once, at the boundary;
//! after that, encoding cannot fail.

mod channel;
mod event;
mod id;
mod idempotency;
pub mod json;
mod message;
pub mod sse;
pub mod ws;

pub use channel::{
    ChannelList, ChannelName, InvalidChannel, InvalidChannelList, MAX_CHANNEL_NAME_LEN,
};
pub use event::{
    BROWSER_EVENT_TYPES, EventType, InvalidEventType, MAX_EVENT_TYPE_LEN, RESERVED_EVENT_PREFIX,
};
pub use id::{Cursor, Epoch, InvalidCursor, InvalidEpoch, MAX_EPOCH_LEN, MessageId, Seq};
pub use idempotency::{IdempotencyKey, InvalidIdempotencyKey, MAX_IDEMPOTENCY_KEY_LEN};
pub use message::{Data, Gap, GapReason, InvalidData, Message};
