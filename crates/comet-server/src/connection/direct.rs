//! The direct path: HTTP/1.1 for the hot routes, without hyper or the
//! router.
//!
//! Publishing, polling and opening streams are nearly all a push server
//! does, and through hyper and the router each request pays for generic
//! machinery (buffers, a boxed service call, header maps built twice). So
//! each connection starts here, on a keep-alive loop of three steps: the
//! request head is read (`super::head`) and routed (`super::request`); the
//! route's handler here (`open_stream`, `poll`, `publish`, and
//! `preflight` for a page of an allowed origin) serves it,
//! calling the same functions the router's handlers call; the answer is
//! written. Streams continue in `crate::transport::socket`; a long poll
//! that has to wait parks with its socket (`super::parked`). A new route
//! is a `Route` variant and a handler.
//!
//! The first request that is anything else (see `super::request`, or an
//! oversized body, or a foreign origin the policy refuses) hands the
//! connection, with everything read and not yet answered, to hyper for the
//! rest of its life; the router answers it exactly as it always did. A
//! stream whose subscription is refused is handed over the same way, so the
//! router answers the error. Errors of polls and publishes are answered
//! here, as JSON, and the connection stays open.

use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use comet_protocol::ChannelName;
use http::StatusCode;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::WaitForCancellationFuture;

use super::PeerIp;
use super::at_commit::AnswerSocket;
use super::head::{self, HeadDeadline};
use super::parked::{self, PollRequest, Polled};
use super::request::{Request, Route};
use crate::AppState;
use crate::cors::{self, AllowOrigin, Verdict};
use crate::error::ApiError;
use crate::params::channel_name;
use crate::publish;
use crate::transport::live::{Framing, Live};
use crate::transport::{socket, websocket};

/// What became of a connection.
pub(crate) enum Outcome {
    /// Served to its end; nothing is left to do.
    Done,
    /// A stream, opened and ready to be written to the end with
    /// `transport::socket::stream_to` (the connection answers nothing else).
    Stream(TcpStream, Live, Vec<u8>),
    /// A request head that is too slow, too large or not HTTP: answer this
    /// error and close.
    Refused(TcpStream, ApiError),
    /// A request for the router: the connection and what was read of it,
    /// starting with that request's head.
    Router(TcpStream, BytesMut),
}

/// What a route's handler leaves the connection loop to do.
enum Handled {
    /// Write this answer, then read the next request.
    Answer(TcpStream, Answer),
    /// The answer is out: read the next request.
    Continue(TcpStream),
    /// The connection goes elsewhere, or ends.
    End(Outcome),
}

/// An answer to write: a status and a JSON body (or an error).
struct Answer {
    status: StatusCode,
    body: Result<Bytes, ApiError>,
    cache_control: &'static str,
}

/// A request of the direct path, its head read and its origin allowed.
struct Served {
    request: Request,
    /// The head's length in the connection's buffer.
    head_length: usize,
    /// `Access-Control-Allow-Origin` for a page of another origin.
    allow_origin: Option<AllowOrigin>,
}

/// Serves `stream` until it closes or needs the router: reads each request
/// head, routes it (`super::request`), hands it to its route's handler, and
/// writes the answer.
pub(crate) async fn serve(mut stream: TcpStream, peer: PeerIp, state: &AppState) -> Outcome {
    let mut buffer = BytesMut::new();
    let mut publisher = Publisher::default();
    // One wait for the shutdown for the connection's life, not one per
    // request: each new wait registers with the token, and that was a
    // visible share of a publish.
    let mut shutdown = std::pin::pin!(state.shutdown.cancelled());
    let mut head_deadline = HeadDeadline::new(state.config.header_read_timeout);
    loop {
        let next = next_request(
            &mut stream,
            &mut buffer,
            shutdown.as_mut(),
            &mut head_deadline,
            state,
        );
        let served = match next.await {
            Ok(Some(served)) => served,
            Ok(None) => return Outcome::Router(stream, buffer),
            Err(outcome) => return outcome.with(stream),
        };
        let handled = match served.request.route {
            Route::Stream(framing) => {
                open_stream(stream, &mut buffer, &served, framing, state).await
            }
            Route::Poll => poll(stream, &mut buffer, &served, state).await,
            Route::WebSocket => open_websocket(stream, &served, state).await,
            Route::Publish => {
                let publisher = &mut publisher;
                publish(stream, &mut buffer, &served, peer, publisher, state).await
            }
            Route::Preflight => preflight(stream, &mut buffer, &served, state).await,
        };
        let answer = match handled {
            Handled::Answer(returned, answer) => {
                stream = returned;
                answer
            }
            Handled::Continue(returned) => {
                stream = returned;
                continue;
            }
            Handled::End(outcome) => return outcome,
        };
        let keep_alive = served.request.keep_alive && !state.shutdown.is_cancelled();
        if !write_answer(
            &stream,
            answer,
            served.allow_origin.as_ref(),
            keep_alive,
            state,
        )
        .await
        {
            return Outcome::Done;
        }
    }
}

