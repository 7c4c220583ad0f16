//! The WebSocket wire format (RFC 6455) as Comet speaks it.
//!
//! The server side of the handshake ([`accept_key`], [`is_valid_key`]); the
//! frames the server sends: unmasked, never fragmented text frames, each
//! holding exactly one JSON object of the HTTP streaming transport (a
//! message's frame is computed once with its NDJSON line, see
//! [`Message::ws_frame`](crate::Message::ws_frame)), pongs and closes; and
//! [`FrameReader`], which reads what a client sends.
//!
//! The transport is receive-only, so a client only ever sends control
//! frames (ping, pong, close: at most 125 bytes of payload each). The
//! reader keeps at most one such frame (131 bytes) and refuses anything
//! else at its first two bytes, before any length is believed: a data
//! frame is closed with 1003, whatever length it announces, and a
//! malformed frame with 1002. So nothing a client sends makes the server
//! allocate.

use bytes::Bytes;

/// The GUID RFC 6455 appends to the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The longest header of a server frame (no mask): 2 bytes and a 64-bit
/// length.
pub const MAX_HEADER: usize = 10;

/// The longest control frame payload.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Close codes Comet sends (RFC 6455 section 7.4, and the API's own).
pub mod close {
    /// The peer closed normally.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The client sent data: the transport is receive-only.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A close reason that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The server failed (the store): resume with `since`.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The credential expired: reconnect with a fresh token and `since`.
    pub const TOKEN_EXPIRED: u16 = 4401;
    /// The rules no longer allow the subscription (a configuration reload
    /// revoked its credential or its channels' access).
    pub const AUTHORIZATION_REVOKED: u16 = 4403;
}

/// Opcodes.
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The heartbeat object `{"heartbeat":true}` as a text frame.
pub const HEARTBEAT_FRAME: &[u8] = b"\x81\x12{\"heartbeat\":true}";

/// The close frame for an expired credential (4401, `token_expired`).
pub const EXPIRED_FRAME: &[u8] = b"\x88\x0f\x11\x31token_expired";

/// The close frame for a revoked authorization (4403,
/// `authorization_revoked`).
pub const REVOKED_FRAME: &[u8] = b"\x88\x17\x11\x33authorization_revoked";

/// The close frame for a server shutting down (1001, `shutting_down`).
pub const GOING_AWAY_FRAME: &[u8] = b"\x88\x0f\x03\xe9shutting_down";

/// The close frame for a store failure (1011, `store_unavailable`).
pub const INTERNAL_ERROR_FRAME: &[u8] = b"\x88\x13\x03\xf3store_unavailable";

/// An empty ping, to find out whether the peer is still there.
pub const PING_FRAME: &[u8] = b"\x89\x00";

/// The heartbeat object (page code sees it) followed by a ping (the peer's
/// WebSocket answers it: a dead peer is found).
pub const HEARTBEAT_AND_PING: &[u8] = b"\x81\x12{\"heartbeat\":true}\x89\x00";

/// Whether `key` (a `Sec-WebSocket-Key`) is what RFC 6455 asks for: the
/// base64 encoding of 16 bytes.
pub fn is_valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.len() == 24
        && bytes.ends_with(b"==")
        && bytes[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        // The last character before the padding carries only 2 bits.
        && BASE64.iter().position(|c| *c == bytes[21]).is_some_and(|value| value & 0x0f == 0)
}

/// `Sec-WebSocket-Accept` for a client's `key`.
pub fn accept_key(key: &str) -> String {
    let mut hasher = sha1_smol::Sha1::new();
    hasher.update(key.as_bytes());
    hasher.update(GUID.as_bytes());
    base64(&hasher.digest().bytes())
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * index)) as usize & 0x3f] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The header of an unmasked, final frame of `opcode` with `length` bytes
/// of payload: the buffer and how many of its bytes are the header.
fn header(opcode: u8, length: usize) -> ([u8; MAX_HEADER], usize) {
    let mut header = [0u8; MAX_HEADER];
    header[0] = 0x80 | opcode;
    let used = if length <= 125 {
        header[1] = length as u8;
        2
    } else if length <= usize::from(u16::MAX) {
        header[1] = 126;
        header[2..4].copy_from_slice(&(length as u16).to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(length as u64).to_be_bytes());
        10
    };
    (header, used)
}

/// How long the header of a text frame of `length` bytes is.
pub fn text_header_len(length: usize) -> usize {
    header(TEXT, length).1
}

/// Writes the header of a text frame of `length` bytes so that it ends at
/// `room`'s end; returns where it starts. `room` must be [`MAX_HEADER`]
/// bytes long (a message's frame is encoded with room for its header).
pub fn put_text_header_before(room: &mut [u8], length: usize) -> usize {
    let (bytes, used) = header(TEXT, length);
    let start = room.len() - used;
    room[start..].copy_from_slice(&bytes[..used]);
    start
}

/// A text frame holding `payload` (one JSON object).
pub fn text_frame(payload: &[u8]) -> Bytes {
    frame(TEXT, payload)
}

