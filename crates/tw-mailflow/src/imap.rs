//! Just enough IMAP4rev1 (RFC 3501) to read bounces: TLS (from the first byte or by
//! STARTTLS), AUTHENTICATE PLAIN or LOGIN, SELECT, UID SEARCH, UID FETCH of one message,
//! UID STORE \Deleted with UID EXPUNGE (RFC 4315) or EXPUNGE, LOGOUT.
//!
//! Written here rather than taken from async-imap because that crate logs every command it
//! sends at TRACE through `log`, `LOGIN user password` included, and the daemon forwards
//! `log` records into its tracing output: one `RUST_LOG=trace` would print the mailbox
//! password. Owning the few commands keeps the credential out of logs, errors and evidence
//! (the transcript shows `[redacted]`), and bounds everything read from the server: line
//! length, literal size, number of responses.

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tw_core::config::EmailTls;
use tw_core::Secret;

use crate::transcript::{truncate, Transcript};

/// Longest response line (between literals) accepted.
const MAX_LINE: u64 = 64 * 1024;
/// Largest literal accepted; fetches ask for at most [`FETCH_BYTES`].
const MAX_LITERAL: usize = 2 * 1024 * 1024;
/// How much of a message is fetched: a DSN's status part comes before the returned message.
pub(crate) const FETCH_BYTES: usize = 256 * 1024;
/// Most untagged responses accepted for one command.
const MAX_RESPONSES: usize = 10_000;

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// Where and as whom to log in.
pub(crate) struct Login<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) tls: EmailTls,
    pub(crate) connector: &'a TlsConnector,
    pub(crate) user: &'a str,
    pub(crate) password: &'a Secret,
    pub(crate) folder: &'a str,
}

/// One response line with its literals taken out.
struct Untagged {
    /// The text, literals replaced by `{n}`.
    text: String,
    literals: Vec<Vec<u8>>,
}

/// A logged-in session with the folder selected.
pub(crate) struct Imap {
    reader: BufReader<Box<dyn Io>>,
    next_tag: u32,
    uidplus: bool,
}

impl Imap {
    /// Connects, secures, authenticates and selects the folder.
    pub(crate) async fn open(
        login: &Login<'_>,
        transcript: &mut Transcript,
    ) -> Result<Imap, String> {
        let name = ServerName::try_from(login.host.to_owned())
            .map_err(|_| format!("{:?} is not a valid TLS server name", login.host))?;
        transcript.note(format!("connecting to {}:{}", login.host, login.port));
        let tcp = TcpStream::connect((login.host, login.port))
            .await
            .map_err(|err| fail(transcript, format!("connect failed: {err}")))?;
        let stream: Box<dyn Io> = match login.tls {
            EmailTls::Implicit => {
                Box::new(handshake(login.connector, &name, tcp, transcript).await?)
            }
            EmailTls::StartTls => Box::new(tcp),
        };
        let mut imap = Imap {
            reader: BufReader::new(stream),
            next_tag: 1,
            uidplus: false,
        };
        let greeting = imap.read_untagged(transcript).await?;
        if !greeting.text.starts_with("* OK") && !greeting.text.starts_with("* PREAUTH") {
            return Err(fail(
                transcript,
                format!("unexpected greeting: {}", truncate(&greeting.text, 300)),
            ));
        }
        if login.tls == EmailTls::StartTls {
            imap.command("STARTTLS", "STARTTLS", transcript).await?;
            if !imap.reader.buffer().is_empty() {
                // Bytes sent before the handshake would be read as if they came through TLS.
                return Err(fail(
                    transcript,
                    "the server sent data before the TLS handshake".into(),
                ));
            }
            let tcp = imap.reader.into_inner();
            let tls = handshake(login.connector, &name, tcp, transcript).await?;
            imap = Imap {
                reader: BufReader::new(Box::new(tls)),
                next_tag: imap.next_tag,
                uidplus: false,
            };
        }
        let capabilities = imap.capabilities(transcript).await?;
        imap.authenticate(login, &capabilities, transcript).await?;
        // Capabilities may grow after login (Dovecot adds UIDPLUS then).
        let capabilities = imap.capabilities(transcript).await?;
        imap.uidplus = capabilities.iter().any(|c| c == "UIDPLUS");
        imap.command(
            &format!("SELECT {}", quoted(login.folder)?),
            &format!("SELECT {}", login.folder),
            transcript,
        )
        .await?;
        Ok(imap)
    }

