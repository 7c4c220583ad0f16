//! The behaviour every [`Store`] must have, as tests any backend runs.
//!
//! A backend's test file calls [`store_conformance!`](crate::store_conformance)
//! with a function that builds a fresh, empty store from [`StoreOptions`];
//! the macro expands to one `#[tokio::test]` per check, so a failure
//! names the behaviour that broke. The checks are grouped by what they
//! are about: `reading` (positions, reads, backlogs, summaries, listings,
//! the commit listener), `retention` (by count, age and total size, and
//! forgotten channels) and `batches` (batches and idempotency keys); this
//! file holds the macro and the helpers they share.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use comet_protocol::{ChannelName, Data, EventType, IdempotencyKey, Message, Seq};

mod batches;
mod reading;
mod retention;

pub use batches::*;
pub use reading::*;
pub use retention::*;

use crate::{
    AppendError, Appended, CommitListener, Draft, History, IdempotencyOptions, ManualClock,
    Original, ReadLimit, Retention, Store, StoreOptions,
};

/// Expands to one test per conformance check for the store built by
/// `$factory`, an `async fn(StoreOptions) -> Arc<dyn Store>` (or a closure
/// returning such a future).
#[macro_export]
macro_rules! store_conformance {
    ($factory:expr) => {
        $crate::store_conformance!(@tests $factory;
            sequence_is_store_wide_and_increasing,
            messages_keep_their_content,
            read_returns_exactly_the_later_messages,
            read_respects_limit_and_upto,
            read_respects_a_byte_limit_but_returns_one_message_at_least,
            unknown_channels_read_empty,
            backlog_start_is_just_before_the_newest,
            retention_by_count_trims_and_marks_the_gap,
            retention_by_count_is_exact_at_every_step_for_a_larger_limit,
            retention_by_age_trims_on_access,
            retention_by_age_is_enforced_without_access,
            a_large_age_sweep_removes_everything_expired_in_steps,
            retention_by_total_bytes_removes_the_oldest_of_the_store,
            a_channel_with_nothing_retained_is_forgotten_but_its_gap_is_not,
            forgotten_channels_are_remembered_within_the_bound,
            footprint_counts_what_is_held,
            listener_hears_every_commit_in_order_before_append_returns,
            work_after_commit_runs_once_after_the_listener_before_append_returns,
            reads_and_listings_do_not_wait_for_the_listener,
            summary_reports_retained_count_and_last_id,
            summary_leaves_out_expired_messages,
            channels_are_listed_in_name_order_by_pages,
            health_is_ok,
            a_batch_is_stored_in_order_and_announced_in_order,
            count_retention_trims_a_batch_message_by_message,
            the_byte_limit_trims_a_batch_message_by_message,
            age_retention_removes_a_batch_with_its_time,
            a_repeated_key_gets_the_original_answer_and_stores_nothing,
            a_key_reused_for_other_content_stores_nothing_of_the_batch,
            keys_repeated_within_one_batch_are_judged_like_any_other,
            keys_are_forgotten_after_the_window_and_beyond_the_bound,
            appends_racing_with_one_key_store_one_message,
        );
    };
    (@tests $factory:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::conformance::$check($factory).await;
            }
        )*
    };
}

/// Builds a fresh, empty store of the backend under test.
pub trait StoreFactory {
    /// A new store with `options`.
    fn build(&self, options: StoreOptions) -> impl Future<Output = Arc<dyn Store>>;
}

impl<F, Fut> StoreFactory for F
where
    F: Fn(StoreOptions) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    fn build(&self, options: StoreOptions) -> impl Future<Output = Arc<dyn Store>> {
        self(options)
    }
}

fn name(text: &str) -> ChannelName {
    ChannelName::new(text).expect("valid test channel name")
}

fn text(data: &str) -> Data {
    Data::from(data.to_string())
}

async fn append(store: &dyn Store, channel: &str, data: &str) -> Arc<Message> {
    store
        .append(&name(channel), EventType::message(), text(data))
        .await
        .expect("append")
}

fn datas(messages: &[Arc<Message>]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.data().as_str().to_string())
        .collect()
}

fn options(retention: Retention) -> (StoreOptions, ManualClock) {
    let clock = ManualClock::new(1_700_000_000_000);
    let options = StoreOptions {
        retention,
        clock: Arc::new(clock.clone()),
        idempotency: IdempotencyOptions::default(),
    };
    (options, clock)
}

fn default_options() -> StoreOptions {
    options(Retention::default()).0
}

/// A listener that keeps every message it hears.
#[derive(Default)]
struct Heard(Mutex<Vec<Arc<Message>>>);

impl CommitListener for Heard {
    fn committed(&self, message: &Arc<Message>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message.clone());
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Seq>>);

impl CommitListener for Recorder {
    fn committed(&self, message: &Arc<Message>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message.seq());
    }
}

fn keyed(channel: &str, data: &str, key: &str, subscribers: u64) -> Draft {
    Draft {
        idempotency_key: Some(IdempotencyKey::new(key).expect("valid test key")),
        subscribers,
        ..Draft::new(name(channel), EventType::message(), text(data))
    }
}

fn plain(channel: &str, data: &str) -> Draft {
    Draft::new(name(channel), EventType::message(), text(data))
}

/// The message of a draft that was stored; panics on a repeat.
fn stored(appended: &Appended) -> &Arc<Message> {
    match appended {
        Appended::Stored(message) => message,
        Appended::Repeat(original) => {
            panic!("expected a stored message, got a repeat of {original:?}")
        }
    }
}

fn repeat_of(appended: &Appended) -> Original {
    match appended {
        Appended::Repeat(original) => *original,
        Appended::Stored(message) => panic!("expected a repeat, got message {}", message.seq()),
    }
}

/// What `channel` holds up to the head, read at once.
async fn history_of(store: &dyn Store, channel: &str) -> History {
    store
        .read(
            &name(channel),
            Seq::ZERO,
            store.head(),
            ReadLimit::messages(10_000),
        )
        .await
        .expect("read")
}

async fn all_of(store: &dyn Store, channel: &str) -> Vec<String> {
    let history = store
        .read(
            &name(channel),
            Seq::ZERO,
            Seq(u64::MAX),
            ReadLimit::messages(10_000),
        )
        .await
        .expect("read");
    datas(&history.messages)
}

/// A store whose byte limit keeps ten messages of the data it returns (100
/// bytes) to a one-letter channel, and their stored size: 100 (data) + 7
/// ("message") + 1 (channel) + 64.
async fn store_of_ten_messages(factory: impl StoreFactory) -> (Arc<dyn Store>, String, u64) {
    let size = 172;
    let (options, _clock) = options(Retention {
        max_messages: 1000,
        max_bytes: Some(10 * size),
        ..Retention::default()
    });
    (factory.build(options).await, "x".repeat(100), size)
}
