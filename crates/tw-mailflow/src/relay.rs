//! Submitting the probe message to the MSP's own SMTP relay: greeting, EHLO, STARTTLS (or
//! TLS from the first byte), EHLO, AUTH, MAIL, RCPT, DATA, QUIT, every line in the evidence.
//!
//! The dialogue is driven here with async-smtp's command types and reply parser rather than
//! its `SmtpTransport`, because the transport logs each command at DEBUG through `log`,
//! `AUTH PLAIN <base64 credentials>` included (the same reason as tw-notify's e-mail
//! channel). The transcript records AUTH as `[redacted]`, and no error text ever carries a
//! credential. Where the relay offers the DSN extension (RFC 3461) the probe asks for
//! failure and delay notices only, with headers returned and the tag as `ENVID`, so a bounce
//! is small and names its probe.

use std::fmt::Write as _;
use std::str::FromStr;

use async_smtp::authentication::{Credentials, Mechanism};
use async_smtp::commands::{
    AuthCommand, DataCommand, EhloCommand, MailCommand, QuitCommand, RcptCommand, StarttlsCommand,
};
use async_smtp::extension::{ClientId, Extension, MailParameter, RcptParameter, ServerInfo};
use async_smtp::response::Response;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::TlsConnector;
use tw_core::config::EmailTls;
use tw_core::{EmailAddress, Secret};

use crate::transcript::{truncate, Transcript};

/// Longest reply line accepted (RFC 5321 allows 512).
const MAX_LINE: u64 = 2_048;
/// Most lines in one multi-line reply.
const MAX_REPLY_LINES: usize = 64;
/// AUTH LOGIN takes two challenges; more is a confused server.
const MAX_AUTH_CHALLENGES: usize = 4;

/// What the submission needs.
pub(crate) struct Submission<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) tls: EmailTls,
    pub(crate) connector: &'a TlsConnector,
    pub(crate) helo: &'a str,
    pub(crate) credentials: Option<(&'a str, &'a Secret)>,
    pub(crate) from: &'a EmailAddress,
    pub(crate) to: &'a EmailAddress,
    pub(crate) envelope_id: &'a str,
    pub(crate) message: &'a [u8],
}

/// Anything the session reads from and writes to: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// Submits the message; `Ok` carries the relay's reply to it (usually naming its queue id),
/// `Err` one line saying which step failed and how.
pub(crate) async fn submit(
    submission: &Submission<'_>,
    transcript: &mut Transcript,
    deadline: Instant,
) -> Result<String, String> {
    let mut session = Session {
        transcript,
        reader: None,
    };
    match timeout_at(deadline, session.run(submission)).await {
        Ok(result) => result,
        Err(_) => {
            session.transcript.note("deadline reached");
            Err("no complete answer before the deadline".to_owned())
        }
    }
}

struct Session<'t> {
    transcript: &'t mut Transcript,
    reader: Option<BufReader<Box<dyn Io>>>,
}