    async fn capabilities(&mut self, transcript: &mut Transcript) -> Result<Vec<String>, String> {
        let responses = self.command("CAPABILITY", "CAPABILITY", transcript).await?;
        Ok(responses
            .iter()
            .filter_map(|r| r.text.strip_prefix("* CAPABILITY "))
            .flat_map(|caps| caps.split_whitespace().map(str::to_ascii_uppercase))
            .collect())
    }

    async fn authenticate(
        &mut self,
        login: &Login<'_>,
        capabilities: &[String],
        transcript: &mut Transcript,
    ) -> Result<(), String> {
        let has = |cap: &str| capabilities.iter().any(|c| c == cap);
        if has("AUTH=PLAIN") {
            let mut response = Vec::new();
            response.push(0);
            response.extend_from_slice(login.user.as_bytes());
            response.push(0);
            response.extend_from_slice(login.password.expose().as_bytes());
            let encoded = encode_base64(&response);
            if has("SASL-IR") {
                let line = format!("AUTHENTICATE PLAIN {encoded}");
                self.command(&line, "AUTHENTICATE PLAIN [redacted]", transcript)
                    .await?;
            } else {
                let tag = self
                    .send("AUTHENTICATE PLAIN", "AUTHENTICATE PLAIN", transcript)
                    .await?;
                let challenge = self.read_untagged(transcript).await?;
                if !challenge.text.starts_with('+') {
                    self.finish(&tag, challenge, "AUTHENTICATE PLAIN", transcript)?;
                    return Err(fail(
                        transcript,
                        "the server did not ask for the credentials".into(),
                    ));
                }
                self.write_line(&encoded, "[redacted]", transcript).await?;
                self.finish_reading(&tag, "AUTHENTICATE PLAIN", transcript)
                    .await?;
            }
            return Ok(());
        }
        if has("LOGINDISABLED") {
            return Err(fail(
                transcript,
                "the server offers neither AUTH=PLAIN nor LOGIN".into(),
            ));
        }
        let line = format!(
            "LOGIN {} {}",
            quoted(login.user)?,
            quoted_secret(login.password)?
        );
        self.command(&line, "LOGIN [redacted]", transcript).await?;
        Ok(())
    }

    /// `UID SEARCH <criteria>`; the UIDs found.
    pub(crate) async fn search(
        &mut self,
        criteria: &str,
        transcript: &mut Transcript,
    ) -> Result<Vec<u32>, String> {
        let line = format!("UID SEARCH {criteria}");
        let responses = self.command(&line, &line, transcript).await?;
        Ok(responses
            .iter()
            .filter_map(|r| r.text.strip_prefix("* SEARCH"))
            .flat_map(|ids| ids.split_whitespace().filter_map(|id| id.parse().ok()))
            .collect())
    }

    /// The first [`FETCH_BYTES`] of the message with `uid`, without setting `\Seen`; `None`
    /// if it is gone.
    pub(crate) async fn fetch(
        &mut self,
        uid: u32,
        transcript: &mut Transcript,
    ) -> Result<Option<Vec<u8>>, String> {
        let line = format!("UID FETCH {uid} (UID BODY.PEEK[]<0.{FETCH_BYTES}>)");
        let responses = self.command(&line, &line, transcript).await?;
        let uid_marker = format!("UID {uid}");
        Ok(responses
            .into_iter()
            .filter(|r| r.text.contains(" FETCH ") && r.text.contains(&uid_marker))
            .find_map(|r| r.literals.into_iter().next()))
    }

