//! A replay's sources and its hand-off (decision 0023): a golden set read from the team's
//! bucket a range at a time, the stable's recent pair lines read from its own log group,
//! and each batch handed to the shadow function in an asynchronous invocation. Nothing
//! is written anywhere: the requests stay in the bucket and the log's retention.

use aws_sdk_cloudwatchlogs::Client as LogsClient;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;

use super::error::{aws_error, call_detail, service_code};
use super::logs::{log_group, LogFeeds, ReplayClients};
use crate::domain::error::{Error, Result};
use crate::domain::replay::{replay_line, Cursor, ReplayBatch, ReplayLine, Slice, Source};
use crate::domain::shadow::{Feed, FILTER_PATTERN};

/// A golden set is read a mebibyte at a time; a line is at most a request's 200 KB.
const RANGE_BYTES: u64 = 1 << 20;
/// FilterLogEvents returns at most this many events a page.
const LOG_PAGE: usize = 10_000;

/// Where a read of lines stopped, and what it kept.
#[derive(Default)]
struct Lines {
    lines: Vec<ReplayLine>,
    skipped: u64,
}

impl Lines {
    /// One line of a source: replayed, or skipped (too large, not a request) and logged.
    fn take(&mut self, text: &str, feed: &Feed, source: &Source) {
        if text.trim().is_empty() {
            return;
        }
        if text.len() > feed.max_payload_bytes {
            tracing::warn!(release = %feed.release, %source, bytes = text.len(), "replay: line larger than max_payload_bytes, skipped");
            self.skipped += 1;
            return;
        }
        match replay_line(text) {
            Ok(line) => self.lines.push(line),
            Err(why) => {
                tracing::warn!(release = %feed.release, %source, %why, "replay: not a request, skipped");
                self.skipped += 1;
            }
        }
    }
}

impl LogFeeds {
    fn replay_clients(&self) -> Result<&ReplayClients> {
        self.replay.as_ref().ok_or_else(|| Error::Config("this stepper was built without a replay's clients".into()))
    }

    pub(super) async fn check_replay_source(&self, source: &Source, feed: &Feed, began_at: u64) -> Result<String> {
        let clients = self.replay_clients()?;
        let found = match source {
            Source::S3 { bucket, key } => {
                let head =
                    clients.s3.head_object().bucket(bucket).key(key).send().await.map_err(|e| {
                        match service_code(&e) {
                            Some(("NotFound" | "NoSuchKey" | "NoSuchBucket", _)) => Error::InvalidRelease(format!(
                            "replay: {source} does not exist: put the golden set there (JSON Lines, one {{\"request\": \
                             ...}} a line), or name the object that holds it ({})",
                            call_detail("s3:HeadObject", &e)
                        )),
                            _ => aws_error("s3:HeadObject", e),
                        }
                    })?;
                let size = head.content_length().unwrap_or_default();
                let first = read_s3(clients, source, feed, &Cursor::default(), 1).await?;
                if first.lines.is_empty() {
                    return Err(Error::InvalidRelease(format!(
                        "replay: {source} holds no request a replay can send ({} lines skipped: each line is \
                         {{\"request\": ...}} or the stable's \"coalmine:pair\" line, at most {} bytes)",
                        first.skipped, feed.max_payload_bytes
                    )));
                }
                format!("{source} ({size} bytes) can be read")
            }
            Source::Recent { window_seconds } => {
                let first = read_logs(&self.client, source, feed, &Cursor::default(), began_at, 1).await?;
                if first.lines.is_empty() {
                    return Err(Error::Refused(format!(
                        "replay: {} holds no request version {} served over the last {window_seconds} s: nothing to \
                         replay; widen window_seconds, check the handler prints its \"coalmine:pair\" lines, or \
                         replay a golden set",
                        log_group(&feed.function),
                        feed.stable,
                    )));
                }
                format!(
                    "{} holds version {}'s requests of the last {window_seconds} s",
                    log_group(&feed.function),
                    feed.stable
                )
            }
        };
        let destination = self.destination()?;
        Ok(format!("{found}; {destination} answers them"))
    }

    pub(super) async fn read_replay_source(
        &self,
        source: &Source,
        feed: &Feed,
        cursor: &Cursor,
        began_at: u64,
        max: usize,
    ) -> Result<Slice> {
        match source {
            Source::S3 { .. } => read_s3(self.replay_clients()?, source, feed, cursor, max).await,
            Source::Recent { .. } => read_logs(&self.client, source, feed, cursor, began_at, max).await,
        }
    }

    pub(super) async fn dispatch_batches(&self, batches: &[ReplayBatch]) -> Result<()> {
        let clients = self.replay_clients()?;
        let destination = self.destination()?;
        for batch in batches {
            let body = serde_json::to_vec(&batch.event()).map_err(|e| Error::BadEvent(format!("replay batch: {e}")))?;
            clients
                .lambda
                .invoke()
                .function_name(destination)
                .invocation_type(InvocationType::Event)
                .payload(Blob::new(body))
                .send()
                .await
                .map_err(|e| aws_error("lambda:Invoke", e))?;
        }
        Ok(())
    }
}

