//! The SMTP conversation itself: greeting, EHLO, STARTTLS, EHLO, MAIL, RCPT…, RSET, QUIT.
//! Never DATA.
//!
//! Everything the server says and the probe sends goes into the [`SessionLog`] as it happens,
//! so a timeout or a dropped connection still leaves the transcript up to that point.
//! Commands are async-smtp's command types; replies are parsed with its response parser.

use std::io;
use std::str::FromStr;

use async_smtp::commands::{
    EhloCommand, MailCommand, QuitCommand, RcptCommand, RsetCommand, StarttlsCommand,
};
use async_smtp::extension::ClientId;
use async_smtp::response::Response;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tw_core::{Direction, Reason, TlsEvidence, TranscriptLine};

use super::classify::{classify_failure, parse_enhanced, Reply};
use crate::clients::Clients;

/// Longest reply line accepted (RFC 5321 allows 512; real servers stay far below 2,000).
const MAX_LINE: usize = 2_048;
/// Most lines in one multi-line reply; EOP's EHLO answer has ten.
const MAX_REPLY_LINES: usize = 64;
/// Longest line kept in the transcript.
const MAX_TRANSCRIPT_LINE: usize = 512;
/// Most transcript lines kept per session: evidence of a hostile server stays small.
const MAX_TRANSCRIPT_LINES: usize = 200;
/// Longest reply text kept in a `Reply` (and so in RCPT evidence and summaries).
const MAX_REPLY_TEXT: usize = 1_024;
/// How long RSET and QUIT may take once every verdict is in.
const CLOSING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why the dialogue stopped early: the verdict for every address not yet answered.
#[derive(Debug, Clone)]
pub(super) struct Stop {
    pub reason: Reason,
    pub summary: String,
}

impl Stop {
    fn new(reason: Reason, summary: impl Into<String>) -> Stop {
        Stop {
            reason,
            summary: summary.into(),
        }
    }
}

/// What happened, recorded as it happened.
pub(super) struct SessionLog {
    started: Instant,
    pub transcript: Vec<TranscriptLine>,
    pub tls: Option<TlsEvidence>,
    /// RCPT replies in the order sent: address, is-control, reply.
    pub rcpt: Vec<(String, bool, Reply)>,
}

impl SessionLog {
    pub(super) fn new() -> SessionLog {
        SessionLog {
            started: Instant::now(),
            transcript: Vec::new(),
            tls: None,
            rcpt: Vec::new(),
        }
    }

    pub(super) fn note(&mut self, line: impl Into<String>) {
        self.push(Direction::Note, line.into());
    }

    fn push(&mut self, mut direction: Direction, mut line: String) {
        if self.transcript.len() >= MAX_TRANSCRIPT_LINES {
            return;
        }
        if self.transcript.len() + 1 == MAX_TRANSCRIPT_LINES {
            (direction, line) = (Direction::Note, "transcript truncated".to_owned());
        }
        truncate_at_char(&mut line, MAX_TRANSCRIPT_LINE);
        let at_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.transcript.push(TranscriptLine {
            at_ms,
            direction,
            line,
        });
    }
}

enum Conn {
    Plain(BufReader<TcpStream>),
    Tls(Box<BufReader<TlsStream<TcpStream>>>),
    /// Left behind while the plain stream is handed to the TLS handshake.
    Upgrading,
}

impl Conn {
    async fn read_line(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Conn::Plain(reader) => read_line_limited(reader, out).await,
            Conn::Tls(reader) => read_line_limited(reader.as_mut(), out).await,
            Conn::Upgrading => Ok(0),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
            Conn::Tls(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
            Conn::Upgrading => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "TLS upgrade failed",
            )),
        }
    }
}

/// `read_until(b'\n')` with a length limit, so a hostile server cannot grow our buffer.
async fn read_line_limited<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
) -> io::Result<usize> {
    out.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(out.len());
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(idx) => (idx + 1, true),
            None => (available.len(), false),
        };
        out.extend_from_slice(&available[..take]);
        reader.consume(take);
        if out.len() > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reply line too long",
            ));
        }
        if done {
            return Ok(out.len());
        }
    }
}

/// One SMTP session against `peer`.
pub(super) struct Dialogue<'a> {
    pub clients: &'a Clients,
    pub mx_host: &'a str,
    pub log: &'a mut SessionLog,
    conn: Conn,
}

