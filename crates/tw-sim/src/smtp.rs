//! An SMTP server on loopback that answers like Exchange Online Protection (EOP), so probe
//! conversations can be tested end to end without the internet.
//!
//! The session shape, reply texts and DBEB rejection follow reference §4.3 and §4.4. Each
//! recipient's answer and each fault (tarpit, drop mid-dialogue, slow replies, refusing
//! greeting) is scriptable while the server runs, because probe tests flip an address from
//! accepted to gone and expect the next conversation to see it.
//!
//! For the mailflow check it also stands in for the path a real message takes: a submission
//! relay (AUTH PLAIN or LOGIN, STARTTLS or TLS from the first byte) in front of Exchange
//! Online. It then takes DATA, and for a recipient that Exchange accepts at RCPT but cannot
//! deliver to (reference §4.5) it writes the NDR Exchange would send into the sender's
//! Maildir. `saw_data` still records every DATA, so RCPT-only probes stay checkable.

mod auth;
mod clock;
mod dsn;
mod line;
mod maildir;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::ServerConfig;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::clock::UtcTime;
use self::line::{read_line, Line};

pub use self::dsn::{exchange_online_ndr, NdrRequest, EXCHANGE_REPORTING_MTA};
pub use self::maildir::deliver_to_maildir;

/// Largest message DATA accepted (EOP advertises 150 MiB; tests never need more than this).
const MAX_MESSAGE: u64 = 4 * 1024 * 1024;

/// How the simulator answers `RCPT TO` for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptBehaviour {
    /// `250 2.1.5 Recipient OK`.
    Accept,
    /// Directory-Based Edge Blocking: `550 5.4.1 Recipient address rejected: Access denied.
    /// AS(201806281) [<banner host> <timestamp> <hex id>]`.
    RejectUnknown,
    /// Exactly these reply lines, joined by `"\n"` without CRLF; each is sent with CRLF. A
    /// multi-line reply must already carry its `550-` continuation markers.
    Reply(String),
    /// `250 2.1.5 Recipient OK` at RCPT, then, once the message is taken, an NDR with
    /// `550 5.1.10 RESOLVER.ADR.RecipientNotFound` into the bounce Maildir: an address that
    /// is still in the directory but has no usable mailbox (reference §4.5).
    AcceptThenBounce,
}

impl ReceivedMessage {
    /// The first value of header `name` (case-insensitive), unfolded and trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            match &mut value {
                Some(found) if line.starts_with([' ', '\t']) => found.push_str(line),
                Some(_) => break,
                None => {
                    if let Some((key, rest)) = line.split_once(':') {
                        if key.eq_ignore_ascii_case(name) {
                            value = Some(rest.to_owned());
                        }
                    }
                }
            }
        }
        value.map(|v| v.trim().to_owned())
    }
}

/// See [`SmtpSim::set_delivery_hook`]: the message and the recipients it reached.
pub type DeliveryHook = std::sync::Arc<dyn Fn(&ReceivedMessage, &[String]) + Send + Sync>;

/// A message the simulator took at DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub mail_from: String,
    pub recipients: Vec<String>,
    /// The message as received, dot-unstuffed, CRLF line endings.
    pub data: String,
    /// The AUTH user of the session, if it authenticated.
    pub authenticated_as: Option<String>,
    /// Where the NDRs written for this message went.
    pub bounces: Vec<PathBuf>,
}

/// A misbehaviour the server applies to every new command or connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpFault {
    None,
    /// Accept TCP and never send a byte; the socket stays open until shutdown.
    Tarpit,
    /// Close the connection right after receiving this command, without replying.
    DropAfter(SmtpStep),
    /// Delay every reply, the greeting included, by this long.
    Delay(Duration),
    /// Send these line(s) instead of the 220 greeting, then close.
    Greeting(String),
}

/// The points in a dialogue where `SmtpFault::DropAfter` can cut the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpStep {
    /// Right after accept, before the greeting.
    Greeting,
    /// `EHLO` or `HELO`.
    Ehlo,
    StartTls,
    Mail,
    Rcpt,
    Rset,
    Quit,
}

