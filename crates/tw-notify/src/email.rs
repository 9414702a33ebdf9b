//! E-mail through an SMTP relay that is not Microsoft's: greeting, EHLO, STARTTLS (or TLS
//! from the start), EHLO, AUTH, MAIL, RCPT…, DATA, QUIT.
//!
//! The dialogue is driven here, with async-smtp's command types and reply parser, rather
//! than through `SmtpTransport`, because the transport logs every command it writes at
//! DEBUG through the `log` crate — including `AUTH PLAIN <base64 credentials>` — and the
//! daemon forwards `log` records into its tracing output. Owning the IO keeps the password
//! out of every log at every level, and gives one deadline for the whole session.
//!
//! Replies are classified as RFC 5321 intends: 4xx transient, 5xx permanent. A relay that
//! does not offer STARTTLS when it is required, a certificate that does not verify, and
//! credentials without a mechanism to send them are permanent: they need an operator.

mod message;

use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_smtp::authentication::{Credentials, Mechanism};
use async_smtp::commands::{
    AuthCommand, DataCommand, EhloCommand, MailCommand, QuitCommand, RcptCommand, StarttlsCommand,
};
use async_smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter, ServerInfo};
use async_smtp::response::Response;
use async_smtp::EmailAddress;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tw_core::Secret;

use crate::channel::EmailTls;
use crate::error::DeliveryError;
use crate::text::truncate_words;
use crate::Message;

/// Deadline for one whole SMTP session, from connect to the relay's answer to the message.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest reply line accepted (RFC 5321 allows 512).
const MAX_LINE: u64 = 2_048;
/// Most lines in one multi-line reply.
const MAX_REPLY_LINES: usize = 64;
/// AUTH LOGIN takes two challenges; anything beyond a few is a confused server.
const MAX_AUTH_CHALLENGES: usize = 4;
/// Longest reply text kept in an error.
const MAX_REPLY_TEXT: usize = 300;
/// How long QUIT may take once the relay has accepted the message.
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// The e-mail channel's settings, borrowed from `Channel::Email`.
pub(crate) struct Relay<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) tls: EmailTls,
    pub(crate) username: Option<&'a str>,
    pub(crate) password: Option<&'a Secret>,
    pub(crate) from: &'a str,
    pub(crate) to: &'a [String],
    pub(crate) extra_ca_pem: Option<&'a str>,
}

/// Everything checked before connecting.
struct Plan {
    from: EmailAddress,
    to: Vec<EmailAddress>,
    credentials: Option<(String, Credentials)>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// Anything the session reads from and writes to: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

impl Relay<'_> {
    pub(crate) async fn send(
        &self,
        message: &Message,
        timeout: Duration,
    ) -> Result<(), DeliveryError> {
        let what = format!("email relay {}:{}", self.host, self.port);
        let plan = self
            .plan()
            .map_err(|problem| DeliveryError::Permanent(format!("{what}: {problem}")))?;
        let session = Session {
            what: &what,
            reader: None,
        };
        match tokio::time::timeout(timeout, session.run(self, &plan, message)).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::Transient(format!(
                "{what}: no complete answer within {} s",
                timeout.as_secs_f64()
            ))),
        }
    }

    fn plan(&self) -> Result<Plan, String> {
        let from = address(self.from).map_err(|err| format!("from address: {err}"))?;
        if self.to.is_empty() {
            return Err("no recipients configured".into());
        }
        let to = self
            .to
            .iter()
            .map(|to| address(to))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("recipient address: {err}"))?;
        let credentials = match (self.username, self.password) {
            (Some(user), Some(password)) => Some((
                user.to_owned(),
                Credentials::new(user.to_owned(), password.expose().to_owned()),
            )),
            (None, None) => None,
            (Some(_), None) => return Err("username given without a password".into()),
            (None, Some(_)) => return Err("password given without a username".into()),
        };
        let tls = match self.tls {
            EmailTls::None => {
                // Without TLS the password and the alert cross the network in clear; only a
                // relay on this host is close enough for that.
                if !is_loopback(self.host) {
                    return Err(
                        "tls = none is only allowed for a relay on a loopback address".into(),
                    );
                }
                None
            }
            EmailTls::StartTls | EmailTls::Implicit => {
                let name = ServerName::try_from(self.host.to_owned())
                    .map_err(|_| format!("{:?} is not a valid TLS server name", self.host))?;
                Some((
                    TlsConnector::from(Arc::new(tls_config(self.extra_ca_pem)?)),
                    name,
                ))
            }
        };
        Ok(Plan {
            from,
            to,
            credentials,
            tls,
        })
    }
}

