//! An SMTP server on loopback that answers like Exchange Online Protection (EOP), so probe
//! conversations can be tested end to end without the internet.
//!
//! The session shape, reply texts and DBEB rejection follow reference §4.3 and §4.4. Each
//! recipient's answer and each fault (tarpit, drop mid-dialogue, slow replies, refusing
//! greeting) is scriptable while the server runs, because probe tests flip an address from
//! accepted to gone and expect the next conversation to see it.

mod clock;
mod line;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::clock::UtcTime;
use self::line::{read_line, Line};

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
}

impl SmtpSim {
    /// Binds `127.0.0.1:0` and serves until `shutdown` is cancelled; every connection task
    /// watches the same token, so cancelling it also ends tarpitted and slow sessions.
    pub async fn start(
        config: SmtpSimConfig,
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

    let mut session = Session::new(shared, peer, session_id.clone(), false);
    let greeting = format!(
        "220 {} Microsoft ESMTP MAIL Service ready at {} [{}]",
        shared.banner_host,
        UtcTime::now().rfc2822(),
        session_id
    );
    session.reply(&mut stream, &greeting).await?;

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
        }
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
                    self.has_mail = false;
                    self.ehlo_reply()
                }
                "HELO" => {
                    self.greeted = true;
                    self.has_mail = false;
                    format!("250 {} Hello [{}]", self.shared.banner_host, self.peer.ip())
                }
                "STARTTLS" => {
                    if self.shared.tls.is_none() {
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
                    self.has_mail = false;
                    "250 2.0.0 Resetting".to_string()
                }
                "NOOP" => "250 2.0.0 OK".to_string(),
                "QUIT" => {
                    self.reply(stream, "221 2.0.0 Service closing transmission channel")
                        .await?;
                    stream.shutdown().await?;
                    return Ok(Next::Close);
                }
                "DATA" | "BDAT" => {
                    // Recorded because a probe must never get this far; the simulator does not
                    // implement message transfer, so it refuses the data phase outright.
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
        self.has_mail = true;
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
        self.shared.rcpt_log.lock().push(address);
        match behaviour {
            RcptBehaviour::Accept => "250 2.1.5 Recipient OK".to_string(),
            RcptBehaviour::RejectUnknown => format!(
                "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [{} {} {}]",
                self.shared.banner_host,
                UtcTime::now().iso8601(),
                self.session_id
            ),
            RcptBehaviour::Reply(lines) => lines,
        }
    }
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
