//! `streamsink publish`: JSON lines in, one event each, sent as envelopes
//! (`XADD S [MAXLEN ~ N] * <event field> <json>`) in pipelined batches.
//!
//! Invariants: the input is read as a stream, at most [`BATCH_LINES`] lines and about
//! [`BATCH_BYTES`] bytes held at once (plus one line of at most [`MAX_LINE`]); a line is sent
//! only if it is one JSON object, and every line that is not sent, or that Redis refuses, is
//! reported with its line number; events go out in input order.

use crate::broker::Redis;
use std::fmt;
use std::io::{BufRead, ErrorKind, Read};

use serde_json::{Value, json};

use super::OperateError;
use crate::broker::publish::{self, Target};
use crate::broker::shard;

/// Lines sent per pipeline (one round trip).
pub const BATCH_LINES: usize = 1000;
/// Bytes of events after which a pipeline is sent before it has [`BATCH_LINES`] lines, so that
/// large events do not pile up in memory.
pub const BATCH_BYTES: usize = 8 << 20;
/// The longest line read (64 MiB); a longer one is reported and skipped, not held.
pub const MAX_LINE: usize = 64 << 20;
/// Failures listed one by one; beyond these they are only counted, so a file where every line
/// fails does not fill memory with its errors.
pub const MAX_LISTED: usize = 1000;

/// Where the events go.
#[derive(Debug, Clone)]
pub struct Options {
    /// The stream to add to.
    pub stream: String,
    /// The worker's envelope field (`STREAMSINK_EVENT_FIELD`).
    pub event_field: String,
    /// `MAXLEN ~ N` on every XADD.
    pub maxlen: Option<u64>,
    /// Spread the events over this many shards of `stream` (`broker::shard`): each to
    /// `<stream>:{crc32(id) mod N}`.
    pub shards: Option<u32>,
}

/// A line that was not published, and why (not JSON, or Redis's error for its XADD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// 1-based, counting every line of the input (empty ones too).
    pub line: u64,
    /// Why it was not published: the parse error, or Redis's error reply as Redis wrote it.
    pub error: String,
}

/// Why publishing stopped before the end of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The input could not be read further; everything before `line` was handled.
    Read { line: u64, error: String },
    /// A pipeline failed as a whole (the connection): lines `first..=last` may or may not have
    /// been published; nothing after them was sent.
    Redis { first: u64, last: u64, error: String },
}

/// What `publish` did.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The stream added to.
    pub stream: String,
    /// Its shards, when the events were spread over them.
    pub shards: Option<u32>,
    /// Lines Redis added to the stream.
    pub published: u64,
    /// Lines not published: not a JSON object, too long, or refused by Redis.
    pub failed: u64,
    /// The first [`MAX_LISTED`] failures, by line.
    pub failures: Vec<Failure>,
    /// Set when the input was not read to its end.
    pub stopped: Option<Stopped>,
}

impl Published {
    /// Every line was published (empty lines aside) and the input read to its end.
    pub fn complete(&self) -> bool {
        self.failed == 0 && self.stopped.is_none()
    }

    fn fail(&mut self, line: u64, error: String) {
        self.failed += 1;
        if self.failures.len() < MAX_LISTED {
            self.failures.push(Failure { line, error });
        }
    }
}

impl super::Report for Published {
    fn to_json(&self) -> Value {
        let stopped = match &self.stopped {
            None => Value::Null,
            Some(Stopped::Read { line, error }) => json!({ "reading": true, "line": line, "error": error }),
            Some(Stopped::Redis { first, last, error }) => {
                json!({ "reading": false, "first_line": first, "last_line": last, "error": error })
            }
        };
        json!({
            "stream": self.stream,
            "shards": self.shards,
            "published": self.published,
            "failed": self.failed,
            "failures": self.failures.iter().map(|f| json!({ "line": f.line, "error": f.error })).collect::<Vec<_>>(),
            "unlisted_failures": self.failed - self.failures.len() as u64,
            "stopped": stopped,
        })
    }
}