/// How an `SmtpSim` presents itself.
#[derive(Debug, Clone)]
pub struct SmtpSimConfig {
    /// The EOP frontend name in the greeting and EHLO, e.g.
    /// `AM5EUR02FT017.mail.protection.outlook.com`; not the tenant's MX name (reference §4.3).
    pub banner_host: String,
    /// `None` means STARTTLS is not offered.
    pub tls: Option<Arc<ServerConfig>>,
    /// `true` models an Internal Relay domain: every recipient not set explicitly is accepted.
    /// Otherwise unknown recipients get the DBEB rejection.
    pub accept_all: bool,
}

/// A running EOP-like SMTP server bound to `127.0.0.1`.
#[derive(Clone)]
pub struct SmtpSim {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for SmtpSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSim")
            .field("local_addr", &self.local_addr)
            .field("banner_host", &self.shared.banner_host)
            .finish_non_exhaustive()
    }
}

struct Shared {
    banner_host: String,
    tls: Option<tokio_rustls::TlsAcceptor>,
    accept_all: AtomicBool,
    recipients: Mutex<HashMap<String, RcptBehaviour>>,
    fault: Mutex<SmtpFault>,
    sessions: AtomicU64,
    rcpt_log: Mutex<Vec<String>>,
    saw_data: AtomicBool,
    /// TLS from the first byte (a submission port such as 465) instead of STARTTLS.
    implicit_tls: bool,
    /// User name and password a client must AUTH with before MAIL.
    auth: Mutex<Option<(String, String)>>,
    bounce_maildir: Mutex<Option<PathBuf>>,
    messages: Mutex<Vec<ReceivedMessage>>,
    delivery_hook: Mutex<Option<DeliveryHook>>,
}

impl SmtpSim {
    /// Binds `127.0.0.1:0` and serves until `shutdown` is cancelled; every connection task
    /// watches the same token, so cancelling it also ends tarpitted and slow sessions.
    pub async fn start(
        config: SmtpSimConfig,
        shutdown: CancellationToken,
    ) -> std::io::Result<SmtpSim> {
        SmtpSim::bind(config, false, shutdown).await
    }

    /// Like [`SmtpSim::start`], but TLS starts with the first byte (SMTPS, as on port 465)
    /// with `config.tls`, which must be set; STARTTLS is then neither offered nor accepted.
    pub async fn start_implicit_tls(
        config: SmtpSimConfig,
        shutdown: CancellationToken,
    ) -> std::io::Result<SmtpSim> {
        if config.tls.is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "implicit TLS needs SmtpSimConfig::tls",
            ));
        }
        SmtpSim::bind(config, true, shutdown).await
    }

    async fn bind(
        config: SmtpSimConfig,
        implicit_tls: bool,
        shutdown: CancellationToken,
    ) -> std::io::Result<SmtpSim> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            banner_host: config.banner_host,
            tls: config.tls.map(tokio_rustls::TlsAcceptor::from),
            accept_all: AtomicBool::new(config.accept_all),
            recipients: Mutex::new(HashMap::new()),
            fault: Mutex::new(SmtpFault::None),
            sessions: AtomicU64::new(0),
            rcpt_log: Mutex::new(Vec::new()),
            saw_data: AtomicBool::new(false),
            implicit_tls,
            auth: Mutex::new(None),
            bounce_maildir: Mutex::new(None),
            delivery_hook: Mutex::new(None),
            messages: Mutex::new(Vec::new()),
        });
        let tracker = TaskTracker::new();
        tracker.spawn(run(
            listener,
            Arc::clone(&shared),
            shutdown,
            tracker.clone(),
        ));
        tracker.close();
        Ok(SmtpSim { shared, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sets how `RCPT TO` for `address` is answered; the address is matched case-insensitively
    /// because EOP treats the local part case-insensitively too.
    pub fn set_recipient(&self, address: &str, behaviour: RcptBehaviour) {
        self.shared
            .recipients
            .lock()
            .insert(normalize_address(address), behaviour);
    }

    pub fn set_accept_all(&self, on: bool) {
        self.shared.accept_all.store(on, Ordering::SeqCst);
    }

    /// Applies to connections and commands from now on, including sessions already open.
    pub fn set_fault(&self, fault: SmtpFault) {
        *self.shared.fault.lock() = fault;
    }

    /// TCP sessions accepted so far.
    pub fn sessions(&self) -> u64 {
        self.shared.sessions.load(Ordering::SeqCst)
    }

    /// Every `RCPT TO` address received, as the client spelled it, in order.
    pub fn rcpt_log(&self) -> Vec<String> {
        self.shared.rcpt_log.lock().clone()
    }

    /// Whether any client ever sent `DATA` or `BDAT`; a probe never may.
    pub fn saw_data(&self) -> bool {
        self.shared.saw_data.load(Ordering::SeqCst)
    }

    /// From now on `AUTH` (PLAIN or LOGIN) with these credentials is offered (inside TLS
    /// when the server has TLS) and required before `MAIL`, as on a submission relay.
    pub fn require_auth(&self, username: &str, password: &str) {
        *self.shared.auth.lock() = Some((username.to_owned(), password.to_owned()));
    }

    /// Where NDRs for `RcptBehaviour::AcceptThenBounce` recipients are delivered: the Maildir
    /// of the envelope sender's mailbox. Without one they are dropped.
    pub fn set_bounce_maildir(&self, maildir: Option<PathBuf>) {
        *self.shared.bounce_maildir.lock() = maildir;
    }

    /// Called for every message taken at DATA with the recipients it was delivered to (not
    /// those bounced): lets a test or the demo put it into the Entra simulator's mailboxes,
    /// where the mailflow check looks for it through Graph.
    pub fn set_delivery_hook(&self, hook: Option<DeliveryHook>) {
        *self.shared.delivery_hook.lock() = hook;
    }

    /// Every message taken at DATA, in order.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.shared.messages.lock().clone()
    }
}