/// Why no request of this path can be served, for [`Outcome`].
enum Stop {
    Done,
    Refused(ApiError),
}

impl Stop {
    fn with(self, stream: TcpStream) -> Outcome {
        match self {
            Stop::Done => Outcome::Done,
            Stop::Refused(error) => Outcome::Refused(stream, error),
        }
    }
}

/// Reads the next request head: `Ok(None)` when it is one for the router.
async fn next_request(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    shutdown: Pin<&mut WaitForCancellationFuture<'_>>,
    head_deadline: &mut HeadDeadline,
    state: &AppState,
) -> Result<Option<Served>, Stop> {
    let config = &state.config;
    if buffer.is_empty() && buffer.capacity() > 0 {
        // Nothing of the next request yet: hold no buffer while idle.
        *buffer = BytesMut::new();
    }
    let reading = head::read(
        stream,
        buffer,
        head_deadline,
        config.header_read_timeout,
        config.max_head_bytes,
        |parsed, length| (length, Request::parse(parsed)),
    );
    let read = tokio::select! {
        // A request already read is served even during the shutdown; its
        // answer then closes the connection.
        biased;
        read = reading => read,
        () = shutdown => return Err(Stop::Done),
    };
    let (head_length, request) = match read {
        Ok(Ok(head)) => head,
        Ok(Err(why)) => {
            state.metrics.closed(why.into());
            return Err(Stop::Done);
        }
        Err(error) => {
            let (refusal, api_error) = error.answer(config);
            state.metrics.refused(refusal);
            return Err(Stop::Refused(api_error));
        }
    };
    let Some(request) = request else {
        return Ok(None);
    };
    // Only a request with an `Origin` has an origin to judge.
    let allow_origin = if request.headers.contains_key(http::header::ORIGIN) {
        match cors::judge(&state.rules.cors(), &request.headers) {
            Verdict::Plain => None,
            Verdict::Allowed(origin) => Some(origin),
            // The router answers the refusal.
            Verdict::Refused(_) => return Ok(None),
        }
    } else {
        None
    };
    // A preflight from no origin or the same one is not a page's: the
    // router answers it as it always did.
    if request.route == Route::Preflight && allow_origin.is_none() {
        return Ok(None);
    }

    Ok(Some(Served {
        request,
        head_length,
        allow_origin,
    }))
}

/// `GET /sse/…` and `GET /stream/…`: the stream takes the connection for
/// good. A subscription that cannot open goes to the router, which answers
/// the error.
async fn open_stream(
    stream: TcpStream,
    buffer: &mut BytesMut,
    served: &Served,
    framing: Framing,
    state: &AppState,
) -> Handled {
    let request = &served.request;
    let opened = Box::pin(Live::open(
        state.clone(),
        &request.target,
        request.query.as_deref(),
        &request.headers,
        framing,
    ))
    .await;
    let Ok(live) = opened else {
        return Handled::End(Outcome::Router(stream, std::mem::take(buffer)));
    };
    let response_head = socket::response_head(framing, served.allow_origin.as_ref());
    Handled::End(Outcome::Stream(stream, live, response_head))
}

/// `GET /ws/…`: a valid handshake whose subscription opens takes the
/// connection for good; anything else is answered with its JSON error and
/// the connection closes (the client may be about to send frames).
async fn open_websocket(stream: TcpStream, served: &Served, state: &AppState) -> Handled {
    let request = &served.request;
    let accept = match websocket::accept(&request.headers) {
        Ok(accept) => accept,
        Err(error) => return Handled::End(Outcome::Refused(stream, error)),
    };
    let opened = Box::pin(Live::open(
        state.clone(),
        &request.target,
        request.query.as_deref(),
        &request.headers,
        Framing::WebSocket,
    ))
    .await;
    match opened {
        Ok(live) => {
            let head = websocket::response_head(&accept, &request.headers);
            Handled::End(Outcome::Stream(stream, live, head))
        }
        Err(error) => Handled::End(Outcome::Refused(stream, error)),
    }
}

