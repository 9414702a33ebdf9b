//! A tiny HTML writer whose only way to emit markup is a `&'static str`.
//!
//! Everything the status page shows from the outside world is attacker-influenced: an MX can
//! put `<script>` in its banner or its RCPT reply, and a DNS TXT record can hold anything. So
//! dynamic text can only enter through [`Html::text`] and attribute values, which escape it;
//! markup itself ([`Html::raw`], tag and attribute names) must be a literal in this crate.
//! No template engine, no JavaScript: the pages are server-rendered and work with scripts off,
//! and the Content-Security-Policy forbids scripts altogether.

use std::fmt::Write as _;

use tw_core::Timestamp;

#[derive(Default)]
pub(crate) struct Html {
    out: String,
}

impl Html {
    pub(crate) fn new() -> Html {
        Html {
            out: String::with_capacity(16 * 1024),
        }
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }

    /// Markup written by this crate.
    pub(crate) fn raw(&mut self, markup: &'static str) -> &mut Html {
        self.out.push_str(markup);
        self
    }

    /// Text from anywhere, escaped.
    pub(crate) fn text(&mut self, text: &str) -> &mut Html {
        escape_into(&mut self.out, text);
        self
    }

    /// A number or anything else whose `Display` is ours; escaped all the same.
    pub(crate) fn display(&mut self, value: impl std::fmt::Display) -> &mut Html {
        let text = value.to_string();
        self.text(&text)
    }

    /// `<tag a="v" …>` with every value escaped.
    pub(crate) fn open(&mut self, tag: &'static str, attrs: &[(&'static str, &str)]) -> &mut Html {
        self.out.push('<');
        self.out.push_str(tag);
        for (name, value) in attrs {
            self.out.push(' ');
            self.out.push_str(name);
            self.out.push_str("=\"");
            escape_into(&mut self.out, value);
            self.out.push('"');
        }
        self.out.push('>');
        self
    }

    pub(crate) fn close(&mut self, tag: &'static str) -> &mut Html {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    /// `<tag attrs>text</tag>`.
    pub(crate) fn element(
        &mut self,
        tag: &'static str,
        attrs: &[(&'static str, &str)],
        text: &str,
    ) -> &mut Html {
        self.open(tag, attrs).text(text).close(tag)
    }
}

/// Escapes the five characters that matter in text and double- or single-quoted attributes,
/// and shows control characters (other than newline and tab) as `\xNN`, so an ESC or NUL in a
/// transcript is visible evidence rather than a parse error.
pub(crate) fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// Percent-encodes a query value: everything but unreserved characters (RFC 3986).
pub(crate) fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// `2026-11-23 12:00:05 UTC`: seconds are enough on a page; the API keeps milliseconds.
pub(crate) fn when(at: Timestamp) -> String {
    let full = at.to_string();
    match (full.get(..10), full.get(11..19)) {
        (Some(date), Some(time)) if full.len() >= 20 => format!("{date} {time} UTC"),
        _ => full,
    }
}

/// How long ago, coarsely: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub(crate) fn age(now: Timestamp, at: Timestamp) -> String {
    let secs = now.millis_since(at) / 1000;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3_599 => format!("{}m", secs / 60),
        3_600..=86_399 => format!("{}h {}m", secs / 3_600, secs % 3_600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3_600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_cannot_become_markup() {
        let mut html = Html::new();
        html.open("td", &[("title", "\" onmouseover='x'")])
            .text("<script>alert(1)</script> & \u{1b}[31m\0")
            .close("td");
        assert_eq!(
            html.finish(),
            "<td title=\"&quot; onmouseover=&#39;x&#39;\">&lt;script&gt;alert(1)&lt;/script&gt; &amp; \\x1b[31m\\x00</td>"
        );
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(query_value("1795000000250_42"), "1795000000250_42");
    }

    #[test]
    fn times_and_ages_read_at_a_glance() {
        assert_eq!(
            when(Timestamp(1_795_000_000_123)),
            "2026-11-18 11:06:40 UTC"
        );
        let now = Timestamp(1_795_000_000_000);
        assert_eq!(age(now, now), "0s");
        assert_eq!(age(now, Timestamp(now.0 - 125_000)), "2m");
        assert_eq!(age(now, Timestamp(now.0 - 3_900_000)), "1h 5m");
        assert_eq!(
            age(now, Timestamp(now.0 - 2 * 86_400_000 - 7_200_000)),
            "2d 2h"
        );
    }
}
