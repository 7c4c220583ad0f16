//! A lean WebSocket reader for load generation: opens `GET path` with the
//! RFC 6455 handshake and hands out the data of each message. Comet's text
//! frames hold a JSON object whose `data` is taken out (heartbeat objects
//! are skipped); Nchan's hold the data itself. Pings are answered, so an
//! idle connection stays open as long as a scenario wants.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::HttpError;
use crate::target::Kind;

/// An open WebSocket.
pub struct WsReader {
    stream: TcpStream,
    buffer: BytesMut,
    kind: Kind,
    /// Bytes read along with the `101` wait for the first `read`.
    head_leftover: bool,
    ended: bool,
}

/// An empty, masked pong (the mask is all zeros: allowed, and the payload
/// is empty anyway).
const PONG: [u8; 6] = [0x8a, 0x80, 0, 0, 0, 0];

impl WsReader {
    /// Opens the WebSocket; returns once the `101` arrived.
    pub async fn open(address: SocketAddr, path: &str, kind: Kind) -> Result<Self, HttpError> {
        let mut stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: {address}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buffer = BytesMut::with_capacity(1024);
        let head_len = loop {
            if stream.read_buf(&mut buffer).await? == 0 {
                return Err(HttpError::Closed);
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&buffer) {
                Ok(httparse::Status::Complete(head_len)) => {
                    if response.code != Some(101) {
                        return Err(HttpError::Malformed(format!(
                            "the WebSocket handshake answered {:?}",
                            response.code
                        )));
                    }
                    break head_len;
                }
                Ok(httparse::Status::Partial) => {}
                Err(error) => return Err(HttpError::Malformed(error.to_string())),
            }
        };
        buffer.advance(head_len);
        Ok(Self {
            stream,
            buffer,
            kind,
            head_leftover: true,
            ended: false,
        })
    }

    /// Reads, then calls `on_data` with the data of each complete message.
    /// Returns false once the connection ended (closed by the server).
    pub async fn read(&mut self, mut on_data: impl FnMut(&[u8])) -> Result<bool, HttpError> {
        if self.ended {
            return Ok(false);
        }
        if self.head_leftover {
            self.head_leftover = false;
        } else if self.stream.read_buf(&mut self.buffer).await? == 0 {
            self.ended = true;
            return Ok(false);
        }
        let mut pings = 0;
        while let Some((opcode, header, length)) = frame_at(&self.buffer) {
            let payload = &self.buffer[header..header + length];
            match opcode {
                0x1 => match self.kind {
                    Kind::Comet => {
                        if let Some(data) = comet_data(payload) {
                            on_data(data);
                        }
                    }
                    Kind::Nchan => on_data(payload),
                },
                0x8 => self.ended = true,
                0x9 => pings += 1,
                _ => {}
            }
            self.buffer.advance(header + length);
        }
        for _ in 0..pings {
            self.stream.write_all(&PONG).await?;
        }
        Ok(!self.ended)
    }
}

/// The opcode, header length and payload length of the whole frame at the
/// start of `buffer`, if it is all there.
fn frame_at(buffer: &[u8]) -> Option<(u8, usize, usize)> {
    if buffer.len() < 2 {
        return None;
    }
    let (header, length) = match buffer[1] & 0x7f {
        126 => (
            4,
            usize::from(u16::from_be_bytes([*buffer.get(2)?, *buffer.get(3)?])),
        ),
        127 => {
            let bytes: [u8; 8] = buffer.get(2..10)?.try_into().ok()?;
            (10, u64::from_be_bytes(bytes) as usize)
        }
        short => (2, usize::from(short)),
    };
    (buffer.len() >= header + length).then_some((buffer[0] & 0x0f, header, length))
}

/// The `data` string of a Comet message object (the scenarios' payloads
/// need no JSON escapes); `None` for other objects (heartbeats, gaps).
fn comet_data(object: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b",\"data\":\"";
    let start = memchr::memmem::rfind(object, KEY)? + KEY.len();
    object.get(start..object.len().checked_sub(2)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_data_are_found() {
        let object = br#"{"id":"e-1/a","channel":"a","event":"message","data":"7 123.."}"#;
        assert_eq!(comet_data(object), Some(&b"7 123.."[..]));
        assert_eq!(comet_data(br#"{"heartbeat":true}"#), None);
        let mut frame = vec![0x81, object.len() as u8];
        frame.extend_from_slice(object);
        assert_eq!(frame_at(&frame), Some((1, 2, object.len())));
        assert_eq!(frame_at(&frame[..frame.len() - 1]), None);
        let long = [&[0x81u8, 126, 0x01, 0x00][..], &[b'x'; 256]].concat();
        assert_eq!(frame_at(&long), Some((1, 4, 256)));
    }
}