impl Shared {
    fn fault(&self) -> SmtpFault {
        self.fault.lock().clone()
    }

    fn rcpt_behaviour(&self, address: &str) -> RcptBehaviour {
        if let Some(behaviour) = self.recipients.lock().get(&normalize_address(address)) {
            return behaviour.clone();
        }
        if self.accept_all.load(Ordering::SeqCst) {
            RcptBehaviour::Accept
        } else {
            RcptBehaviour::RejectUnknown
        }
    }
}

fn normalize_address(address: &str) -> String {
    address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_ascii_lowercase()
}

async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually fd exhaustion; back off briefly instead of spinning on the error.
                tracing::debug!(%error, "SMTP sim accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        shared.sessions.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::clone(&shared);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            // Dropping the session future on cancellation closes the socket, which is how a
            // tarpitted or delayed session ends at shutdown.
            tokio::select! {
                _ = shutdown.cancelled() => {}
                result = serve(stream, peer, &shared) => {
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "SMTP sim session ended with error");
                    }
                }
            }
        });
    }
}

/// What the dialogue loop asks its caller to do when it returns.
enum Next {
    Close,
    StartTls,
}

/// Per-connection dialogue state; STARTTLS replaces it with a fresh one (RFC 3207 §4.2).
struct Session<'a> {
    shared: &'a Shared,
    peer: SocketAddr,
    /// The bracketed id EOP appends to its greeting and DBEB replies.
    session_id: String,
    in_tls: bool,
    greeted: bool,
    has_mail: bool,
    /// The AUTH user once authenticated.
    authenticated: Option<String>,
    /// The transaction: sender, `ENVID`, and recipients accepted (with whether they bounce).
    mail_from: String,
    envelope_id: Option<String>,
    recipients: Vec<(String, bool)>,
}

async fn serve(stream: TcpStream, peer: SocketAddr, shared: &Shared) -> std::io::Result<()> {
    let session_id = format!("{:016X}", fastrand::u64(..));
    let mut stream = stream;
    match shared.fault() {
        SmtpFault::Tarpit => {
            // Hold the socket open and silent; the caller's select ends this at shutdown.
            std::future::pending::<()>().await;
            return Ok(());
        }
        SmtpFault::DropAfter(SmtpStep::Greeting) => return Ok(()),
        SmtpFault::Greeting(lines) => {
            let session = Session::new(shared, peer, session_id, false);
            session.reply(&mut stream, &lines).await?;
            return stream.shutdown().await;
        }
        SmtpFault::None | SmtpFault::Delay(_) | SmtpFault::DropAfter(_) => {}
    }

    if shared.implicit_tls {
        let Some(acceptor) = &shared.tls else {
            return Ok(());
        };
        let mut tls_stream = acceptor.accept(stream).await?;
        let mut session = Session::new(shared, peer, session_id, true);
        session.greet(&mut tls_stream).await?;
        let mut reader = BufReader::new(tls_stream);
        session.dialogue(&mut reader).await?;
        return Ok(());
    }

    let mut session = Session::new(shared, peer, session_id.clone(), false);
    session.greet(&mut stream).await?;

    let mut reader = BufReader::new(stream);
    match session.dialogue(&mut reader).await? {
        Next::Close => return Ok(()),
        Next::StartTls => {}
    }
    let Some(acceptor) = &shared.tls else {
        return Ok(());
    };
    // Bytes a client pipelined after STARTTLS are dropped with the BufReader on purpose: they
    // arrived in clear text and must not be executed inside TLS (CVE-2011-0411 class).
    let tcp = reader.into_inner();
    let tls_stream = acceptor.accept(tcp).await?;
    let mut session = Session::new(shared, peer, session_id, true);
    let mut reader = BufReader::new(tls_stream);
    session.dialogue(&mut reader).await?;
    Ok(())
}

