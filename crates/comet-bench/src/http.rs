//! A bare HTTP/1.1 client connection: one request at a time, keep-alive,
//! `Content-Length` or chunked answers. Just enough to load a server with
//! little client-side cost; not a general-purpose client.

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The server sent something that is not an HTTP/1.1 answer.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The head as received, from the status line to the blank line; header
    /// fields are looked up in it only when asked for, so that an answer
    /// costs the load generator no allocation per field.
    head: Bytes,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// A header's value (the first field of that name, any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let head = std::str::from_utf8(&self.head).ok()?;
        head.split("\r\n").skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// One keep-alive connection.
pub struct Connection {
    stream: TcpStream,
    host: String,
    buffer: BytesMut,
}

impl Connection {
    /// Connects to `address`.
    pub async fn open(address: SocketAddr) -> Result<Self, HttpError> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            host: address.to_string(),
            buffer: BytesMut::with_capacity(4096),
        })
    }

    /// Sends a request and reads its answer.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Answer, HttpError> {
        self.request_with(method, path, &[], body).await
    }

    /// Sends a request with extra headers and reads its answer.
    pub async fn request_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, HttpError> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", self.host);
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        if body.len() <= 16 * 1024 {
            let mut request = Vec::with_capacity(head.len() + body.len());
            request.extend_from_slice(head.as_bytes());
            request.extend_from_slice(body);
            self.stream.write_all(&request).await?;
        } else {
            self.stream.write_all(head.as_bytes()).await?;
            self.stream.write_all(body).await?;
        }
        self.read_answer().await
    }

    async fn fill(&mut self) -> Result<(), HttpError> {
        if self.stream.read_buf(&mut self.buffer).await? == 0 {
            return Err(HttpError::Closed);
        }
        Ok(())
    }

    async fn read_answer(&mut self) -> Result<Answer, HttpError> {
        let (status, head_len, length, chunked) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buffer) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let mut length = None;
                    let mut chunked = false;
                    for header in response.headers.iter() {
                        if header.name.eq_ignore_ascii_case("content-length") {
                            length = std::str::from_utf8(header.value)
                                .ok()
                                .and_then(|v| v.trim().parse::<usize>().ok());
                        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = header.value.eq_ignore_ascii_case(b"chunked");
                        }
                    }
                    break (response.code.unwrap_or(0), head_len, length, chunked);
                }
                Ok(httparse::Status::Partial) => self.fill().await?,
                Err(error) => return Err(HttpError::Malformed(error.to_string())),
            }
        };
        let head = self.buffer.split_to(head_len).freeze();
        let body = if chunked {
            self.read_chunked().await?
        } else {
            let length = length.unwrap_or(0);
            while self.buffer.len() < length {
                self.fill().await?;
            }
            self.buffer.split_to(length).freeze()
        };
        Ok(Answer { status, head, body })
    }

    async fn read_chunked(&mut self) -> Result<Bytes, HttpError> {
        let mut body = BytesMut::new();
        loop {
            let line_end = loop {
                if let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                    break end;
                }
                self.fill().await?;
            };
            let size = chunk_size(&self.buffer[..line_end])?;
            while self.buffer.len() < line_end + 2 + size + 2 {
                self.fill().await?;
            }
            self.buffer.advance(line_end + 2);
            body.extend_from_slice(&self.buffer.split_to(size));
            self.buffer.advance(2);
            if size == 0 {
                return Ok(body.freeze());
            }
        }
    }
}

/// The size a chunk's size line gives (without its line end; a `\r`
/// left at its end is ignored).
pub(crate) fn chunk_size(line: &[u8]) -> Result<usize, HttpError> {
    let text = std::str::from_utf8(line)
        .unwrap_or("")
        .trim_end_matches('\r');
    usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16)
        .map_err(|_| HttpError::Malformed(format!("chunk size {text:?}")))
}