impl<'a> Dialogue<'a> {
    pub(super) fn new(
        clients: &'a Clients,
        mx_host: &'a str,
        log: &'a mut SessionLog,
        stream: TcpStream,
    ) -> Dialogue<'a> {
        Dialogue {
            clients,
            mx_host,
            log,
            conn: Conn::Plain(BufReader::new(stream)),
        }
    }

    /// Runs the whole dialogue. RCPT replies land in the log; an early stop says why.
    pub(super) async fn run(mut self, recipients: &[(String, bool)]) -> Result<(), Stop> {
        self.expect_positive("greeting").await?;
        let ehlo = EhloCommand::new(ClientId::Domain(self.clients.smtp.helo_name.to_string()));
        let features = self.command(&ehlo.to_string(), "EHLO").await?;
        if offers_starttls(&features) {
            self.starttls().await?;
            self.command(&ehlo.to_string(), "EHLO after STARTTLS")
                .await?;
        } else if crate::dns::is_exchange_online_host(self.mx_host) {
            // Exchange Online always offers STARTTLS. Its absence means something between
            // us and the MX stripped it, and plaintext replies from there could be forged
            // in either direction: refuse to judge on them.
            let error = format!("{} did not offer STARTTLS, which Exchange Online always does: the session may be intercepted", self.mx_host);
            self.log.note(error.clone());
            self.log.tls = Some(TlsEvidence {
                established: false,
                protocol: None,
                error: Some("STARTTLS not offered".to_owned()),
            });
            return Err(Stop::new(Reason::TlsFailed, error));
        } else {
            self.log
                .note("STARTTLS not offered; continuing without TLS");
        }

        let sender = async_smtp::EmailAddress::new(self.clients.smtp.mail_from.to_string())
            .map_err(|_| {
                Stop::new(
                    Reason::ProtocolError,
                    "the configured MAIL FROM cannot be sent",
                )
            })?;
        self.command(
            &MailCommand::new(Some(sender), Vec::new()).to_string(),
            "MAIL FROM",
        )
        .await?;

        for (address, control) in recipients {
            let recipient = async_smtp::EmailAddress::new(address.clone()).map_err(|_| {
                Stop::new(
                    Reason::ProtocolError,
                    format!("{address} cannot be sent in RCPT"),
                )
            })?;
            let reply = self
                .exchange(&RcptCommand::new(recipient, Vec::new()).to_string())
                .await?;
            let closing = reply.code == 421;
            self.log.rcpt.push((address.clone(), *control, reply));
            if closing {
                // 421 means the server is closing the channel: no further RCPT will be read.
                return Ok(());
            }
        }

        // Best effort and briefly: the verdicts are in, and a server that stalls or drops us
        // now changes nothing but must not hold the session's permits until the deadline.
        let closing = async {
            if self.exchange(&RsetCommand.to_string()).await.is_ok() {
                let _ = self.exchange(&QuitCommand.to_string()).await;
            }
        };
        let _ = tokio::time::timeout(CLOSING_WAIT, closing).await;
        Ok(())
    }

    async fn starttls(&mut self) -> Result<(), Stop> {
        let reply = self.exchange(&StarttlsCommand.to_string()).await?;
        if reply.code != 220 {
            self.log.tls = Some(TlsEvidence {
                established: false,
                protocol: None,
                error: Some(reply.one_line()),
            });
            return Err(Stop::new(
                Reason::TlsFailed,
                format!("STARTTLS refused: {}", reply.one_line()),
            ));
        }
        let plain = match std::mem::replace(&mut self.conn, Conn::Upgrading) {
            Conn::Plain(reader) => reader,
            Conn::Tls(_) | Conn::Upgrading => {
                return Err(Stop::new(
                    Reason::ProtocolError,
                    "STARTTLS offered again inside TLS",
                ))
            }
        };
        if !plain.buffer().is_empty() {
            // Bytes sent before the handshake would be trusted as if they came over TLS
            // (the STARTTLS command-injection attack); refuse the session instead.
            return Err(Stop::new(
                Reason::ProtocolError,
                "server sent data after its STARTTLS reply, before the TLS handshake",
            ));
        }
        let server_name = ServerName::try_from(self.mx_host.to_owned()).map_err(|_| {
            Stop::new(
                Reason::TlsFailed,
                format!("{} is not a valid TLS server name", self.mx_host),
            )
        })?;
        let connector = TlsConnector::from(self.clients.tls.clone());
        match connector.connect(server_name, plain.into_inner()).await {
            Ok(stream) => {
                let protocol = stream
                    .get_ref()
                    .1
                    .protocol_version()
                    .map(|v| format!("{v:?}"));
                self.log.note(format!(
                    "TLS established ({}), certificate verified for {}",
                    protocol.as_deref().unwrap_or("?"),
                    self.mx_host
                ));
                self.log.tls = Some(TlsEvidence {
                    established: true,
                    protocol,
                    error: None,
                });
                self.conn = Conn::Tls(Box::new(BufReader::new(stream)));
                Ok(())
            }
            Err(err) => {
                let error = format!("TLS handshake with {} failed: {err}", self.mx_host);
                self.log.note(error.clone());
                self.log.tls = Some(TlsEvidence {
                    established: false,
                    protocol: None,
                    error: Some(err.to_string()),
                });
                Err(Stop::new(Reason::TlsFailed, error))
            }
        }
    }

    /// Sends a command and requires a positive reply.
    async fn command(&mut self, command: &str, step: &str) -> Result<Reply, Stop> {
        let reply = self.exchange(command).await?;
        if reply.is_positive() {
            Ok(reply)
        } else {
            Err(Stop::new(
                classify_failure(&reply),
                format!("{step} answered {}", reply.one_line()),
            ))
        }
    }

    async fn expect_positive(&mut self, step: &str) -> Result<Reply, Stop> {
        let reply = self.read_reply(step).await?;
        if reply.is_positive() {
            Ok(reply)
        } else {
            Err(Stop::new(
                classify_failure(&reply),
                format!("{step} answered {}", reply.one_line()),
            ))
        }
    }

    async fn exchange(&mut self, command: &str) -> Result<Reply, Stop> {
        let shown = command.trim_end().to_owned();
        self.log.push(Direction::Client, shown.clone());
        if let Err(err) = self.conn.write_all(command.as_bytes()).await {
            self.log.note(format!("write failed: {err}"));
            return Err(Stop::new(
                Reason::ConnectionDropped,
                format!("connection lost sending {shown}: {err}"),
            ));
        }
        self.read_reply(&shown).await
    }

    /// Reads one (possibly multi-line) reply and parses it with async-smtp's parser.
    async fn read_reply(&mut self, step: &str) -> Result<Reply, Stop> {
        let mut raw = String::new();
        let mut line = Vec::with_capacity(128);
        for _ in 0..MAX_REPLY_LINES {
            match self.conn.read_line(&mut line).await {
                Ok(0) => {
                    self.log.note("connection closed by server");
                    return Err(Stop::new(
                        Reason::ConnectionDropped,
                        format!("server closed the connection after {step}"),
                    ));
                }
                Ok(_) => {}
                Err(err) => {
                    self.log.note(format!("read failed: {err}"));
                    let reason = if err.kind() == io::ErrorKind::InvalidData {
                        Reason::ProtocolError
                    } else {
                        Reason::ConnectionDropped
                    };
                    return Err(Stop::new(
                        reason,
                        format!("reading the reply to {step} failed: {err}"),
                    ));
                }
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            self.log.push(Direction::Server, text.to_owned());
            let is_last = text.len() == 3 || text.as_bytes().get(3) == Some(&b' ');
            raw.push_str(text);
            if text.len() == 3 {
                // async-smtp's parser wants a space after the code even with no text.
                raw.push(' ');
            }
            raw.push_str("\r\n");
            if is_last {
                return parse_reply(&raw).ok_or_else(|| {
                    Stop::new(
                        Reason::ProtocolError,
                        format!("unparseable reply to {step}: {:?}", raw.trim_end()),
                    )
                });
            }
            if text.as_bytes().get(3) != Some(&b'-') {
                return Err(Stop::new(
                    Reason::ProtocolError,
                    format!("malformed reply line to {step}: {text:?}"),
                ));
            }
        }
        Err(Stop::new(
            Reason::ProtocolError,
            format!("reply to {step} longer than {MAX_REPLY_LINES} lines"),
        ))
    }
}