impl<'a> Session<'a> {
    fn new(shared: &'a Shared, peer: SocketAddr, session_id: String, in_tls: bool) -> Self {
        Session {
            shared,
            peer,
            session_id,
            in_tls,
            greeted: false,
            has_mail: false,
            authenticated: None,
            mail_from: String::new(),
            envelope_id: None,
            recipients: Vec::new(),
        }
    }

    async fn greet<W: AsyncWrite + Unpin>(&self, writer: &mut W) -> std::io::Result<()> {
        let greeting = format!(
            "220 {} Microsoft ESMTP MAIL Service ready at {} [{}]",
            self.shared.banner_host,
            UtcTime::now().rfc2822(),
            self.session_id
        );
        self.reply(writer, &greeting).await
    }

    fn reset(&mut self) {
        self.has_mail = false;
        self.mail_from.clear();
        self.envelope_id = None;
        self.recipients.clear();
    }

    /// Whether AUTH is offered in this state: configured, and inside TLS when there is TLS.
    fn auth_offered(&self) -> bool {
        self.shared.auth.lock().is_some() && (self.in_tls || self.shared.tls.is_none())
    }

    /// Writes each `"\n"`-separated line of `text` with CRLF, after the configured delay.
    async fn reply<W: AsyncWrite + Unpin>(
        &self,
        writer: &mut W,
        text: &str,
    ) -> std::io::Result<()> {
        if let SmtpFault::Delay(delay) = self.shared.fault() {
            tokio::time::sleep(delay).await;
        }
        let mut out = String::with_capacity(text.len() + 8);
        for line in text.split('\n') {
            out.push_str(line.trim_end_matches('\r'));
            out.push_str("\r\n");
        }
        writer.write_all(out.as_bytes()).await?;
        writer.flush().await
    }

    async fn dialogue<S>(&mut self, stream: &mut BufReader<S>) -> std::io::Result<Next>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let command = match read_line(stream).await? {
                Line::Eof => return Ok(Next::Close),
                Line::TooLong | Line::NotUtf8 => {
                    self.reply(stream, "500 5.3.3 Unrecognized command").await?;
                    continue;
                }
                Line::Text(text) => text,
            };
            let (verb, argument) = match command.split_once(' ') {
                Some((verb, argument)) => (verb.to_ascii_uppercase(), argument.trim()),
                None => (command.trim().to_ascii_uppercase(), ""),
            };

            if let Some(step) = step_of(&verb) {
                if self.shared.fault() == SmtpFault::DropAfter(step) {
                    if step == SmtpStep::Rcpt {
                        // Logged anyway so a test can tell the probe got as far as RCPT.
                        if let Some(address) = rcpt_address(argument) {
                            self.shared.rcpt_log.lock().push(address);
                        }
                    }
                    return Ok(Next::Close);
                }
            }