/// A pong answering a ping with `payload` (at most 125 bytes).
pub fn pong_frame(payload: &[u8]) -> Bytes {
    frame(PONG, payload)
}

/// A close frame with `code` (no reason).
pub fn close_frame(code: u16) -> Bytes {
    frame(CLOSE, &code.to_be_bytes())
}

fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let (header, used) = header(opcode, payload.len());
    let mut out = Vec::with_capacity(used + payload.len());
    out.extend_from_slice(&header[..used]);
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    /// A ping: answer with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong (to a ping of the server, or unsolicited).
    Pong,
    /// The client closes, with its code if it gave one: answer with a
    /// close and end the connection.
    Close(Option<u16>),
}

/// What the client did wrong: close the connection with `code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The close code.
    pub code: u16,
    /// What was wrong, for the log.
    pub reason: &'static str,
}

impl Violation {
    fn protocol(reason: &'static str) -> Self {
        Self {
            code: close::PROTOCOL_ERROR,
            reason,
        }
    }
}

/// Reads the client's side of a WebSocket, keeping at most one control
/// frame (see the module docs).
#[derive(Debug)]
pub struct FrameReader {
    frame: [u8; 6 + MAX_CONTROL_PAYLOAD],
    filled: u8,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self {
            frame: [0; 6 + MAX_CONTROL_PAYLOAD],
            filled: 0,
        }
    }
}

