//! A WebSocket client written from RFC 6455 rather than from Comet's code,
//! byte by byte: for frames no well-behaved client sends, and for reading
//! exactly what the server framed.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::within;

/// The handshake key of RFC 6455's own example, and the accept it implies.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A frame of another opcode: the opcode and payload.
    Other(u8, Vec<u8>),
    /// A ping, with its payload.
    Ping(Vec<u8>),
    /// A pong, with its payload.
    Pong(Vec<u8>),
    /// A close, with its code if it had one.
    Close(Option<u16>),
}

/// An open WebSocket, as a raw TCP connection.
pub struct RawWebSocket {
    stream: TcpStream,
    buffer: BytesMut,
    /// The head of the `101` answer.
    pub head: String,
}

impl RawWebSocket {
    /// Opens `path` on `address` with a valid handshake; fails the test on
    /// anything but `101` with the right accept.
    pub async fn connect(address: SocketAddr, path: &str) -> Self {
        Self::connect_with(address, path, "").await
    }

    /// [`connect`](Self::connect), with more header `fields` (each ending
    /// in CRLF).
    pub async fn connect_with(address: SocketAddr, path: &str, fields: &str) -> Self {
        let stream = TcpStream::connect(address).await.expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: {address}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-key: {KEY}\r\nsec-websocket-version: 13\r\n{fields}\r\n"
        );
        let mut socket = Self {
            stream,
            buffer: BytesMut::new(),
            head: String::new(),
        };
        socket.send_raw(request.as_bytes()).await;
        let head = within("the handshake's answer", socket.read_head()).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(
            head.to_ascii_lowercase().contains(&format!(
                "sec-websocket-accept: {}",
                ACCEPT.to_ascii_lowercase()
            )),
            "{head}"
        );
        socket.head = head;
        socket
    }

    async fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = self.buffer.split_to(end + 4);
                return String::from_utf8_lossy(&head).into_owned();
            }
            let read = self.stream.read_buf(&mut self.buffer).await.expect("read");
            assert!(read > 0, "the server closed before answering the handshake");
        }
    }

    /// Sends bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Sends one masked frame whose first byte is `first` (FIN, RSV and
    /// opcode) with `payload` (up to 65,535 bytes).
    pub async fn send(&mut self, first: u8, payload: &[u8]) {
        self.send_raw(&masked(first, payload)).await;
    }

    /// The next frame; `None` when the server closed the connection. Fails
    /// the test if nothing comes within the test timeout.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        within("a WebSocket frame", async {
            loop {
                if let Some(frame) = self.take_frame() {
                    return Some(frame);
                }
                match self.stream.read_buf(&mut self.buffer).await {
                    Ok(read) if read > 0 => {}
                    _ => return None,
                }
            }
        })
        .await
    }

    /// The next text frame parsed as JSON, skipping pings and heartbeat
    /// objects.
    pub async fn next_item(&mut self) -> serde_json::Value {
        loop {
            match self.next_frame().await {
                Some(Frame::Text(text)) => {
                    let value: serde_json::Value = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("not one JSON object: {text:?} ({e})"));
                    if value.get("heartbeat").is_none() {
                        return value;
                    }
                }
                Some(Frame::Ping(_)) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads frames until the server closes the connection; returns them.
    pub async fn rest(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next_frame().await {
            frames.push(frame);
        }
        frames
    }

    /// A server frame from the buffer, if a whole one is there.
    fn take_frame(&mut self) -> Option<Frame> {
        let buffer = &self.buffer[..];
        if buffer.len() < 2 {
            return None;
        }
        assert_eq!(buffer[1] & 0x80, 0, "a server frame must not be masked");
        assert_eq!(buffer[0] & 0x70, 0, "reserved bits set");
        assert_ne!(buffer[0] & 0x80, 0, "the server fragments nothing");
        let (length, header) = match buffer[1] & 0x7f {
            126 if buffer.len() >= 4 => {
                (usize::from(u16::from_be_bytes([buffer[2], buffer[3]])), 4)
            }
            127 if buffer.len() >= 10 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&buffer[2..10]);
                (u64::from_be_bytes(bytes) as usize, 10)
            }
            126 | 127 => return None,
            short => (usize::from(short), 2),
        };
        if buffer.len() < header + length {
            return None;
        }
        let opcode = buffer[0] & 0x0f;
        self.buffer.advance(header);
        let payload = self.buffer.split_to(length).to_vec();
        Some(match opcode {
            0x1 => Frame::Text(String::from_utf8(payload).expect("a text frame is UTF-8")),
            0x8 => Frame::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            0x9 => Frame::Ping(payload),
            0xA => Frame::Pong(payload),
            other => Frame::Other(other, payload),
        })
    }
}

/// A masked client frame.
pub fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x13, 0xc4, 0x7e];
    let mut out = vec![first];
    if payload.len() <= 125 {
        out.push(0x80 | payload.len() as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}