    /// Marks `uids` `\Deleted` and expunges them (only them when UIDPLUS is there).
    pub(crate) async fn delete(
        &mut self,
        uids: &[u32],
        transcript: &mut Transcript,
    ) -> Result<(), String> {
        if uids.is_empty() {
            return Ok(());
        }
        let set = uids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let store = format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)");
        self.command(&store, &store, transcript).await?;
        let expunge = if self.uidplus {
            format!("UID EXPUNGE {set}")
        } else {
            "EXPUNGE".to_owned()
        };
        self.command(&expunge, &expunge, transcript).await?;
        Ok(())
    }

    pub(crate) async fn noop(&mut self, transcript: &mut Transcript) -> Result<(), String> {
        self.command("NOOP", "NOOP", transcript).await.map(|_| ())
    }

    pub(crate) async fn logout(mut self, transcript: &mut Transcript) {
        let _ = self.command("LOGOUT", "LOGOUT", transcript).await;
    }

    /// Sends a command, reads to its tagged completion; `Err` unless it completed `OK`.
    async fn command(
        &mut self,
        line: &str,
        shown: &str,
        transcript: &mut Transcript,
    ) -> Result<Vec<Untagged>, String> {
        let tag = self.send(line, shown, transcript).await?;
        self.finish_reading(&tag, shown, transcript).await
    }

    async fn send(
        &mut self,
        line: &str,
        shown: &str,
        transcript: &mut Transcript,
    ) -> Result<String, String> {
        let tag = format!("tw{}", self.next_tag);
        self.next_tag += 1;
        self.write_line(
            &format!("{tag} {line}"),
            &format!("{tag} {shown}"),
            transcript,
        )
        .await?;
        Ok(tag)
    }

    async fn write_line(
        &mut self,
        line: &str,
        shown: &str,
        transcript: &mut Transcript,
    ) -> Result<(), String> {
        transcript.client(shown);
        let stream = self.reader.get_mut();
        let written = async {
            stream.write_all(line.as_bytes()).await?;
            stream.write_all(b"\r\n").await?;
            stream.flush().await
        }
        .await;
        written.map_err(|err| fail(transcript, format!("sending failed: {err}")))
    }

    async fn finish_reading(
        &mut self,
        tag: &str,
        what: &str,
        transcript: &mut Transcript,
    ) -> Result<Vec<Untagged>, String> {
        let mut responses = Vec::new();
        loop {
            let response = self.read_untagged(transcript).await?;
            if response.text.starts_with(&format!("{tag} ")) {
                return self
                    .finish(tag, response, what, transcript)
                    .map(|()| responses);
            }
            if responses.len() >= MAX_RESPONSES {
                return Err(fail(transcript, format!("too many responses to {what}")));
            }
            responses.push(response);
        }
    }

    /// Judges a tagged completion.
    fn finish(
        &mut self,
        tag: &str,
        response: Untagged,
        what: &str,
        transcript: &mut Transcript,
    ) -> Result<(), String> {
        let status = response
            .text
            .strip_prefix(tag)
            .unwrap_or(&response.text)
            .trim_start();
        if status.starts_with("OK") {
            Ok(())
        } else {
            // `what` is the redacted form of the command, never the command itself.
            Err(fail(
                transcript,
                format!("{what} answered {}", truncate(status, 300)),
            ))
        }
    }

    /// Reads one response line, pulling in any literals it announces.
    async fn read_untagged(&mut self, transcript: &mut Transcript) -> Result<Untagged, String> {
        let mut text = String::new();
        let mut literals = Vec::new();
        loop {
            let mut line = Vec::with_capacity(128);
            let read = (&mut self.reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .await
                .map_err(|err| fail(transcript, format!("reading failed: {err}")))?;
            if read == 0 {
                return Err(fail(
                    transcript,
                    format!(
                        "the server closed the connection{}",
                        if text.is_empty() {
                            String::new()
                        } else {
                            format!(" after {}", truncate(&text, 200))
                        }
                    ),
                ));
            }
            if !line.ends_with(b"\n") {
                return Err(fail(transcript, "a response line was too long".into()));
            }
            let chunk = String::from_utf8_lossy(&line);
            let chunk = chunk.trim_end_matches(['\r', '\n']);
            text.push_str(chunk);
            let Some(size) = literal_size(chunk) else {
                break;
            };
            if size > MAX_LITERAL || literals.len() >= 16 {
                return Err(fail(
                    transcript,
                    format!("a literal of {size} bytes is too large"),
                ));
            }
            let mut literal = vec![0; size];
            self.reader
                .read_exact(&mut literal)
                .await
                .map_err(|err| fail(transcript, format!("reading a literal failed: {err}")))?;
            literals.push(literal);
        }
        transcript.server(text.as_str());
        Ok(Untagged { text, literals })
    }
}

