//! The JSON lines the client commands print, with their fields in the
//! documented order.

use comet_client::{Gap, Message, Published, SseEvent};
use comet_protocol::sse::StreamEnd;
use serde::Serialize;

fn line(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// `{"type","data","lastEventId"}`
pub fn event(event: &SseEvent) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        r#type: &'a str,
        data: &'a str,
        #[serde(rename = "lastEventId")]
        last_event_id: &'a str,
    }
    line(&Line {
        r#type: &event.event_type,
        data: &event.data,
        last_event_id: &event.last_event_id,
    })
}

/// `{"end":true,"retry","lastEventId"}`
pub fn end(end: &StreamEnd) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        end: bool,
        retry: Option<u64>,
        #[serde(rename = "lastEventId")]
        last_event_id: &'a str,
    }
    line(&Line {
        end: true,
        retry: end.retry,
        last_event_id: &end.last_event_id,
    })
}

/// `{"id","channel","event","data"}`
pub fn message(message: &Message) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        id: &'a str,
        channel: &'a str,
        event: &'a str,
        data: &'a str,
    }
    line(&Line {
        id: &message.id,
        channel: &message.channel,
        event: &message.event,
        data: &message.data,
    })
}

/// `{"gap":{"channel","reason"}}`
pub fn gap(gap: &Gap) -> String {
    #[derive(Serialize)]
    struct Inner<'a> {
        channel: &'a str,
        reason: &'a str,
    }
    #[derive(Serialize)]
    struct Line<'a> {
        gap: Inner<'a>,
    }
    line(&Line {
        gap: Inner {
            channel: &gap.channel,
            reason: &gap.reason,
        },
    })
}

/// `{"channel","id","subscribers"}`
pub fn published(published: &Published) -> String {
    line(published)
}