/// One SMTP session; `reader` is set once connected.
struct Session<'w> {
    what: &'w str,
    reader: Option<BufReader<Box<dyn Io>>>,
}

impl Session<'_> {
    async fn run(
        mut self,
        relay: &Relay<'_>,
        plan: &Plan,
        message: &Message,
    ) -> Result<(), DeliveryError> {
        let tcp = TcpStream::connect((relay.host, relay.port))
            .await
            .map_err(|err| self.transient(format!("connect failed: {err}")))?;
        let client_id = match tcp.local_addr().map(|addr| addr.ip()) {
            // RFC 5321 4.1.4: without a domain name of our own, greet with an address literal.
            Ok(IpAddr::V4(ip)) => ClientId::Ipv4(ip),
            Ok(IpAddr::V6(ip)) => ClientId::Ipv6(ip),
            Err(_) => ClientId::new("localhost".into()),
        };
        let stream: Box<dyn Io> = match (&plan.tls, relay.tls) {
            (Some((connector, name)), EmailTls::Implicit) => {
                Box::new(self.handshake(connector, name, tcp).await?)
            }
            _ => Box::new(tcp),
        };
        self.reader = Some(BufReader::new(stream));

        let greeting = self.read_reply("the greeting").await?;
        self.expect(&greeting, "the greeting", &[220])?;
        let mut server = self.ehlo(&client_id).await?;

        if let (Some((connector, name)), EmailTls::StartTls) = (&plan.tls, relay.tls) {
            if !server.supports_feature(Extension::StartTls) {
                return Err(self.permanent("the relay does not offer STARTTLS".into()));
            }
            let reply = self
                .exchange(&StarttlsCommand.to_string(), "STARTTLS")
                .await?;
            self.expect(&reply, "STARTTLS", &[220])?;
            let reader = self
                .reader
                .take()
                .ok_or_else(|| self.transient("not connected".into()))?;
            if !reader.buffer().is_empty() {
                // Bytes sent before the handshake would be read as if they came through TLS
                // (the STARTTLS command injection attack); refuse to continue.
                return Err(self.permanent("the relay sent data before the TLS handshake".into()));
            }
            let tls = self.handshake(connector, name, reader.into_inner()).await?;
            self.reader = Some(BufReader::new(Box::new(tls)));
            server = self.ehlo(&client_id).await?;
        }

        if let Some((_, credentials)) = &plan.credentials {
            self.authenticate(&server, credentials).await?;
        }

        let text = message::build(message, relay.from, relay.to);
        let mut mail_parameters = Vec::new();
        if message::is_8bit(&text) && server.supports_feature(Extension::EightBitMime) {
            mail_parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mail = MailCommand::new(Some(plan.from.clone()), mail_parameters);
        let reply = self.exchange(&mail.to_string(), "MAIL FROM").await?;
        self.expect(&reply, "MAIL FROM", &[250])?;
        for (index, to) in plan.to.iter().enumerate() {
            let rcpt = RcptCommand::new(to.clone(), Vec::new());
            let step = format!("RCPT TO (recipient {})", index + 1);
            let reply = self.exchange(&rcpt.to_string(), &step).await?;
            self.expect(&reply, &step, &[250, 251])?;
        }
        let reply = self.exchange(&DataCommand.to_string(), "DATA").await?;
        self.expect(&reply, "DATA", &[354])?;
        self.write(&message::dot_stuffed(&text), "the message")
            .await?;
        let reply = self.read_reply("the message").await?;
        self.expect(&reply, "the message", &[250])?;

        // The relay has taken the message; a failed QUIT changes nothing.
        let _ =
            tokio::time::timeout(QUIT_WAIT, self.exchange(&QuitCommand.to_string(), "QUIT")).await;
        Ok(())
    }

    async fn ehlo(&mut self, client_id: &ClientId) -> Result<ServerInfo, DeliveryError> {
        let ehlo = EhloCommand::new(client_id.clone());
        let reply = self.exchange(&ehlo.to_string(), "EHLO").await?;
        self.expect(&reply, "EHLO", &[250])?;
        ServerInfo::from_response(&reply)
            .map_err(|err| self.transient(format!("unreadable EHLO reply: {err}")))
    }

    /// AUTH PLAIN when offered, else AUTH LOGIN. The command text holds the password in
    /// base64, so it is written here and never logged.
    async fn authenticate(
        &mut self,
        server: &ServerInfo,
        credentials: &Credentials,
    ) -> Result<(), DeliveryError> {
        let mechanism = if server.supports_auth_mechanism(Mechanism::Plain) {
            Mechanism::Plain
        } else if server.supports_auth_mechanism(Mechanism::Login) {
            Mechanism::Login
        } else {
            return Err(self.permanent(
                "credentials are configured but the relay offers neither AUTH PLAIN nor AUTH LOGIN"
                    .into(),
            ));
        };
        let command = AuthCommand::new(mechanism, credentials.clone(), None)
            .map_err(|err| self.permanent(format!("AUTH {mechanism}: {err}")))?;
        let step = format!("AUTH {mechanism}");
        let mut reply = self.exchange(&command.to_string(), &step).await?;
        for _ in 0..MAX_AUTH_CHALLENGES {
            if code(&reply) != 334 {
                break;
            }
            let answer = AuthCommand::new_from_response(mechanism, credentials.clone(), &reply)
                .map_err(|err| self.permanent(format!("{step}: unexpected challenge: {err}")))?;
            reply = self.exchange(&answer.to_string(), &step).await?;
        }
        self.expect(&reply, &step, &[235])
    }

    async fn handshake<S: Io + 'static>(
        &self,
        connector: &TlsConnector,
        name: &ServerName<'static>,
        stream: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>, DeliveryError> {
        connector
            .connect(name.clone(), stream)
            .await
            .map_err(|err| {
                let detail = format!("TLS handshake failed: {err}");
                if is_certificate_error(&err) {
                    self.permanent(detail)
                } else {
                    self.transient(detail)
                }
            })
    }

    async fn exchange(&mut self, command: &str, step: &str) -> Result<Response, DeliveryError> {
        self.write(command.as_bytes(), step).await?;
        self.read_reply(step).await
    }

    async fn write(&mut self, bytes: &[u8], step: &str) -> Result<(), DeliveryError> {
        let what = self.what;
        let reader = self
            .reader
            .as_mut()
            .ok_or_else(|| DeliveryError::Transient(format!("{what}: not connected")))?;
        let stream = reader.get_mut();
        let written = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        }
        .await;
        written.map_err(|err| self.transient(format!("sending {step} failed: {err}")))
    }

    /// Reads one (possibly multi-line) reply and parses it with async-smtp's parser.
    async fn read_reply(&mut self, step: &str) -> Result<Response, DeliveryError> {
        let what = self.what;
        let reader = self
            .reader
            .as_mut()
            .ok_or_else(|| DeliveryError::Transient(format!("{what}: not connected")))?;
        let mut raw = String::new();
        for _ in 0..MAX_REPLY_LINES {
            let mut line = Vec::with_capacity(128);
            let read = (&mut *reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .await
                .map_err(|err| {
                    DeliveryError::Transient(format!(
                        "{what}: reading the reply to {step} failed: {err}"
                    ))
                })?;
            if read == 0 {
                return Err(DeliveryError::Transient(format!(
                    "{what}: the relay closed the connection before answering {step}"
                )));
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            raw.push_str(text);
            if text.len() == 3 {
                // async-smtp's parser wants a space after the code even with no text.
                raw.push(' ');
            }
            raw.push_str("\r\n");
            match text.as_bytes().get(3) {
                None | Some(b' ') => {
                    return Response::from_str(&raw).map_err(|_| {
                        DeliveryError::Transient(format!(
                            "{what}: unparseable reply to {step}: {}",
                            truncate_words(&raw, MAX_REPLY_TEXT)
                        ))
                    });
                }
                Some(b'-') => {}
                Some(_) => {
                    return Err(DeliveryError::Transient(format!(
                        "{what}: malformed reply to {step}: {}",
                        truncate_words(text, MAX_REPLY_TEXT)
                    )));
                }
            }
        }
        Err(DeliveryError::Transient(format!(
            "{what}: reply to {step} longer than {MAX_REPLY_LINES} lines"
        )))
    }

    /// `Ok` when the reply's code is one of `accepted`; otherwise 5xx is permanent and
    /// everything else (4xx, or a code that makes no sense here) transient.
    fn expect(&self, reply: &Response, step: &str, accepted: &[u16]) -> Result<(), DeliveryError> {
        let code = code(reply);
        if accepted.contains(&code) {
            return Ok(());
        }
        let mut detail = format!("the relay answered {step} with {code}");
        let text = reply.message.join(" ");
        if !text.trim().is_empty() {
            let _ = write!(detail, " {}", truncate_words(&text, MAX_REPLY_TEXT));
        }
        if (500..600).contains(&code) {
            Err(self.permanent(detail))
        } else {
            Err(self.transient(detail))
        }
    }

    fn transient(&self, detail: String) -> DeliveryError {
        DeliveryError::Transient(format!("{}: {detail}", self.what))
    }

    fn permanent(&self, detail: String) -> DeliveryError {
        DeliveryError::Permanent(format!("{}: {detail}", self.what))
    }
}

/// The numeric reply code (0 if async-smtp ever printed something else).
fn code(reply: &Response) -> u16 {
    reply.code.to_string().parse().unwrap_or(0)
}

fn address(raw: &str) -> Result<EmailAddress, String> {
    if !raw.contains('@') {
        return Err(format!("{raw:?} has no @"));
    }
    EmailAddress::new(raw.to_owned()).map_err(|_| format!("{raw:?} is not a plain address"))
}

/// `localhost`, or an IP address in 127.0.0.0/8 or `::1`.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Public web PKI roots plus the operator's extra CAs, with the ring provider named
/// explicitly so nothing depends on a process-wide default.
fn tls_config(extra_ca_pem: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err("extra_ca_pem holds no PEM certificate".into());
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|err| format!("extra_ca_pem certificate rejected: {err}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS setup: {err}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Whether a failed handshake was the certificate's fault (wrong name, unknown CA, expired),
/// which retrying will not fix.
fn is_certificate_error(err: &io::Error) -> bool {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|err| {
            matches!(
                err,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tw_core::Timestamp;

    fn message() -> Message {
        Message {
            id: "e1".into(),
            kind: "firing".into(),
            severity: "critical".into(),
            tenant: "contoso".into(),
            check: "smtp_rcpt".into(),
            target: "ceo@contoso.com".into(),
            status: "critical".into(),
            reason: "recipient_rejected".into(),
            title: "t".into(),
            short: "s".into(),
            body: "b".into(),
            since: Timestamp(0),
            at: Timestamp(0),
            link: None,
        }
    }

    fn relay(port: u16, tls: EmailTls, host: &str) -> Relay<'_> {
        Relay {
            host,
            port,
            tls,
            username: None,
            password: None,
            from: "alerts@msp.example",
            to: &[],
            extra_ca_pem: None,
        }
    }

    #[tokio::test]
    async fn a_silent_relay_is_transient_within_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and never says a word (a tarpit).
        let _keep = tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let to = ["oncall@msp.example".to_owned()];
        let relay = Relay {
            to: &to,
            ..relay(port, EmailTls::None, "127.0.0.1")
        };
        let started = tokio::time::Instant::now();
        let err = relay
            .send(&message(), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(err.to_string().contains("no complete answer"), "{err}");
    }

    #[tokio::test]
    async fn configuration_problems_are_permanent() {
        let to = ["oncall@msp.example".to_owned()];
        let cases = [
            (
                Relay {
                    to: &to,
                    ..relay(25, EmailTls::None, "relay.example.com")
                },
                "loopback",
            ),
            (relay(25, EmailTls::None, "127.0.0.1"), "no recipients"),
        ];
        for (relay, expect) in cases {
            let err = relay.send(&message(), SMTP_TIMEOUT).await.unwrap_err();
            assert!(!err.is_transient(), "{err}");
            assert!(err.to_string().contains(expect), "{err}");
        }
        let password = Secret::new("pw");
        let half = Relay {
            password: Some(&password),
            to: &to,
            ..relay(25, EmailTls::None, "::1")
        };
        let err = half.send(&message(), SMTP_TIMEOUT).await.unwrap_err();
        assert!(err.to_string().contains("without a username"), "{err}");
        let bad_ca = Relay {
            to: &to,
            extra_ca_pem: Some("not pem"),
            ..relay(465, EmailTls::Implicit, "relay.example.com")
        };
        let err = bad_ca.send(&message(), SMTP_TIMEOUT).await.unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["relay.example.com", "10.0.0.1", "localhost.example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