impl FrameReader {
    /// Reads `input` (the next bytes from the client), calling `on_frame`
    /// for each complete frame. Stops at the first violation, and reads
    /// nothing after a close (the caller ends the connection).
    pub fn read(
        &mut self,
        mut input: &[u8],
        mut on_frame: impl FnMut(ClientFrame<'_>),
    ) -> Result<(), Violation> {
        while !input.is_empty() {
            let needed = if self.filled < 2 {
                2
            } else {
                6 + usize::from(self.frame[1] & 0x7f)
            };
            let take = (needed - usize::from(self.filled)).min(input.len());
            let start = usize::from(self.filled);
            self.frame[start..start + take].copy_from_slice(&input[..take]);
            self.filled += take as u8;
            input = &input[take..];
            if self.filled == 2 {
                check_head(self.frame[0], self.frame[1])?;
            }
            let needed = 6 + usize::from(self.frame[1] & 0x7f);
            if self.filled >= 2 && usize::from(self.filled) == needed {
                self.filled = 0;
                let closed = self.frame[0] & 0x0f == CLOSE;
                self.complete(needed, &mut on_frame)?;
                if closed {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Unmasks the frame of `length` bytes held and hands it over.
    fn complete(
        &mut self,
        length: usize,
        on_frame: &mut impl FnMut(ClientFrame<'_>),
    ) -> Result<(), Violation> {
        let (head, payload) = self.frame[..length].split_at_mut(6);
        let mask = [head[2], head[3], head[4], head[5]];
        for (index, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[index % 4];
        }
        match head[0] & 0x0f {
            PING => on_frame(ClientFrame::Ping(payload)),
            PONG => on_frame(ClientFrame::Pong),
            _ => on_frame(ClientFrame::Close(close_code(payload)?)),
        }
        Ok(())
    }
}

/// Judges a frame by its first two bytes.
fn check_head(first: u8, second: u8) -> Result<(), Violation> {
    if first & 0x70 != 0 {
        return Err(Violation::protocol("reserved bits set"));
    }
    match first & 0x0f {
        TEXT | BINARY | CONTINUATION => {
            return Err(Violation {
                code: close::UNSUPPORTED_DATA,
                reason: "the client sent data: this WebSocket is receive-only",
            });
        }
        CLOSE | PING | PONG => {}
        _ => return Err(Violation::protocol("an unknown opcode")),
    }
    if first & 0x80 == 0 {
        return Err(Violation::protocol("a fragmented control frame"));
    }
    if second & 0x80 == 0 {
        return Err(Violation::protocol("an unmasked client frame"));
    }
    if usize::from(second & 0x7f) > MAX_CONTROL_PAYLOAD {
        return Err(Violation::protocol("a control frame over 125 bytes"));
    }
    Ok(())
}

/// The code of a close frame's `payload`, checked as RFC 6455 asks.
fn close_code(payload: &[u8]) -> Result<Option<u16>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::protocol("a close payload of one byte")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            let known = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !known {
                return Err(Violation::protocol("a close code that may not be sent"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(Violation {
                    code: close::INVALID_PAYLOAD,
                    reason: "a close reason that is not UTF-8",
                });
            }
            Ok(Some(code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first, 0x80 | payload.len() as u8];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn frames_of(input: &[u8]) -> (Vec<String>, Result<(), Violation>) {
        let mut reader = FrameReader::default();
        let mut seen = Vec::new();
        let result = reader.read(input, |frame| seen.push(format!("{frame:?}")));
        (seen, result)
    }

    #[test]
    fn the_accept_key_is_the_one_rfc_6455_computes() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(is_valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        for bad in [
            "",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25j*Q==",
            "dGhlIHNhbXBsZSBub25jZQ==x",
        ] {
            assert!(!is_valid_key(bad), "{bad}");
        }
    }

    #[test]
    fn base64_pads_as_the_standard_says() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }

    #[test]
    fn server_frames_are_byte_exact() {
        assert_eq!(&text_frame(b"{}")[..], b"\x81\x02{}");
        let medium = text_frame(&[b'x'; 126]);
        assert_eq!(&medium[..4], b"\x81\x7e\x00\x7e");
        let large = text_frame(&vec![b'x'; 70_000]);
        assert_eq!(&large[..10], b"\x81\x7f\x00\x00\x00\x00\x00\x01\x11\x70");
        assert_eq!(large.len(), 70_010);
        assert_eq!(&pong_frame(b"hi")[..], b"\x8a\x02hi");
        assert_eq!(&close_frame(1000)[..], b"\x88\x02\x03\xe8");
        assert_eq!(HEARTBEAT_FRAME, &text_frame(b"{\"heartbeat\":true}")[..]);
        assert_eq!(HEARTBEAT_AND_PING, [HEARTBEAT_FRAME, PING_FRAME].concat());
        assert_eq!(PING_FRAME, &super::frame(PING, b"")[..]);
        let closes = [
            (EXPIRED_FRAME, close::TOKEN_EXPIRED, "token_expired"),
            (
                REVOKED_FRAME,
                close::AUTHORIZATION_REVOKED,
                "authorization_revoked",
            ),
            (GOING_AWAY_FRAME, close::GOING_AWAY, "shutting_down"),
            (
                INTERNAL_ERROR_FRAME,
                close::INTERNAL_ERROR,
                "store_unavailable",
            ),
        ];
        for (frame, code, reason) in closes {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice(reason.as_bytes());
            assert_eq!(frame, &super::frame(CLOSE, &payload)[..], "{reason}");
        }
        for length in [0, 125, 126, 65_535, 65_536] {
            let mut room = [0u8; MAX_HEADER];
            let start = put_text_header_before(&mut room, length);
            assert_eq!(MAX_HEADER - start, text_header_len(length));
            assert_eq!(
                &room[start..],
                &header(TEXT, length).0[..text_header_len(length)]
            );
        }
    }

    #[test]
    fn control_frames_are_read_in_pieces_of_any_size() {
        let mut input = client_frame(0x89, b"ping!");
        input.extend(client_frame(0x8a, b""));
        input.extend(client_frame(0x88, b"\x03\xe8bye"));
        input.extend(client_frame(0x89, b"after the close"));
        for piece in 1..=input.len() {
            let mut reader = FrameReader::default();
            let mut seen = Vec::new();
            for chunk in input.chunks(piece) {
                reader
                    .read(chunk, |frame| seen.push(format!("{frame:?}")))
                    .unwrap();
                if seen.last().is_some_and(|last| last.starts_with("Close")) {
                    break;
                }
            }
            assert_eq!(
                seen,
                [
                    "Ping([112, 105, 110, 103, 33])",
                    "Pong",
                    "Close(Some(1000))"
                ],
                "pieces of {piece}"
            );
        }
        let (seen, result) = frames_of(&client_frame(0x89, &[7; 125]));
        assert_eq!((seen.len(), result), (1, Ok(())));
        let (seen, result) = frames_of(&client_frame(0x88, b""));
        assert_eq!((seen, result), (vec!["Close(None)".to_string()], Ok(())));
    }

    #[test]
    fn anything_else_is_refused_at_its_first_two_bytes() {
        let code = |input: &[u8]| frames_of(input).1.unwrap_err().code;
        // Data, whatever length it claims: 1 GB, unmasked, in pieces.
        assert_eq!(code(&[0x81, 0xff]), 1003);
        assert_eq!(code(&[0x82, 0x7f]), 1003);
        assert_eq!(code(&client_frame(0x01, b"part")), 1003);
        assert_eq!(code(&client_frame(0x00, b"rest")), 1003);
        assert_eq!(code(&client_frame(0xc9, b"")), 1002, "reserved bit");
        assert_eq!(code(&client_frame(0x83, b"")), 1002, "opcode 3");
        assert_eq!(code(&client_frame(0x8b, b"")), 1002, "opcode 0xB");
        assert_eq!(code(&client_frame(0x09, b"")), 1002, "fragmented ping");
        assert_eq!(code(&[0x89, 0x00]), 1002, "unmasked");
        assert_eq!(code(&[0x89, 0xfe, 0, 200]), 1002, "a 200-byte ping");
        assert_eq!(code(&client_frame(0x88, b"\x03")), 1002);
        for bad in [0u16, 999, 1004, 1005, 1006, 1012, 1015, 2999, 5000] {
            assert_eq!(code(&client_frame(0x88, &bad.to_be_bytes())), 1002, "{bad}");
        }
        assert_eq!(code(&client_frame(0x88, b"\x03\xe8\xff\xfe")), 1007);
        // A violation after good frames: the good ones were handed over.
        let mut input = client_frame(0x89, b"a");
        input.extend([0x81, 0x85]);
        let (seen, result) = frames_of(&input);
        assert_eq!(seen.len(), 1);
        assert_eq!(result.unwrap_err().code, 1003);
    }
}
