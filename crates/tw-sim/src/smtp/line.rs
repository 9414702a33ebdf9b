//! Reading SMTP command lines from an untrusted client without trusting its framing.
//!
//! A probe under test may send bare LF, overlong lines or bytes that are not UTF-8; the
//! simulator must answer those with a 500 rather than grow a buffer without bound or panic.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Longest command line accepted, in bytes without the line ending. RFC 5321 allows 512; we
/// are lenient up to 2000 so that a probe's slightly long line is still answered normally.
pub(crate) const MAX_LINE: usize = 2000;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    Text(String),
    TooLong,
    NotUtf8,
    /// The client closed the connection (a trailing partial line is discarded with it).
    Eof,
}

/// Reads one line ending in LF (an optional CR before it is stripped).
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut overflowed = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(Line::Eof);
        }
        let (chunk, consumed, complete) = match available.iter().position(|&byte| byte == b'\n') {
            Some(newline) => (&available[..newline], newline + 1, true),
            None => (available, available.len(), false),
        };
        // Once over the limit we keep consuming up to the newline but stop storing, so the
        // next command is still framed correctly.
        if !overflowed {
            line.extend_from_slice(chunk);
            if line.len() > MAX_LINE + 1 {
                overflowed = true;
                line.clear();
            }
        }
        reader.consume(consumed);
        if complete {
            break;
        }
    }
    if overflowed {
        return Ok(Line::TooLong);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.len() > MAX_LINE {
        return Ok(Line::TooLong);
    }
    match String::from_utf8(line) {
        Ok(text) => Ok(Line::Text(text)),
        Err(_) => Ok(Line::NotUtf8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8]) -> Vec<Line> {
        let mut reader = tokio::io::BufReader::with_capacity(16, input);
        let mut out = Vec::new();
        loop {
            let line = read_line(&mut reader).await.unwrap();
            let end = line == Line::Eof;
            out.push(line);
            if end {
                return out;
            }
        }
    }

    fn text(s: &str) -> Line {
        Line::Text(s.to_string())
    }

    #[tokio::test]
    async fn crlf_and_bare_lf_both_end_a_line() {
        assert_eq!(
            lines(b"EHLO a\r\nNOOP\nQUIT\r\n").await,
            vec![text("EHLO a"), text("NOOP"), text("QUIT"), Line::Eof]
        );
    }

    #[tokio::test]
    async fn overlong_line_is_reported_and_framing_recovers() {
        let mut input = vec![b'A'; 5000];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(
            lines(&input).await,
            vec![Line::TooLong, text("NOOP"), Line::Eof]
        );
    }

    #[tokio::test]
    async fn line_of_exactly_the_limit_is_accepted() {
        let mut input = vec![b'A'; MAX_LINE];
        input.extend_from_slice(b"\r\n");
        assert_eq!(
            lines(&input).await,
            vec![text(&"A".repeat(MAX_LINE)), Line::Eof]
        );
    }

    #[tokio::test]
    async fn invalid_utf8_and_partial_last_line() {
        assert_eq!(
            lines(b"\xff\xfe\r\nQUI").await,
            vec![Line::NotUtf8, Line::Eof]
        );
    }
}