/// Parses a complete CRLF-terminated reply. `None` for anything async-smtp rejects
/// (bad code, codes that differ between lines).
pub fn parse_reply(raw: &str) -> Option<Reply> {
    let response = Response::from_str(raw).ok()?;
    let code = response.code.to_string().parse::<u16>().ok()?;
    let enhanced = response
        .message
        .first()
        .and_then(|first| parse_enhanced(first));
    let text = response
        .message
        .iter()
        .map(|line| line.trim())
        .collect::<Vec<_>>()
        .join(" ");
    let mut text = text;
    truncate_at_char(&mut text, MAX_REPLY_TEXT);
    Some(Reply {
        code,
        enhanced,
        text,
    })
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut with `…`.
fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push('…');
}

fn offers_starttls(ehlo: &Reply) -> bool {
    ehlo.text
        .split_whitespace()
        .any(|word| word.eq_ignore_ascii_case("STARTTLS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_replies_parse_with_their_enhanced_code() {
        let reply = parse_reply("550-5.1.10 RESOLVER.ADR.RecipientNotFound;\r\n550 5.1.10 Recipient not found by SMTP address lookup\r\n").unwrap();
        assert_eq!(reply.code, 550);
        assert_eq!(reply.enhanced.as_deref(), Some("5.1.10"));
        assert_eq!(reply.text, "5.1.10 RESOLVER.ADR.RecipientNotFound; 5.1.10 Recipient not found by SMTP address lookup");
    }

    #[test]
    fn malformed_replies_are_rejected_not_panicked_on() {
        for raw in [
            "",
            "\r\n",
            "25\r\n",
            "abc def\r\n",
            "250-a\r\n251 b\r\n",
            "999 x\r\n",
            "250 ok",
        ] {
            assert_eq!(parse_reply(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn starttls_is_found_among_ehlo_keywords() {
        let ehlo = parse_reply(
            "250-host Hello [127.0.0.1]\r\n250-SIZE 157286400\r\n250-STARTTLS\r\n250 SMTPUTF8\r\n",
        )
        .unwrap();
        assert!(offers_starttls(&ehlo));
        let plain = parse_reply("250-host Hello\r\n250 PIPELINING\r\n").unwrap();
        assert!(!offers_starttls(&plain));
    }
}