async fn handshake<S: Io + 'static>(
    connector: &TlsConnector,
    name: &ServerName<'static>,
    stream: S,
    transcript: &mut Transcript,
) -> Result<tokio_rustls::client::TlsStream<S>, String> {
    match connector.connect(name.clone(), stream).await {
        Ok(tls) => {
            transcript.note("TLS established");
            Ok(tls)
        }
        Err(err) => Err(fail(transcript, format!("TLS handshake failed: {err}"))),
    }
}

fn fail(transcript: &mut Transcript, detail: String) -> String {
    transcript.note(detail.as_str());
    detail
}

/// The size of the literal a line ends with (`{123}` or `{123+}`).
fn literal_size(line: &str) -> Option<usize> {
    let open = line.rfind('{')?;
    let inner = line.get(open + 1..)?.strip_suffix('}')?;
    inner.trim_end_matches('+').parse().ok()
}

/// An IMAP quoted string; refused for characters a quoted string cannot carry.
fn quoted(text: &str) -> Result<String, String> {
    if text
        .bytes()
        .any(|b| b == b'\r' || b == b'\n' || b == 0 || !b.is_ascii())
    {
        return Err(format!("{text:?} cannot be sent as an IMAP quoted string"));
    }
    Ok(format!(
        "\"{}\"",
        text.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// Like [`quoted`], with an error that does not repeat the secret.
fn quoted_secret(secret: &Secret) -> Result<String, String> {
    quoted(secret.expose()).map_err(|_| {
        "the password has characters LOGIN cannot carry and the server offers no AUTH=PLAIN"
            .to_owned()
    })
}

fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = chunk
            .iter()
            .enumerate()
            .fold(0u32, |word, (i, &b)| word | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((word >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_sizes_and_quoting() {
        assert_eq!(
            literal_size("* 1 FETCH (UID 7 BODY[]<0> {1234}"),
            Some(1234)
        );
        assert_eq!(literal_size("tw1 LOGIN {5+}"), Some(5));
        assert_eq!(literal_size("* OK no literal"), None);
        assert_eq!(literal_size("* OK {x}"), None);
        assert_eq!(quoted("IN\"BO\\X").unwrap(), "\"IN\\\"BO\\\\X\"");
        assert!(quoted("a\r\nb").is_err());
        let err = quoted_secret(&Secret::new("pä55")).unwrap_err();
        assert!(!err.contains("pä55"), "{err}");
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(encode_base64(b""), "");
        assert_eq!(encode_base64(b"f"), "Zg==");
        assert_eq!(encode_base64(b"fo"), "Zm8=");
        assert_eq!(encode_base64(b"foo"), "Zm9v");
        assert_eq!(encode_base64(b"\0bounces\0pw"), "AGJvdW5jZXMAcHc=");
    }
}
