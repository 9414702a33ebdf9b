//! The evidence of a dialogue: each line sent and received, with its time since the start.
//!
//! A long wait polls the bounce mailbox many times; the transcript keeps the beginning (the
//! connection and login, where most failures are) and the end (the last searches and the
//! clean-up), and counts what it left out between them, so evidence stays small.

use std::collections::VecDeque;

use tokio::time::Instant;
use tw_core::{Direction, TranscriptLine};

/// Lines kept from the end once the head is full.
const TAIL: usize = 24;

pub(crate) struct Transcript {
    start: Instant,
    head_limit: usize,
    head: Vec<TranscriptLine>,
    tail: VecDeque<TranscriptLine>,
    omitted: usize,
}

impl Transcript {
    pub(crate) fn new(start: Instant, head_limit: usize) -> Transcript {
        Transcript {
            start,
            head_limit,
            head: Vec::new(),
            tail: VecDeque::new(),
            omitted: 0,
        }
    }

    pub(crate) fn client(&mut self, line: impl Into<String>) {
        self.push(Direction::Client, line.into());
    }

    pub(crate) fn server(&mut self, line: impl Into<String>) {
        self.push(Direction::Server, line.into());
    }

    pub(crate) fn note(&mut self, line: impl Into<String>) {
        self.push(Direction::Note, line.into());
    }

    fn push(&mut self, direction: Direction, line: String) {
        let entry = TranscriptLine {
            at_ms: u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
            direction,
            line: truncate(&line, 500),
        };
        if self.head.len() < self.head_limit {
            self.head.push(entry);
            return;
        }
        self.tail.push_back(entry);
        if self.tail.len() > TAIL {
            self.tail.pop_front();
            self.omitted += 1;
        }
    }

    pub(crate) fn into_lines(self) -> Vec<TranscriptLine> {
        let mut lines = self.head;
        if self.omitted > 0 {
            let at_ms = self.tail.front().map_or(0, |line| line.at_ms);
            lines.push(TranscriptLine {
                at_ms,
                direction: Direction::Note,
                line: format!("[{} lines omitted]", self.omitted),
            });
        }
        lines.extend(self.tail);
        lines
    }
}

/// At most `max` bytes of `text`, cut at a character boundary, marked when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_transcripts_keep_head_and_tail() {
        let mut transcript = Transcript::new(Instant::now(), 3);
        for i in 0..40 {
            transcript.client(format!("line {i}"));
        }
        let lines: Vec<String> = transcript
            .into_lines()
            .into_iter()
            .map(|l| l.line)
            .collect();
        assert_eq!(&lines[..3], ["line 0", "line 1", "line 2"]);
        assert_eq!(lines[3], "[13 lines omitted]");
        assert_eq!(lines[4], "line 16");
        assert_eq!(lines.last().map(String::as_str), Some("line 39"));
        assert_eq!(lines.len(), 3 + 1 + TAIL);
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ääää", 3), "ä…");
    }
}