            let reply = match verb.as_str() {
                "EHLO" => {
                    self.greeted = true;
                    self.reset();
                    self.ehlo_reply()
                }
                "HELO" => {
                    self.greeted = true;
                    self.reset();
                    format!("250 {} Hello [{}]", self.shared.banner_host, self.peer.ip())
                }
                "STARTTLS" => {
                    if self.shared.tls.is_none() || self.shared.implicit_tls {
                        // Not advertised, so to this server it is just an unknown verb.
                        "500 5.3.3 Unrecognized command".to_string()
                    } else if self.in_tls {
                        "503 5.5.1 Bad sequence of commands: TLS already active".to_string()
                    } else {
                        self.reply(stream, "220 2.0.0 SMTP server ready").await?;
                        return Ok(Next::StartTls);
                    }
                }
                "MAIL" => self.mail(argument),
                "RCPT" => self.rcpt(argument),
                "RSET" => {
                    self.reset();
                    "250 2.0.0 Resetting".to_string()
                }
                "AUTH" => match self.auth(stream, argument).await? {
                    Some(reply) => reply,
                    None => return Ok(Next::Close),
                },
                "NOOP" => "250 2.0.0 OK".to_string(),
                "QUIT" => {
                    self.reply(stream, "221 2.0.0 Service closing transmission channel")
                        .await?;
                    stream.shutdown().await?;
                    return Ok(Next::Close);
                }
                "DATA" => {
                    // Recorded because an RCPT-only probe must never get this far.
                    self.shared.saw_data.store(true, Ordering::SeqCst);
                    if !self.has_mail || self.recipients.is_empty() {
                        "554 5.5.1 Error: no valid recipients".to_string()
                    } else {
                        self.reply(stream, "354 Start mail input; end with <CRLF>.<CRLF>")
                            .await?;
                        match read_data(stream).await? {
                            None => return Ok(Next::Close),
                            Some(Err(reply)) => {
                                self.reset();
                                reply.to_string()
                            }
                            Some(Ok(data)) => self.take_message(data),
                        }
                    }
                }
                "BDAT" => {
                    // CHUNKING is advertised as EOP does, but only DATA is implemented.
                    self.shared.saw_data.store(true, Ordering::SeqCst);
                    "554 5.5.1 Error: no valid recipients".to_string()
                }
                _ => "500 5.3.3 Unrecognized command".to_string(),
            };
            self.reply(stream, &reply).await?;
        }
    }

    fn ehlo_reply(&self) -> String {
        let host = &self.shared.banner_host;
        let mut lines = vec![
            format!("250-{host} Hello [{}]", self.peer.ip()),
            "250-SIZE 157286400".to_string(),
            "250-PIPELINING".to_string(),
            "250-DSN".to_string(),
            "250-ENHANCEDSTATUSCODES".to_string(),
        ];
        if self.shared.tls.is_some() && !self.in_tls {
            lines.push("250-STARTTLS".to_string());
        }
        if self.auth_offered() {
            lines.push("250-AUTH PLAIN LOGIN".to_string());
        }
        lines.extend(
            [
                "250-8BITMIME",
                "250-BINARYMIME",
                "250-CHUNKING",
                "250 SMTPUTF8",
            ]
            .map(str::to_string),
        );
        lines.join("\n")
    }

    fn mail(&mut self, argument: &str) -> String {
        if !self.greeted {
            return "503 5.5.1 Send hello first".to_string();
        }
        if self.has_mail {
            return "503 5.5.1 Sender already specified".to_string();
        }
        if !has_prefix_ignore_case(argument, "FROM:") {
            return "501 5.5.4 Invalid arguments".to_string();
        }
        if self.shared.auth.lock().is_some() && self.authenticated.is_none() {
            return format!(
                "530 5.7.57 Client not authenticated to send mail [{}]",
                self.shared.banner_host
            );
        }
        let rest = argument.get(5..).unwrap_or("").trim_start();
        let (address, parameters) = match rest.strip_prefix('<') {
            Some(bracketed) => match bracketed.split_once('>') {
                Some((address, parameters)) => (address, parameters),
                None => return "501 5.5.4 Invalid arguments".to_string(),
            },
            None => rest.split_once(' ').unwrap_or((rest, "")),
        };
        self.has_mail = true;
        self.mail_from = address.to_string();
        self.envelope_id = parameters
            .split_whitespace()
            .find_map(|p| {
                p.get(..6)
                    .filter(|k| k.eq_ignore_ascii_case("ENVID="))
                    .and(p.get(6..))
            })
            .map(str::to_string);
        "250 2.1.0 Sender OK".to_string()
    }

    fn rcpt(&mut self, argument: &str) -> String {
        if !self.has_mail {
            return "503 5.5.1 Need mail command".to_string();
        }
        let Some(address) = rcpt_address(argument) else {
            return "501 5.5.4 Invalid arguments".to_string();
        };
        let behaviour = self.shared.rcpt_behaviour(&address);
        self.shared.rcpt_log.lock().push(address.clone());
        match behaviour {
            RcptBehaviour::Accept => {
                self.recipients.push((address, false));
                "250 2.1.5 Recipient OK".to_string()
            }
            RcptBehaviour::AcceptThenBounce => {
                self.recipients.push((address, true));
                "250 2.1.5 Recipient OK".to_string()
            }
            RcptBehaviour::RejectUnknown => format!(
                "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [{} {} {}]",
                self.shared.banner_host,
                UtcTime::now().iso8601(),
                self.session_id
            ),
            RcptBehaviour::Reply(lines) => {
                if lines.starts_with('2') {
                    self.recipients.push((address, false));
                }
                lines
            }
        }
    }

    /// AUTH PLAIN (with or without an initial response) or AUTH LOGIN; the reply to send, or
    /// `None` when the client hung up mid-exchange.
    async fn auth<S>(
        &mut self,
        stream: &mut BufReader<S>,
        argument: &str,
    ) -> std::io::Result<Option<String>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let expected = self.shared.auth.lock().clone();
        let Some((user, password)) = expected.filter(|_| self.auth_offered()) else {
            return Ok(Some("503 5.5.1 Bad sequence of commands".to_string()));
        };
        if self.authenticated.is_some() {
            return Ok(Some("503 5.5.1 Already authenticated".to_string()));
        }
        let (mechanism, initial) = match argument.split_once(' ') {
            Some((mechanism, initial)) => (mechanism.to_ascii_uppercase(), Some(initial.trim())),
            None => (argument.trim().to_ascii_uppercase(), None),
        };
        let given = match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(initial) => initial.to_string(),
                    None => match self.challenge(stream, "").await? {
                        Some(response) => response,
                        None => return Ok(None),
                    },
                };
                auth::plain_credentials(&response)
            }
            "LOGIN" => {
                let Some(user_line) = self
                    .challenge(stream, &auth::encode_base64(b"Username:"))
                    .await?
                else {
                    return Ok(None);
                };
                let Some(password_line) = self
                    .challenge(stream, &auth::encode_base64(b"Password:"))
                    .await?
                else {
                    return Ok(None);
                };
                auth::login_value(&user_line).zip(auth::login_value(&password_line))
            }
            _ => {
                return Ok(Some(
                    "504 5.7.4 Unrecognized authentication type".to_string(),
                ))
            }
        };
        Ok(Some(match given {
            Some((given_user, given_password))
                if given_user == user && given_password == password =>
            {
                self.authenticated = Some(given_user);
                "235 2.7.0 Authentication successful".to_string()
            }
            Some(_) => "535 5.7.3 Authentication unsuccessful".to_string(),
            None => "501 5.5.2 Cannot decode response".to_string(),
        }))
    }

    /// Sends `334 <challenge>` and reads the client's one-line answer.
    async fn challenge<S>(
        &mut self,
        stream: &mut BufReader<S>,
        challenge: &str,
    ) -> std::io::Result<Option<String>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let line = if challenge.is_empty() {
            "334 ".to_string()
        } else {
            format!("334 {challenge}")
        };
        self.reply(stream, &line).await?;
        match read_line(stream).await? {
            Line::Text(text) => Ok(Some(text)),
            Line::TooLong | Line::NotUtf8 => Ok(Some(String::new())),
            Line::Eof => Ok(None),
        }
    }

    /// Keeps the message, writes the NDRs Exchange would send for bouncing recipients, and
    /// answers as EOP does once a message is queued.
    fn take_message(&mut self, data: String) -> String {
        let recipients = std::mem::take(&mut self.recipients);
        let headers_end = data.find("\r\n\r\n").map_or(data.len(), |end| end + 2);
        let original_headers = data.get(..headers_end).unwrap_or_default().to_string();
        let maildir = self.shared.bounce_maildir.lock().clone();
        let mut bounces = Vec::new();
        // A null sender (itself a bounce) never gets an NDR back (RFC 5321 §4.5.5).
        if !self.mail_from.is_empty() {
            for (recipient, _) in recipients.iter().filter(|(_, bounce)| *bounce) {
                let ndr = exchange_online_ndr(&NdrRequest {
                    to: self.mail_from.clone(),
                    recipient: recipient.clone(),
                    original_headers: original_headers.clone(),
                    envelope_id: self.envelope_id.clone(),
                    received_from: format!("[{}]", self.peer.ip()),
                });
                match &maildir {
                    Some(dir) => match deliver_to_maildir(dir, ndr.as_bytes()) {
                        Ok(path) => bounces.push(path),
                        Err(error) => {
                            tracing::warn!(%error, dir = %dir.display(), "SMTP sim could not write an NDR")
                        }
                    },
                    None => {
                        tracing::debug!(%recipient, "SMTP sim has no bounce Maildir; NDR dropped")
                    }
                }
            }
        }
        let delivered: Vec<String> = recipients
            .iter()
            .filter(|(_, bounce)| !*bounce)
            .map(|(address, _)| address.clone())
            .collect();
        let message = ReceivedMessage {
            mail_from: std::mem::take(&mut self.mail_from),
            recipients: recipients.into_iter().map(|(address, _)| address).collect(),
            data,
            authenticated_as: self.authenticated.clone(),
            bounces,
        };
        let hook = self.shared.delivery_hook.lock().clone();
        if let Some(hook) = hook {
            hook(&message, &delivered);
        }
        self.shared.messages.lock().push(message);
        self.reset();
        format!(
            "250 2.6.0 <{:016X}@{}> [InternalId={}, Hostname={}] Queued mail for delivery",
            fastrand::u64(..),
            self.shared.banner_host,
            fastrand::u64(..10_000_000_000_000),
            self.shared.banner_host
        )
    }
}