/// `OPTIONS` from an allowed origin on a route of this path: answered
/// here, so that the request it clears (a publish, a poll, a stream with
/// an `Authorization` header) keeps the connection on this path.
async fn preflight(
    stream: TcpStream,
    buffer: &mut BytesMut,
    served: &Served,
    state: &AppState,
) -> Handled {
    let Some(allow_origin) = served.allow_origin.as_ref() else {
        // `next_request` leaves these to the router already.
        return Handled::End(Outcome::Router(stream, std::mem::take(buffer)));
    };
    buffer.advance(served.head_length);
    let keep_alive = served.request.keep_alive && !state.shutdown.is_cancelled();
    let head = cors::preflight_head(allow_origin, keep_alive);
    let timeout = state.config.write_timeout;
    let sent = socket::send(&stream, &[&head], &[], b"", timeout, state).await;
    if sent.is_err() || !keep_alive {
        return Handled::End(Outcome::Done);
    }
    Handled::Continue(stream)
}

/// `GET /poll/…`: answered at once, or parked with the connection
/// (`super::parked`) and answered by the publisher.
async fn poll(
    stream: TcpStream,
    buffer: &mut BytesMut,
    served: &Served,
    state: &AppState,
) -> Handled {
    buffer.advance(served.head_length);
    let request = &served.request;
    let polling = Box::pin(parked::poll(
        state,
        PollRequest {
            target: &request.target,
            query: request.query.as_deref(),
            headers: &request.headers,
            allow_origin: served.allow_origin.as_ref(),
            keep_alive: request.keep_alive,
        },
        stream,
    ));
    let (stream, polled) = polling.await;
    match polled {
        Polled::Answer(body) => Handled::Answer(
            stream,
            Answer {
                status: StatusCode::OK,
                body,
                cache_control: socket::NO_STORE,
            },
        ),
        Polled::Failed => Handled::End(Outcome::Done),
        Polled::Sent { unsent } => {
            let timeout = state.config.write_timeout;
            let sent = socket::send(&stream, &[], &[unsent], b"", timeout, state).await;
            if sent.is_err() || !request.keep_alive || state.shutdown.is_cancelled() {
                return Handled::End(Outcome::Done);
            }
            Handled::Continue(stream)
        }
    }
}

/// What a connection keeps from one publish to the next.
#[derive(Default)]
struct Publisher {
    /// Where the store's writer answers (`super::at_commit`).
    answer_socket: AnswerSocket,
    /// The channel last published to: a connection that publishes to one
    /// channel again and again has its name checked and stored once.
    last_channel: Option<ChannelName>,
}

impl Publisher {
    /// The channel named by `target`, the last one's again if it is the
    /// same.
    fn channel(&self, target: &str) -> Result<ChannelName, ApiError> {
        match &self.last_channel {
            Some(last) if last.as_str() == target => Ok(last.clone()),
            _ => channel_name(target),
        }
    }
}

/// `POST /pub/…`: the body is read (within the size limit and the body
/// deadline) and published.
async fn publish(
    mut stream: TcpStream,
    buffer: &mut BytesMut,
    served: &Served,
    peer: PeerIp,
    publisher: &mut Publisher,
    state: &AppState,
) -> Handled {
    let config = &state.config;
    let request = &served.request;
    let checked = publisher.channel(&request.target).and_then(|channel| {
        let query = request.query.as_deref();
        publish::check(state, channel, query, &request.headers, Some(peer.0))
    });
    let checked = match checked {
        Ok(checked) => checked,
        Err(error) => return answer_before_body(stream, buffer, served, error),
    };
    publisher.last_channel = Some(checked.channel().clone());
    let length = served.request.body_length;
    if length > config.max_body_bytes {
        // The router answers 413 before reading the body.
        return Handled::End(Outcome::Router(stream, std::mem::take(buffer)));
    }
    let whole = served.head_length + length;
    let read = if buffer.len() >= whole {
        // Already read with the head (the usual case for small bodies):
        // no timer to set.
        BodyRead::Complete
    } else {
        read_to(&mut stream, buffer, whole, config.body_read_timeout).await
    };
    match read {
        BodyRead::Complete => {}
        BodyRead::Closed => return Handled::End(Outcome::Done),
        BodyRead::TimedOut => return Handled::End(Outcome::Refused(stream, body_timeout(config))),
    }
    buffer.advance(served.head_length);
    // A copy of its own: a slice of the read buffer would keep the whole
    // buffer alive for as long as the message is retained.
    let body = Bytes::copy_from_slice(&buffer[..length]);
    buffer.advance(length);
    let answer_socket = &mut publisher.answer_socket;
    store(stream, served, checked, body, answer_socket, state).await
}