/// `published=N failed=M`, then one line per failure, then why it stopped early, if it did.
impl fmt::Display for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "published={} failed={}", self.published, self.failed)?;
        for failure in &self.failures {
            writeln!(f, "line {}: {}", failure.line, failure.error)?;
        }
        let unlisted = self.failed - self.failures.len() as u64;
        if unlisted > 0 {
            writeln!(f, "... and {unlisted} more failed lines, not listed")?;
        }
        match &self.stopped {
            None => Ok(()),
            Some(Stopped::Read { line, error }) => {
                writeln!(f, "stopped at line {line}: {error}; the lines before it were handled as above")
            }
            Some(Stopped::Redis { first, last, error }) => writeln!(
                f,
                "stopped at line {first}: {error}; lines {first}-{last} may or may not have been published, \
                 nothing after line {last} was sent"
            ),
        }
    }
}

/// Publishes every line of `input` (named `what` in errors) to `options.stream` over `con`.
/// Never fails as a whole: what went wrong is in the report.
pub fn publish(con: &mut Redis, input: &mut dyn BufRead, what: &str, options: &Options) -> Published {
    let target = Target { stream: &options.stream, field: &options.event_field, maxlen: options.maxlen };
    let mut report =
        Published { stream: options.stream.clone(), shards: options.shards, ..Published::default() };
    let mut batch = Batch {
        streams: match options.shards {
            Some(n) => (0..n).map(|k| shard::shard_name(&options.stream, k)).collect(),
            None => vec![options.stream.clone()],
        },
        ..Batch::default()
    };
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        line += 1;
        let read = match read_line(input, &mut buf) {
            Ok(read) => read,
            Err(e) => {
                let error = OperateError::Read { what: what.to_string(), source: e }.to_string();
                if batch.send(con, target, &mut report) {
                    report.stopped = Some(Stopped::Read { line, error });
                }
                return report;
            }
        };
        match read {
            Line::End => break,
            Line::TooLong => report.fail(line, format!("longer than {} MiB: not sent", MAX_LINE >> 20)),
            Line::Text => match check(std::mem::take(&mut buf)) {
                Ok(None) => {}
                Ok(Some(json)) => {
                    let to = options.shards.map_or(0, |n| shard::shard_of(&shard_key(&json), n) as usize);
                    batch.bytes += json.len();
                    batch.lines.push((line, to, json));
                }
                Err(why) => report.fail(line, why),
            },
        }
        if (batch.lines.len() >= BATCH_LINES || batch.bytes >= BATCH_BYTES)
            && !batch.send(con, target, &mut report)
        {
            return report;
        }
    }
    batch.send(con, target, &mut report);
    report
}

/// Lines waiting for their pipeline: line number, index of their stream, text.
#[derive(Default)]
struct Batch {
    /// The stream, or its shards in order.
    streams: Vec<String>,
    lines: Vec<(u64, usize, String)>,
    bytes: usize,
}

impl Batch {
    /// Sends the batch and records each line's outcome; false (with `report.stopped` set) when
    /// the pipeline failed as a whole.
    fn send(&mut self, con: &mut Redis, target: Target<'_>, report: &mut Published) -> bool {
        if self.lines.is_empty() {
            return true;
        }
        let streams = &self.streams;
        let events = self.lines.iter().map(|(_, to, json)| (streams[*to].as_str(), json.as_str()));
        let sent = publish::add_envelopes(con, target, events);
        let lines = std::mem::take(&mut self.lines);
        self.bytes = 0;
        match sent {
            Ok(results) => {
                for ((line, _, _), result) in lines.into_iter().zip(results) {
                    match result {
                        Ok(_) => report.published += 1,
                        Err(e) => report.fail(line, e),
                    }
                }
                true
            }
            Err(e) => {
                let first = lines.first().map_or(0, |l| l.0);
                let last = lines.last().map_or(0, |l| l.0);
                report.stopped = Some(Stopped::Redis { first, last, error: e.to_string() });
                false
            }
        }
    }
}

/// What [`read_line`] found.
enum Line {
    /// A line (its newline removed) is in the buffer.
    Text,
    /// A line longer than [`MAX_LINE`]: skipped to its end, the buffer empty.
    TooLong,
    /// The end of the input.
    End,
}