/// Up to `max` lines of an S3 object from the cursor's byte offset, a range at a time;
/// the cursor stops at a line's start.
async fn read_s3(clients: &ReplayClients, source: &Source, feed: &Feed, cursor: &Cursor, max: usize) -> Result<Slice> {
    let Source::S3 { bucket, key } = source else {
        unreachable!("read_s3 reads an S3 source");
    };
    let mut read = Lines::default();
    let mut offset = cursor.offset;
    loop {
        let got = clients
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .range(format!("bytes={offset}-{}", offset + RANGE_BYTES - 1))
            .send()
            .await;
        let out = match got {
            Ok(out) => out,
            // Past the end (or an empty object): nothing more.
            Err(e) if matches!(service_code(&e), Some(("InvalidRange", _))) => {
                return Ok(Slice { lines: read.lines, skipped: read.skipped, cursor: at(offset), exhausted: true });
            }
            Err(e) => {
                return Err(match service_code(&e) {
                    Some(("NoSuchKey" | "NoSuchBucket", _)) => Error::InvalidRelease(format!(
                        "replay: {source} is gone ({}); the replay cannot go on",
                        call_detail("s3:GetObject", &e)
                    )),
                    _ => aws_error("s3:GetObject", e),
                })
            }
        };
        let total = out.content_range().and_then(|r| r.rsplit('/').next()?.parse::<u64>().ok());
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| Error::Service { operation: "s3:GetObject", detail: e.to_string(), retryable: true })?
            .into_bytes();
        let end = offset + body.len() as u64;
        let at_end = body.is_empty() || total.is_none_or(|t| end >= t);
        let mut start = 0usize;
        while read.lines.len() < max {
            match body[start..].iter().position(|b| *b == b'\n') {
                Some(n) => {
                    read.take(&String::from_utf8_lossy(&body[start..start + n]), feed, source);
                    start += n + 1;
                }
                None if at_end && start < body.len() => {
                    // The last line needs no newline.
                    read.take(&String::from_utf8_lossy(&body[start..]), feed, source);
                    start = body.len();
                }
                None => break,
            }
        }
        if start == 0 && !at_end && read.lines.len() < max {
            return Err(Error::InvalidRelease(format!(
                "replay: a line of {source} at byte {offset} is longer than {RANGE_BYTES} bytes: a replay source holds \
                 one request a line"
            )));
        }
        offset += start as u64;
        let exhausted = at_end && start == body.len();
        if read.lines.len() >= max || exhausted {
            return Ok(Slice { lines: read.lines, skipped: read.skipped, cursor: at(offset), exhausted });
        }
    }
}

fn at(offset: u64) -> Cursor {
    Cursor { offset, ..Cursor::default() }
}

/// Up to `max` of the stable's pair lines in its log group, in the window ending at
/// `began_at`, from the cursor's millisecond on (skipping the ids read at it).
async fn read_logs(
    client: &LogsClient,
    source: &Source,
    feed: &Feed,
    cursor: &Cursor,
    began_at: u64,
    max: usize,
) -> Result<Slice> {
    let Source::Recent { window_seconds } = source else {
        unreachable!("read_logs reads recent requests");
    };
    let group = log_group(&feed.function);
    let until_ms = i64::try_from(began_at.saturating_mul(1000)).unwrap_or(i64::MAX);
    let window_ms = i64::try_from(window_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    let mut read = Lines::default();
    let mut next = Cursor { after_ms: cursor.after_ms, seen: cursor.seen.clone(), ..Cursor::default() };
    let mut token: Option<String> = None;
    let (mut from_ms, mut limit) = (0, 0);
    loop {
        // A page follows the service's token while it gives one (the same query); else a
        // new query starts at the last millisecond read (MiniStack, for one, gives none).
        if token.is_none() {
            from_ms = next.after_ms.unwrap_or(until_ms.saturating_sub(window_ms));
            limit = (max - read.lines.len() + next.seen.len()).clamp(1, LOG_PAGE);
        }
        let page = client
            .filter_log_events()
            .log_group_name(&group)
            .filter_pattern(FILTER_PATTERN)
            .start_time(from_ms)
            .end_time(until_ms)
            .limit(limit as i32)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| match service_code(&e) {
                Some(("ResourceNotFoundException", _)) => Error::InvalidRelease(format!(
                    "replay: {group} does not exist: the stable has never logged, so it has no recent requests to \
                     replay; replay a golden set instead"
                )),
                _ => aws_error("logs:FilterLogEvents", e),
            })?;
        let mut new = 0usize;
        for event in page.events() {
            let Some(ts) = event.timestamp() else {
                continue;
            };
            let id = event_id(event);
            let id = id.as_str();
            if next.after_ms == Some(ts) && next.seen.iter().any(|s| s == id) {
                continue;
            }
            if read.lines.len() >= max {
                return Ok(Slice { lines: read.lines, skipped: read.skipped, cursor: next, exhausted: false });
            }
            new += 1;
            if next.after_ms != Some(ts) {
                next = Cursor { after_ms: Some(ts), seen: Vec::new(), ..Cursor::default() };
            }
            next.seen.push(id.to_owned());
            if feed.from_stable(event.log_stream_name().unwrap_or_default()) {
                read.take(event.message().unwrap_or_default(), feed, source);
            }
        }
        token = page.next_token().map(str::to_owned);
        let full = page.events().len() >= limit;
        if token.is_none() && (!full || new == 0) {
            // Every line up to the window's end has been read.
            return Ok(Slice { lines: read.lines, skipped: read.skipped, cursor: next, exhausted: true });
        }
        if read.lines.len() >= max {
            return Ok(Slice { lines: read.lines, skipped: read.skipped, cursor: next, exhausted: false });
        }
    }
}

/// An event's id; where a service gives none (MiniStack), one made of what tells two
/// events of the same millisecond apart: their stream and their text.
fn event_id(event: &aws_sdk_cloudwatchlogs::types::FilteredLogEvent) -> String {
    use sha2::Digest;
    if let Some(id) = event.event_id() {
        return id.to_owned();
    }
    let digest = sha2::Sha256::new()
        .chain_update(event.log_stream_name().unwrap_or_default())
        .chain_update([0])
        .chain_update(event.message().unwrap_or_default())
        .finalize();
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}