/// Stores a checked publish and answers it: at its commit where the store
/// allows (`super::at_commit`), otherwise once it returns.
async fn store(
    stream: TcpStream,
    served: &Served,
    checked: publish::Checked,
    body: Bytes,
    answer_socket: &mut AnswerSocket,
    state: &AppState,
) -> Handled {
    let keep_alive = served.request.keep_alive && !state.shutdown.is_cancelled();
    let at_commit = if keep_alive && state.hub.answers_at_commit() {
        let channel = checked.channel().clone();
        answer_socket.answer(&stream, channel, served.allow_origin.clone(), state)
    } else {
        None
    };
    let stored = match at_commit {
        None => Box::pin(publish::store(state, checked, body)).await,
        Some(answer) => {
            match Box::pin(publish::store_answering(state, checked, body, answer)).await {
                Ok(Ok(written)) => {
                    if written.finish(&stream, answer_socket, state).await {
                        return Handled::Continue(stream);
                    }
                    return Handled::End(Outcome::Done);
                }
                Ok(Err(answer)) => Ok(answer),
                Err(error) => Err(error),
            }
        }
    };
    let (status, body) = match stored {
        Ok((status, answer)) => (status, Ok(answer)),
        Err(error) => (error.status, Err(error)),
    };
    Handled::Answer(
        stream,
        Answer {
            status,
            body,
            cache_control: "",
        },
    )
}

/// Answers a publish refused before its body was read: the body is still
/// to come, so the connection ends after the answer (reading a body that
/// was refused would be work for nothing).
fn answer_before_body(
    stream: TcpStream,
    buffer: &mut BytesMut,
    served: &Served,
    error: ApiError,
) -> Handled {
    if served.request.body_length == 0 {
        buffer.advance(served.head_length);
        return Handled::Answer(
            stream,
            Answer {
                status: error.status,
                body: Err(error),
                cache_control: "",
            },
        );
    }
    Handled::End(Outcome::Refused(stream, error))
}

/// Writes `answer`; false when the connection cannot go on.
async fn write_answer(
    stream: &TcpStream,
    answer: Answer,
    allow_origin: Option<&AllowOrigin>,
    keep_alive: bool,
    state: &AppState,
) -> bool {
    let (status, body, header) = match answer.body {
        Ok(body) => (answer.status, body, None),
        Err(error) => (error.status, error.body(), error.header),
    };
    let head = socket::AnswerHead {
        status,
        length: body.len(),
        cache_control: answer.cache_control,
        allow_origin,
        keep_alive,
        header,
    }
    .to_bytes();
    let timeout = state.config.write_timeout;
    let sent = socket::send(stream, &[&head], &[body], b"", timeout, state).await;
    sent.is_ok() && keep_alive
}

/// How reading a request body ended.
enum BodyRead {
    Complete,
    Closed,
    TimedOut,
}

/// Reads until `buffer` holds `length` bytes, within `limit` in all: a
/// client that trickles its body cannot hold the connection longer.
async fn read_to(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    length: usize,
    limit: Duration,
) -> BodyRead {
    let reading = async {
        while buffer.len() < length {
            buffer.reserve(length - buffer.len());
            match stream.read_buf(buffer).await {
                Ok(read) if read > 0 => {}
                _ => return BodyRead::Closed,
            }
        }
        BodyRead::Complete
    };
    tokio::time::timeout(limit, reading)
        .await
        .unwrap_or(BodyRead::TimedOut)
}

/// The answer to a body that did not arrive in time.
pub(crate) fn body_timeout(config: &crate::ServerConfig) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the request body did not arrive within {} ms",
            config.body_read_timeout.as_millis()
        ),
    )
}
