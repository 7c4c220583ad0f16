//! The servers a scenario can load, and how each spells publishing,
//! subscribing and long polling.
//!
//! - Comet: `POST /pub/{channel}`, `GET /sse/{channel}`, long polling with
//!   `GET /poll/{channel}?wait=…&since=CURSOR`.
//! - Nchan (nginx), configured as `bench/compare.sh` does: `POST /pub/{id}`,
//!   `GET /sub/{id}` with `Accept: text/event-stream`, long polling with
//!   `GET /sub/{id}` and the `Last-Modified`/`Etag` of the previous answer
//!   sent back as `If-Modified-Since`/`If-None-Match`.

use std::net::SocketAddr;

/// Which kind of server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Comet.
    Comet,
    /// Nchan.
    Nchan,
}

/// A server to load.
#[derive(Clone, Debug)]
pub struct Target {
    /// Its kind.
    pub kind: Kind,
    /// Where it listens (loopback).
    pub address: SocketAddr,
}

impl Target {
    /// The publish path of `channel`.
    pub fn publish_path(&self, channel: &str) -> String {
        format!("/pub/{channel}")
    }

    /// The SSE path of `channel`.
    pub fn sse_path(&self, channel: &str) -> String {
        match self.kind {
            Kind::Comet => format!("/sse/{channel}"),
            Kind::Nchan => format!("/sub/{channel}"),
        }
    }
}

/// Where a long-polling client resumes.
#[derive(Clone, Debug, Default)]
pub enum PollCursor {
    /// The first poll: from "now".
    #[default]
    Start,
    /// Comet: the `cursor` of the last answer.
    Comet(String),
    /// Nchan: `Last-Modified` and `Etag` of the last answer.
    Nchan {
        /// `Last-Modified`.
        modified: String,
        /// `Etag`.
        etag: String,
    },
}