/// Reads the next line into `buf` (cleared first), holding at most [`MAX_LINE`] bytes of it.
fn read_line(input: &mut dyn BufRead, buf: &mut Vec<u8>) -> std::io::Result<Line> {
    buf.clear();
    let n = retry_interrupted(|| Read::take(&mut *input, MAX_LINE as u64 + 1).read_until(b'\n', buf))?;
    if n == 0 {
        return Ok(Line::End);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Line::Text);
    }
    if buf.len() <= MAX_LINE {
        return Ok(Line::Text); // the last line, without a newline
    }
    buf.clear();
    buf.shrink_to(64 << 10);
    loop {
        let (len, newline) = retry_interrupted(|| {
            let chunk = input.fill_buf()?;
            Ok((chunk.len(), chunk.iter().position(|&b| b == b'\n')))
        })?;
        match newline {
            _ if len == 0 => return Ok(Line::TooLong),
            Some(i) => {
                input.consume(i + 1);
                return Ok(Line::TooLong);
            }
            None => input.consume(len),
        }
    }
}

fn retry_interrupted<T>(mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The line as the JSON text to send (`None` for a blank line), or why it cannot be an event.
fn check(line: Vec<u8>) -> Result<Option<String>, String> {
    let text = String::from_utf8(line).map_err(|_| "not UTF-8 text: not sent".to_string())?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let raw: &serde_json::value::RawValue =
        serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): not sent"))?;
    if !raw.get().starts_with('{') {
        return Err("not a JSON object (one event per line): not sent".to_string());
    }
    let json = raw.get().to_string();
    Ok(Some(json))
}

/// What an event is sharded by: its id (a non-empty string), else its whole text.
fn shard_key(json: &str) -> Vec<u8> {
    serde_json::from_str::<std::collections::HashMap<String, &serde_json::value::RawValue>>(json)
        .ok()
        .and_then(|obj| serde_json::from_str::<String>(obj.get("id")?.get()).ok())
        .filter(|id| !id.is_empty())
        .map_or_else(|| json.as_bytes().to_vec(), String::into_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_objects_are_sent_and_blank_lines_are_skipped() {
        assert_eq!(check(b" {\"a\": 1} \r".to_vec()), Ok(Some("{\"a\": 1}".to_string())));
        assert_eq!(check(b"  \r".to_vec()), Ok(None));
        assert!(check(b"{oops".to_vec()).unwrap_err().starts_with("not JSON (key must be a string"));
        assert!(check(b"[1]".to_vec()).unwrap_err().starts_with("not a JSON object"));
        assert!(check(vec![b'"', 0xff, b'"']).unwrap_err().starts_with("not UTF-8"));
    }

    #[test]
    fn an_event_is_sharded_by_its_id_else_by_its_text() {
        assert_eq!(shard_key(r#"{"type":"a","id":"order-4"}"#), b"order-4");
        assert_eq!(shard_key(r#"{"id":"o\u0072der-4"}"#), b"order-4", "as the worker decodes it");
        assert_eq!(shard_key(r#"{"id":"","type":"a"}"#), br#"{"id":"","type":"a"}"#);
        assert_eq!(shard_key(r#"{"id":7}"#), br#"{"id":7}"#);
    }

    #[test]
    fn an_overlong_line_is_skipped_to_its_end_without_being_held() {
        let mut input: Vec<u8> = vec![b'x'; MAX_LINE + 10];
        input.extend_from_slice(b"\n{}\n");
        let mut reader = std::io::BufReader::new(&input[..]);
        let mut buf = Vec::new();
        assert!(matches!(read_line(&mut reader, &mut buf), Ok(Line::TooLong)));
        assert!(buf.capacity() < 1 << 20, "the skipped line is not held");
        assert!(matches!(read_line(&mut reader, &mut buf), Ok(Line::Text)));
        assert_eq!(buf, b"{}");
        assert!(matches!(read_line(&mut reader, &mut buf), Ok(Line::End)));
    }
}
