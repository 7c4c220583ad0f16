//! A lean SSE reader for load generation: opens `GET path` with
//! `Accept: text/event-stream`, de-chunks the body if needed, and hands out
//! the `data` of each event. Comments, ids and types are skipped; that is
//! all a scenario needs, at a cost of a few hundred nanoseconds per event.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::{HttpError, chunk_size};

/// An open event stream.
pub struct SseReader {
    stream: TcpStream,
    /// Bytes read and not yet de-chunked.
    raw: BytesMut,
    /// De-chunked body bytes not yet parsed.
    body: BytesMut,
    chunked: bool,
    chunk: Chunk,
    /// The data of the event being read.
    data: Vec<u8>,
    ended: bool,
    /// Body bytes read along with the head wait for the first `read`.
    head_leftover: bool,
}

impl SseReader {
    /// Opens the stream; returns once the answer's head arrived (the server
    /// has the subscription).
    pub async fn open(address: SocketAddr, path: &str) -> Result<Self, HttpError> {
        let mut stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: {address}\r\naccept: text/event-stream\r\ncache-control: no-cache\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = BytesMut::with_capacity(4096);
        let (head_len, chunked) = loop {
            if stream.read_buf(&mut raw).await? == 0 {
                return Err(HttpError::Closed);
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&raw) {
                Ok(httparse::Status::Complete(head_len)) => {
                    if response.code != Some(200) {
                        return Err(HttpError::Malformed(format!(
                            "the stream answered {:?}",
                            response.code
                        )));
                    }
                    let chunked = response.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("transfer-encoding")
                            && h.value.eq_ignore_ascii_case(b"chunked")
                    });
                    break (head_len, chunked);
                }
                Ok(httparse::Status::Partial) => {}
                Err(error) => return Err(HttpError::Malformed(error.to_string())),
            }
        };
        raw.advance(head_len);
        Ok(Self {
            stream,
            raw,
            body: BytesMut::with_capacity(4096),
            chunked,
            chunk: Chunk::Size,
            data: Vec::new(),
            ended: false,
            head_leftover: true,
        })
    }

    /// Reads, then calls `on_data` with the data of each complete event.
    /// Returns false once the stream ended.
    pub async fn read(&mut self, mut on_data: impl FnMut(&[u8])) -> Result<bool, HttpError> {
        if self.ended {
            return Ok(false);
        }
        // The first call parses what came with the head; every other call
        // reads from the socket first (never spinning on a partial chunk).
        if self.head_leftover {
            self.head_leftover = false;
        } else if self.stream.read_buf(&mut self.raw).await? == 0 {
            self.ended = true;
            return Ok(false);
        }
        self.dechunk()?;
        // Lines are read in place and the parsed ones let go of at once:
        // no buffer is split per line.
        let mut parsed = 0;
        while let Some(end) = memchr::memchr(b'\n', &self.body[parsed..]) {
            let line = &self.body[parsed..parsed + end];
            parsed += end + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    on_data(&self.data);
                    self.data.clear();
                }
            } else if let Some(value) = line.strip_prefix(b"data:") {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
            }
        }
        self.body.advance(parsed);
        Ok(true)
    }

    fn dechunk(&mut self) -> Result<(), HttpError> {
        if !self.chunked {
            let all = self.raw.split();
            self.body.unsplit(all);
            return Ok(());
        }
        loop {
            match self.chunk {
                Chunk::Size => {
                    let Some(end) = memchr::memchr(b'\n', &self.raw) else {
                        return Ok(());
                    };
                    let size = chunk_size(&self.raw[..end])?;
                    self.raw.advance(end + 1);
                    if size == 0 {
                        self.ended = true;
                        return Ok(());
                    }
                    self.chunk = Chunk::Data(size);
                }
                Chunk::Data(left) => {
                    let take = left.min(self.raw.len());
                    if take == 0 {
                        return Ok(());
                    }
                    self.body.extend_from_slice(&self.raw[..take]);
                    self.raw.advance(take);
                    self.chunk = if take == left {
                        Chunk::LineEnd
                    } else {
                        Chunk::Data(left - take)
                    };
                }
                Chunk::LineEnd => {
                    if self.raw.len() < 2 {
                        return Ok(());
                    }
                    self.raw.advance(2);
                    self.chunk = Chunk::Size;
                }
            }
        }
    }
}

/// Where the de-chunker is in the chunked body.
#[derive(Clone, Copy)]
enum Chunk {
    Size,
    Data(usize),
    LineEnd,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serves `pieces` one write at a time (a pause between them, so each
    /// is read apart), then closes.
    async fn server(pieces: Vec<&'static [u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await.unwrap();
            for piece in pieces {
                socket.write_all(piece).await.unwrap();
                socket.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        address
    }

    async fn events_of(pieces: Vec<&'static [u8]>) -> Vec<String> {
        let mut reader = SseReader::open(server(pieces).await, "/sse/a")
            .await
            .unwrap();
        let mut events = Vec::new();
        while reader
            .read(|data| events.push(String::from_utf8(data.to_vec()).unwrap()))
            .await
            .unwrap()
        {}
        events
    }

    #[tokio::test]
    async fn events_split_anywhere_across_chunks_and_reads_arrive_whole() {
        let events = events_of(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1",
            b"7\r\n: hi\nid: 1\ndata",
            b": 1 10\n\n\r\n",
            b"17\r\ndata: 2 20\n",
            b"data: more\n\n\r\n",
            b"b\r\ndata: 3 30\r",
            b"\r\n3\r\n\n\r\n\r\n",
            b"0\r\n\r\n",
        ])
        .await;
        assert_eq!(events, ["1 10", "2 20\nmore", "3 30"]);
    }

    #[tokio::test]
    async fn a_body_without_chunks_is_read_as_it_comes() {
        let events = events_of(vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: 1",
            b" 10\n\ndata: 2 20\n",
            b"\n",
        ])
        .await;
        assert_eq!(events, ["1 10", "2 20"]);
    }
}