impl Session<'_> {
    async fn run(&mut self, s: &Submission<'_>) -> Result<String, String> {
        let name = ServerName::try_from(s.host.to_owned())
            .map_err(|_| format!("{:?} is not a valid TLS server name", s.host))?;
        self.transcript
            .note(format!("connecting to {}:{}", s.host, s.port));
        let tcp = TcpStream::connect((s.host, s.port))
            .await
            .map_err(|err| self.fail(format!("connect failed: {err}")))?;
        if let Ok(peer) = tcp.peer_addr() {
            self.transcript.note(format!("connected to {peer}"));
        }
        let stream: Box<dyn Io> = match s.tls {
            EmailTls::Implicit => Box::new(self.handshake(s.connector, &name, tcp).await?),
            EmailTls::StartTls => Box::new(tcp),
        };
        self.reader = Some(BufReader::new(stream));

        let greeting = self.read_reply("the greeting").await?;
        self.expect(&greeting, "the greeting", &[220])?;
        let client_id = ClientId::new(s.helo.to_owned());
        let (mut server, mut ehlo) = self.ehlo(&client_id).await?;

        if s.tls == EmailTls::StartTls {
            if !server.supports_feature(Extension::StartTls) {
                return Err(self.fail("the relay does not offer STARTTLS".into()));
            }
            let reply = self
                .exchange(&StarttlsCommand.to_string(), "STARTTLS")
                .await?;
            self.expect(&reply, "STARTTLS", &[220])?;
            let reader = self
                .reader
                .take()
                .ok_or_else(|| "not connected".to_owned())?;
            if !reader.buffer().is_empty() {
                // Bytes sent before the handshake would be read as if they came through TLS
                // (the STARTTLS command injection attack); refuse to go on.
                return Err(self.fail("the relay sent data before the TLS handshake".into()));
            }
            let tls = self
                .handshake(s.connector, &name, reader.into_inner())
                .await?;
            self.reader = Some(BufReader::new(Box::new(tls)));
            (server, ehlo) = self.ehlo(&client_id).await?;
        }

        if let Some((user, password)) = s.credentials {
            let credentials = Credentials::new(user.to_owned(), password.expose().to_owned());
            self.authenticate(&server, &credentials).await?;
        }

        let dsn = ehlo
            .message
            .iter()
            .any(|line| line.split_whitespace().next() == Some("DSN"));
        let mut mail_parameters = Vec::new();
        let mut rcpt_parameters = Vec::new();
        if dsn {
            mail_parameters.push(MailParameter::Other {
                keyword: "RET".into(),
                value: Some("HDRS".into()),
            });
            mail_parameters.push(MailParameter::Other {
                keyword: "ENVID".into(),
                value: Some(s.envelope_id.to_owned()),
            });
            rcpt_parameters.push(RcptParameter::Other {
                keyword: "NOTIFY".into(),
                value: Some("FAILURE,DELAY".into()),
            });
            rcpt_parameters.push(RcptParameter::Other {
                keyword: "ORCPT".into(),
                value: Some(format!("rfc822;{}", s.to)),
            });
        }
        let from = async_smtp::EmailAddress::new(s.from.to_string())
            .map_err(|_| format!("{} is not an address async-smtp accepts", s.from))?;
        let to = async_smtp::EmailAddress::new(s.to.to_string())
            .map_err(|_| format!("{} is not an address async-smtp accepts", s.to))?;
        let mail = MailCommand::new(Some(from), mail_parameters);
        let reply = self.exchange(&mail.to_string(), "MAIL FROM").await?;
        self.expect(&reply, "MAIL FROM", &[250])?;
        let rcpt = RcptCommand::new(to, rcpt_parameters);
        let reply = self.exchange(&rcpt.to_string(), "RCPT TO").await?;
        self.expect(&reply, "RCPT TO", &[250, 251])?;
        let reply = self.exchange(&DataCommand.to_string(), "DATA").await?;
        self.expect(&reply, "DATA", &[354])?;
        self.transcript
            .client(format!("[message: {} bytes]", s.message.len()));
        self.write(s.message, "the message").await?;
        let reply = self.read_reply("the message").await?;
        self.expect(&reply, "the message", &[250])?;
        let accepted = reply_text(&reply);

        // The relay has the message; a failed QUIT changes nothing, so it gets little time.
        let quit = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            self.exchange(&QuitCommand.to_string(), "QUIT"),
        )
        .await;
        if quit.is_err() {
            self.transcript.note("no answer to QUIT; closing");
        }
        Ok(accepted)
    }

    async fn ehlo(&mut self, client_id: &ClientId) -> Result<(ServerInfo, Response), String> {
        let ehlo = EhloCommand::new(client_id.clone());
        let reply = self.exchange(&ehlo.to_string(), "EHLO").await?;
        self.expect(&reply, "EHLO", &[250])?;
        let info = ServerInfo::from_response(&reply)
            .map_err(|err| self.fail(format!("unreadable EHLO reply: {err}")))?;
        Ok((info, reply))
    }

    /// AUTH PLAIN when offered, else AUTH LOGIN. The command lines carry the password in
    /// base64; they are written to the socket only, and to the transcript as `[redacted]`.
    async fn authenticate(
        &mut self,
        server: &ServerInfo,
        credentials: &Credentials,
    ) -> Result<(), String> {
        let mechanism = if server.supports_auth_mechanism(Mechanism::Plain) {
            Mechanism::Plain
        } else if server.supports_auth_mechanism(Mechanism::Login) {
            Mechanism::Login
        } else {
            return Err(self.fail(
                "credentials are configured but the relay offers neither AUTH PLAIN nor AUTH LOGIN"
                    .into(),
            ));
        };
        let step = format!("AUTH {mechanism}");
        let command = AuthCommand::new(mechanism, credentials.clone(), None)
            .map_err(|err| self.fail(format!("{step}: {err}")))?;
        let mut reply = self
            .exchange_redacted(&command.to_string(), &step, &format!("{step} [redacted]"))
            .await?;
        for _ in 0..MAX_AUTH_CHALLENGES {
            if code(&reply) != 334 {
                break;
            }
            let answer = AuthCommand::new_from_response(mechanism, credentials.clone(), &reply)
                .map_err(|err| self.fail(format!("{step}: unexpected challenge: {err}")))?;
            reply = self
                .exchange_redacted(&answer.to_string(), &step, "[redacted]")
                .await?;
        }
        self.expect(&reply, &step, &[235])
    }

    async fn handshake<S: Io + 'static>(
        &mut self,
        connector: &TlsConnector,
        name: &ServerName<'static>,
        stream: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>, String> {
        match connector.connect(name.clone(), stream).await {
            Ok(tls) => {
                let version = tls
                    .get_ref()
                    .1
                    .protocol_version()
                    .map_or_else(|| "TLS".to_owned(), |v| format!("{v:?}"));
                self.transcript.note(format!("TLS established ({version})"));
                Ok(tls)
            }
            Err(err) => Err(self.fail(format!("TLS handshake failed: {err}"))),
        }
    }

    async fn exchange(&mut self, command: &str, step: &str) -> Result<Response, String> {
        self.transcript.client(command.trim_end());
        self.write(command.as_bytes(), step).await?;
        self.read_reply(step).await
    }

    async fn exchange_redacted(
        &mut self,
        command: &str,
        step: &str,
        shown: &str,
    ) -> Result<Response, String> {
        self.transcript.client(shown);
        self.write(command.as_bytes(), step).await?;
        self.read_reply(step).await
    }

    async fn write(&mut self, bytes: &[u8], step: &str) -> Result<(), String> {
        let Some(reader) = self.reader.as_mut() else {
            return Err("not connected".to_owned());
        };
        let stream = reader.get_mut();
        let written = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        }
        .await;
        written.map_err(|err| self.fail(format!("sending {step} failed: {err}")))
    }

    /// Reads one (possibly multi-line) reply and parses it with async-smtp's parser.
    async fn read_reply(&mut self, step: &str) -> Result<Response, String> {
        let mut raw = String::new();
        for _ in 0..MAX_REPLY_LINES {
            let Some(reader) = self.reader.as_mut() else {
                return Err("not connected".to_owned());
            };
            let mut line = Vec::with_capacity(128);
            let read = (&mut *reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .await;
            let read = read
                .map_err(|err| self.fail(format!("reading the reply to {step} failed: {err}")))?;
            if read == 0 {
                return Err(self.fail(format!(
                    "the relay closed the connection before answering {step}"
                )));
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']).to_owned();
            self.transcript.server(text.as_str());
            raw.push_str(&text);
            if text.len() == 3 {
                // async-smtp's parser wants a space after the code even with no text.
                raw.push(' ');
            }
            raw.push_str("\r\n");
            match text.as_bytes().get(3) {
                None | Some(b' ') => {
                    return Response::from_str(&raw).map_err(|_| {
                        self.fail(format!(
                            "unparseable reply to {step}: {}",
                            truncate(&raw, 300)
                        ))
                    });
                }
                Some(b'-') => {}
                Some(_) => {
                    return Err(self.fail(format!(
                        "malformed reply to {step}: {}",
                        truncate(&text, 300)
                    )));
                }
            }
        }
        Err(self.fail(format!(
            "reply to {step} longer than {MAX_REPLY_LINES} lines"
        )))
    }

    fn expect(&mut self, reply: &Response, step: &str, accepted: &[u16]) -> Result<(), String> {
        let code = code(reply);
        if accepted.contains(&code) {
            return Ok(());
        }
        let mut detail = format!("the relay answered {step} with {code}");
        let text = reply.message.join(" ");
        if !text.trim().is_empty() {
            let _ = write!(detail, " {}", truncate(&text, 300));
        }
        Err(self.fail(detail))
    }

    /// Notes the failure in the transcript and returns it as the error line.
    fn fail(&mut self, detail: String) -> String {
        self.transcript.note(detail.as_str());
        detail
    }
}

/// The numeric reply code (0 if async-smtp ever printed something else).
fn code(reply: &Response) -> u16 {
    reply.code.to_string().parse().unwrap_or(0)
}

fn reply_text(reply: &Response) -> String {
    truncate(&format!("{} {}", code(reply), reply.message.join(" ")), 300)
}
