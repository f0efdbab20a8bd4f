//! Just enough HTTP/1.1 and SSE to hold thousands of streams cheaply: a
//! response head parser, a chunked transfer decoder and an SSE event parser.
//!
//! All three work on a caller-owned `Vec<u8>`, consume what is complete and
//! leave a partial tail in place, so a stream needs no buffer beyond the
//! bytes it has not parsed yet.

use std::fmt;

/// Longest response head accepted; anything larger is not Herald.
const MAX_HEAD: usize = 16 * 1024;
/// Longest SSE line or chunk-size line kept while waiting for its end.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

fn wire_error(message: impl Into<String>) -> WireError {
    WireError(message.into())
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub chunked: bool,
    pub content_length: Option<usize>,
    /// Bytes of `buf` the head took, blank line included.
    pub len: usize,
}

/// Parses a response head from the start of `buf`; `Ok(None)` until it is
/// complete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, WireError> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(wire_error("response head too large"));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| wire_error("head is not text"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(wire_error(format!("not an HTTP/1 response: {status_line}")));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| wire_error(format!("bad status line: {status_line}")))?;
    let mut chunked = false;
    let mut content_length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse().map_err(|_| wire_error(format!("bad content-length: {value}")))?);
        }
    }
    Ok(Some(Head { status, chunked, content_length, len: end + 4 }))
}

/// Decodes `Transfer-Encoding: chunked`, moving payload bytes from the raw
/// buffer to the body buffer.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(usize),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The last (zero-size) chunk was read: the body is over.
    Done,
}

impl Chunked {
    /// Consumes every complete piece of `raw`, appending payload to `body`.
    pub fn decode(&mut self, raw: &mut Vec<u8>, body: &mut Vec<u8>) -> Result<(), WireError> {
        let mut pos = 0;
        loop {
            match self.state {
                ChunkState::Done => {
                    pos = raw.len(); // trailers, ignored
                    break;
                }
                ChunkState::Size => {
                    let Some(nl) = find(&raw[pos..], b"\r\n") else {
                        if raw.len() - pos > MAX_LINE {
                            return Err(wire_error("chunk size line too long"));
                        }
                        break;
                    };
                    let line = &raw[pos..pos + nl];
                    let hex = line.split(|b| *b == b';').next().unwrap_or_default();
                    let hex = std::str::from_utf8(hex)
                        .ok()
                        .map(str::trim)
                        .ok_or_else(|| wire_error("chunk size is not text"))?;
                    let size =
                        usize::from_str_radix(hex, 16).map_err(|_| wire_error(format!("bad chunk size `{hex}`")))?;
                    pos += nl + 2;
                    self.state = if size == 0 { ChunkState::Done } else { ChunkState::Data(size) };
                }
                ChunkState::Data(left) => {
                    let take = left.min(raw.len() - pos);
                    if take == 0 {
                        break;
                    }
                    body.extend_from_slice(&raw[pos..pos + take]);
                    pos += take;
                    self.state = if take == left { ChunkState::DataEnd } else { ChunkState::Data(left - take) };
                }
                ChunkState::DataEnd => {
                    if raw.len() - pos < 2 {
                        break;
                    }
                    if &raw[pos..pos + 2] != b"\r\n" {
                        return Err(wire_error("chunk data not followed by CRLF"));
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
            }
        }
        raw.drain(..pos);
        Ok(())
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// Parses `text/event-stream` into events (name and data). Only the fields
/// Herald sends matter here: `event`, `data`, and `id` (kept as the last
/// event id, for `Last-Event-ID` on reconnect); `retry` and comments are
/// skipped.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The last `id` seen, as EventSource keeps it for reconnecting.
    pub last_id: Vec<u8>,
    event: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
}

impl SseParser {
    /// Consumes every complete line of `body`, calling `on_event(name, data)`
    /// for each complete event (name `message` when none was given).
    pub fn feed(&mut self, body: &mut Vec<u8>, mut on_event: impl FnMut(&[u8], &[u8])) -> Result<(), WireError> {
        let mut pos = 0;
        while let Some(nl) = body[pos..].iter().position(|b| *b == b'\n') {
            let mut line = &body[pos..pos + nl];
            pos += nl + 1;
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.is_empty() {
                if self.has_data {
                    let name: &[u8] = if self.event.is_empty() { b"message" } else { &self.event };
                    on_event(name, &self.data);
                }
                self.event.clear();
                self.data.clear();
                self.has_data = false;
                continue;
            }
            if line[0] == b':' {
                continue; // comment (keep-alive)
            }
            let (field, value) = match line.iter().position(|b| *b == b':') {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &b""[..]),
            };
            match field {
                b"event" => {
                    self.event.clear();
                    self.event.extend_from_slice(value);
                }
                b"id" if !value.contains(&0) => {
                    self.last_id.clear();
                    self.last_id.extend_from_slice(value);
                }
                b"data" => {
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        body.drain(..pos);
        if body.len() > MAX_LINE {
            return Err(wire_error("SSE line too long"));
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_parsed_once_complete() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nrest";
        assert_eq!(parse_head(&raw[..20]).unwrap(), None);
        let head = parse_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert!(head.chunked);
        assert_eq!(&raw[head.len..], b"rest");
        let head = parse_head(b"HTTP/1.1 202 Accepted\r\ncontent-length: 12\r\n\r\n").unwrap().unwrap();
        assert_eq!((head.status, head.content_length), (202, Some(12)));
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn chunks_decode_across_any_split() {
        let raw = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for split in 0..raw.len() {
            let (mut decoder, mut buf, mut body) = (Chunked::default(), Vec::new(), Vec::new());
            buf.extend_from_slice(&raw[..split]);
            decoder.decode(&mut buf, &mut body).unwrap();
            buf.extend_from_slice(&raw[split..]);
            decoder.decode(&mut buf, &mut body).unwrap();
            assert_eq!(body, b"hello, world", "split at {split}");
            assert!(decoder.is_done());
        }
    }

    #[test]
    fn sse_events_are_dispatched_on_blank_lines() {
        let text = b"retry: 3000\n\nevent: unread\ndata: {\"count\":0}\n\n: keep-alive\n\nid: 1-0\r\nevent: notification\r\ndata: {\"a\":1}\r\n\r\ndata: x\ndata: y\n\nevent: bye\ndata: {}";
        let mut seen = Vec::new();
        let mut parser = SseParser::default();
        let mut body = text.to_vec();
        parser
            .feed(&mut body, |name, data| {
                seen.push((String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(data).into_owned()))
            })
            .unwrap();
        assert_eq!(
            seen,
            [
                ("unread".into(), "{\"count\":0}".into()),
                ("notification".into(), "{\"a\":1}".into()),
                ("message".into(), "x\ny".into()),
            ]
        );
        assert_eq!(body, b"data: {}", "the unfinished line stays buffered");
    }
}