/// Reads message data up to the lone `.` line and undoes dot-stuffing. `None` if the client
/// hung up; `Some(Err(reply))` if the message was too large (the rest is read and discarded
/// so the dialogue stays in step).
async fn read_data<S>(
    stream: &mut BufReader<S>,
) -> std::io::Result<Option<Result<String, &'static str>>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut data = String::new();
    let mut too_large = false;
    loop {
        let mut line = Vec::new();
        let read = (&mut *stream)
            .take(MAX_MESSAGE)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text == "." {
            break;
        }
        if too_large {
            continue;
        }
        let text = text.strip_prefix('.').unwrap_or(text);
        data.push_str(text);
        data.push_str("\r\n");
        if data.len() as u64 > MAX_MESSAGE {
            too_large = true;
            data.clear();
        }
    }
    if too_large {
        return Ok(Some(Err(
            "552 5.3.4 Message size exceeds fixed maximum message size",
        )));
    }
    Ok(Some(Ok(data)))
}

fn step_of(verb: &str) -> Option<SmtpStep> {
    match verb {
        "EHLO" | "HELO" => Some(SmtpStep::Ehlo),
        "STARTTLS" => Some(SmtpStep::StartTls),
        "MAIL" => Some(SmtpStep::Mail),
        "RCPT" => Some(SmtpStep::Rcpt),
        "RSET" => Some(SmtpStep::Rset),
        "QUIT" => Some(SmtpStep::Quit),
        _ => None,
    }
}

fn has_prefix_ignore_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// The address in `TO:<address> [params]`, without brackets; `None` if there is no `TO:`.
fn rcpt_address(argument: &str) -> Option<String> {
    if !has_prefix_ignore_case(argument, "TO:") {
        return None;
    }
    let rest = argument.get(3..)?.trim_start();
    let address = match rest.strip_prefix('<') {
        Some(bracketed) => bracketed.split('>').next().unwrap_or(""),
        None => rest.split(' ').next().unwrap_or(""),
    };
    Some(address.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcpt_address_parsing() {
        let check = |argument: &str, expect: Option<&str>| {
            assert_eq!(rcpt_address(argument).as_deref(), expect, "{argument}");
        };
        check("TO:<admin@contoso.com>", Some("admin@contoso.com"));
        check(
            "to: <Admin@Contoso.com> NOTIFY=NEVER",
            Some("Admin@Contoso.com"),
        );
        check("TO:bare@contoso.com", Some("bare@contoso.com"));
        check("TO:<>", Some(""));
        check("FROM:<a@b>", None);
        check("", None);
        check("tö:<x>", None);
    }
}
