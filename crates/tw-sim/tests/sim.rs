//! Drives the SMTP and DNS simulators through real loopback sockets, the way a probe would,
//! so the fakes themselves are held to the reference before probes are tested against them.

// clippy's allow-unwrap-in-tests covers `#[test]` functions but not the helpers beside them; in
// this file every function is test code, and a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tw_sim::dns::{DnsFault, DnsSim, SimRecord};
use tw_sim::smtp::{RcptBehaviour, SmtpFault, SmtpSim, SmtpSimConfig, SmtpStep};
use tw_sim::tls::{untrusted_server_config, TestCa};

const BANNER: &str = "AM5EUR02FT017.mail.protection.outlook.com";
const MX_NAME: &str = "contoso-com.mail.protection.outlook.com";
const WAIT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// SMTP helpers

struct Client<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S) -> Self {
        Client {
            stream: BufReader::new(stream),
        }
    }

    async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = timeout(WAIT, self.stream.read_line(&mut line))
            .await
            .expect("server did not answer in time")
            .ok()?;
        if n == 0 {
            return None;
        }
        assert!(line.ends_with("\r\n"), "line without CRLF: {line:?}");
        line.truncate(line.len() - 2);
        Some(line)
    }

    /// A whole reply: lines up to the one whose fourth byte is a space.
    async fn reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await.expect("connection closed mid-reply");
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    async fn send(&mut self, command: &str) {
        self.stream
            .get_mut()
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .unwrap();
    }

    async fn ask(&mut self, command: &str) -> Vec<String> {
        self.send(command).await;
        self.reply().await
    }

    async fn ask_one(&mut self, command: &str) -> String {
        let mut reply = self.ask(command).await;
        assert_eq!(reply.len(), 1, "expected one line: {reply:?}");
        reply.remove(0)
    }

    /// True if the server closes the connection without sending anything more.
    async fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            timeout(WAIT, self.stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

fn config(tls: Option<Arc<rustls::ServerConfig>>, accept_all: bool) -> SmtpSimConfig {
    SmtpSimConfig {
        banner_host: BANNER.to_string(),
        tls,
        accept_all,
    }
}

async fn start_smtp(tls: Option<Arc<rustls::ServerConfig>>) -> (SmtpSim, CancellationToken) {
    let shutdown = CancellationToken::new();
    let sim = SmtpSim::start(config(tls, false), shutdown.clone())
        .await
        .unwrap();
    (sim, shutdown)
}

async fn connect(sim: &SmtpSim) -> Client<TcpStream> {
    Client::new(TcpStream::connect(sim.local_addr()).await.unwrap())
}

async fn greeted(sim: &SmtpSim) -> Client<TcpStream> {
    let mut client = connect(sim).await;
    let greeting = client.reply().await;
    assert!(greeting[0].starts_with("220 "), "{greeting:?}");
    client
}

fn expected_ehlo(starttls: bool) -> Vec<String> {
    let mut lines = vec![
        format!("250-{BANNER} Hello [127.0.0.1]"),
        "250-SIZE 157286400".to_string(),
        "250-PIPELINING".to_string(),
        "250-DSN".to_string(),
        "250-ENHANCEDSTATUSCODES".to_string(),
    ];
    if starttls {
        lines.push("250-STARTTLS".to_string());
    }
    for line in [
        "250-8BITMIME",
        "250-BINARYMIME",
        "250-CHUNKING",
        "250 SMTPUTF8",
    ] {
        lines.push(line.to_string());
    }
    lines
}

fn is_upper_hex_16(text: &str) -> bool {
    text.len() == 16
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

fn client_config(ca: &TestCa) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca_cert_der()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

async fn start_tls_client(
    client: Client<TcpStream>,
    ca: &TestCa,
) -> std::io::Result<Client<tokio_rustls::client::TlsStream<TcpStream>>> {
    let connector = tokio_rustls::TlsConnector::from(client_config(ca));
    let server_name = rustls::pki_types::ServerName::try_from(MX_NAME).unwrap();
    let tcp = client.stream.into_inner();
    let tls = timeout(WAIT, connector.connect(server_name, tcp))
        .await
        .expect("TLS handshake hung")?;
    Ok(Client::new(tls))
}

// ---------------------------------------------------------------------------------------------
// SMTP tests

#[tokio::test]
async fn greeting_and_ehlo_have_the_eop_shape() {
    let ca = TestCa::generate().unwrap();
    let tls = ca
        .server_config(&["*.mail.protection.outlook.com"])
        .unwrap();
    let (sim, _shutdown) = start_smtp(Some(tls)).await;
    let mut client = connect(&sim).await;

    let greeting = client.reply().await;
    assert_eq!(greeting.len(), 1);
    let prefix = format!("220 {BANNER} Microsoft ESMTP MAIL Service ready at ");
    let rest = greeting[0].strip_prefix(&prefix).expect(&greeting[0]);
    // "Fri, 7 Jan 2022 00:05:19 +0000 [08DD59CA63652EED]"
    let (date, id) = rest.split_once(" +0000 [").expect(rest);
    assert!(date.split(", ").count() == 2, "{date}");
    let id = id.strip_suffix(']').expect(id);
    assert!(is_upper_hex_16(id), "{id}");

    assert_eq!(
        client.ask("EHLO probe.monitor.example").await,
        expected_ehlo(true)
    );
    assert_eq!(
        client.ask_one("QUIT").await,
        "221 2.0.0 Service closing transmission channel"
    );
    assert!(client.closed().await);
    assert_eq!(sim.sessions(), 1);
}

#[tokio::test]
async fn ehlo_without_tls_does_not_offer_starttls() {
    let (sim, _shutdown) = start_smtp(None).await;
    let mut client = greeted(&sim).await;
    assert_eq!(
        client.ask("ehlo probe.monitor.example").await,
        expected_ehlo(false)
    );
    assert_eq!(
        client.ask_one("STARTTLS").await,
        "500 5.3.3 Unrecognized command"
    );
}

#[tokio::test]
async fn helo_gets_a_single_line() {
    let (sim, _shutdown) = start_smtp(None).await;
    let mut client = greeted(&sim).await;
    assert_eq!(
        client.ask_one("HELO probe.monitor.example").await,
        format!("250 {BANNER} Hello [127.0.0.1]")
    );
}

#[tokio::test]
async fn known_recipient_is_accepted_and_unknown_gets_dbeb_rejection() {
    let (sim, _shutdown) = start_smtp(None).await;
    sim.set_recipient("Admin@Contoso.com", RcptBehaviour::Accept);
    let mut client = greeted(&sim).await;
    client.ask("EHLO probe.monitor.example").await;
    assert_eq!(
        client.ask_one("MAIL FROM:<probe@monitor.example>").await,
        "250 2.1.0 Sender OK"
    );
    assert_eq!(
        client.ask_one("RCPT TO:<admin@contoso.com>").await,
        "250 2.1.5 Recipient OK"
    );

    let rejection = client.ask_one("RCPT TO:<gone@contoso.com>").await;
    let prefix =
        format!("550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [{BANNER} ");
    let rest = rejection.strip_prefix(&prefix).expect(&rejection);
    let rest = rest.strip_suffix(']').expect(rest);
    let (timestamp, id) = rest.split_once(' ').expect(rest);
    // 2023-06-22T08:26:31.592Z
    assert_eq!(timestamp.len(), 24, "{timestamp}");
    assert!(
        timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
        "{timestamp}"
    );
    assert!(is_upper_hex_16(id), "{id}");

    assert_eq!(
        sim.rcpt_log(),
        vec![
            "admin@contoso.com".to_string(),
            "gone@contoso.com".to_string()
        ]
    );
    assert!(!sim.saw_data());
}

#[tokio::test]
async fn accept_all_models_an_internal_relay_domain() {
    let shutdown = CancellationToken::new();
    let sim = SmtpSim::start(config(None, true), shutdown.clone())
        .await
        .unwrap();
    sim.set_recipient("blocked@contoso.com", RcptBehaviour::RejectUnknown);
    let mut client = greeted(&sim).await;
    client.ask("EHLO probe.monitor.example").await;
    client.ask("MAIL FROM:<probe@monitor.example>").await;
    assert_eq!(
        client.ask_one("RCPT TO:<anyone@contoso.com>").await,
        "250 2.1.5 Recipient OK"
    );
    assert!(client
        .ask_one("RCPT TO:<BLOCKED@contoso.com>")
        .await
        .starts_with("550 5.4.1 "));

    sim.set_accept_all(false);
    assert!(client
        .ask_one("RCPT TO:<anyone@contoso.com>")
        .await
        .starts_with("550 5.4.1 "));
}

#[tokio::test]
async fn scripted_reply_is_sent_verbatim_including_multiline() {
    let (sim, _shutdown) = start_smtp(None).await;
    sim.set_recipient(
        "user@contoso.com",
        RcptBehaviour::Reply(
            "550-5.1.10 RESOLVER.ADR.RecipientNotFound;\n550 5.1.10 Recipient not found by SMTP address lookup"
                .to_string(),
        ),
    );
    sim.set_recipient(
        "busy@contoso.com",
        RcptBehaviour::Reply(
            "451 4.7.500 Server busy. Please try again later from [127.0.0.1]. (AS761)".to_string(),
        ),
    );
    let mut client = greeted(&sim).await;
    client.ask("EHLO probe.monitor.example").await;
    client.ask("MAIL FROM:<probe@monitor.example>").await;
    assert_eq!(
        client.ask("RCPT TO:<user@contoso.com>").await,
        vec![
            "550-5.1.10 RESOLVER.ADR.RecipientNotFound;".to_string(),
            "550 5.1.10 Recipient not found by SMTP address lookup".to_string(),
        ]
    );
    assert_eq!(
        client.ask_one("RCPT TO:<busy@contoso.com>").await,
        "451 4.7.500 Server busy. Please try again later from [127.0.0.1]. (AS761)"
    );
}

#[tokio::test]
async fn commands_out_of_sequence_get_503() {
    let (sim, _shutdown) = start_smtp(None).await;
    let mut client = greeted(&sim).await;
    assert!(client
        .ask_one("MAIL FROM:<probe@monitor.example>")
        .await
        .starts_with("503 5.5.1 "));
    client.ask("EHLO probe.monitor.example").await;
    assert!(client
        .ask_one("RCPT TO:<admin@contoso.com>")
        .await
        .starts_with("503 5.5.1 "));
    assert!(sim.rcpt_log().is_empty());
}

#[tokio::test]
async fn rset_noop_unknown_and_data_replies() {
    let (sim, _shutdown) = start_smtp(None).await;
    let mut client = greeted(&sim).await;
    client.ask("EHLO probe.monitor.example").await;
    assert_eq!(client.ask_one("NOOP").await, "250 2.0.0 OK");
    assert_eq!(
        client.ask_one("XYZZY").await,
        "500 5.3.3 Unrecognized command"
    );
    client.ask("MAIL FROM:<probe@monitor.example>").await;
    assert_eq!(client.ask_one("RSET").await, "250 2.0.0 Resetting");
    // RSET ended the transaction, so a new MAIL is accepted rather than "already specified".
    assert_eq!(
        client.ask_one("MAIL FROM:<probe@monitor.example>").await,
        "250 2.1.0 Sender OK"
    );
    assert!(!sim.saw_data());
    assert!(client.ask_one("DATA").await.starts_with("554 "));
    assert!(sim.saw_data());
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let (sim, _shutdown) = start_smtp(None).await;
    sim.set_recipient("admin@contoso.com", RcptBehaviour::Accept);
    let mut client = greeted(&sim).await;
    client.ask("EHLO probe.monitor.example").await;
    // One write with three commands, and a bare LF on the last one.
    client
        .stream
        .get_mut()
        .write_all(b"MAIL FROM:<probe@monitor.example>\r\nRCPT TO:<admin@contoso.com>\r\nRSET\n")
        .await
        .unwrap();
    assert_eq!(
        client.reply().await,
        vec!["250 2.1.0 Sender OK".to_string()]
    );
    assert_eq!(
        client.reply().await,
        vec!["250 2.1.5 Recipient OK".to_string()]
    );
    assert_eq!(
        client.reply().await,
        vec!["250 2.0.0 Resetting".to_string()]
    );
}

#[tokio::test]
async fn overlong_and_non_utf8_lines_get_500_and_the_session_continues() {
    let (sim, _shutdown) = start_smtp(None).await;
    let mut client = greeted(&sim).await;
    let long = format!("EHLO {}", "a".repeat(5000));
    assert_eq!(
        client.ask_one(&long).await,
        "500 5.3.3 Unrecognized command"
    );
    client
        .stream
        .get_mut()
        .write_all(b"EHLO \xff\xfe\r\n")
        .await
        .unwrap();
    assert_eq!(
        client.reply().await,
        vec!["500 5.3.3 Unrecognized command".to_string()]
    );
    assert_eq!(client.ask_one("NOOP").await, "250 2.0.0 OK");
}

#[tokio::test]
async fn starttls_verifies_against_the_test_ca_and_resets_the_session() {
    let ca = TestCa::generate().unwrap();
    let tls = ca
        .server_config(&["*.mail.protection.outlook.com"])
        .unwrap();
    let (sim, _shutdown) = start_smtp(Some(tls)).await;
    sim.set_recipient("admin@contoso.com", RcptBehaviour::Accept);
    let mut client = greeted(&sim).await;
    client.ask("EHLO probe.monitor.example").await;
    assert_eq!(
        client.ask_one("STARTTLS").await,
        "220 2.0.0 SMTP server ready"
    );

    let mut client = start_tls_client(client, &ca).await.unwrap();
    // The session is reset by TLS: MAIL needs a fresh EHLO.
    assert!(client
        .ask_one("MAIL FROM:<probe@monitor.example>")
        .await
        .starts_with("503 "));
    assert_eq!(
        client.ask("EHLO probe.monitor.example").await,
        expected_ehlo(false)
    );
    client.ask("MAIL FROM:<probe@monitor.example>").await;
    assert_eq!(
        client.ask_one("RCPT TO:<admin@contoso.com>").await,
        "250 2.1.5 Recipient OK"
    );
    assert_eq!(
        client.ask_one("QUIT").await,
        "221 2.0.0 Service closing transmission channel"
    );
}

#[tokio::test]
async fn untrusted_certificate_fails_verification() {
    let ca = TestCa::generate().unwrap();
    let tls = untrusted_server_config(&["*.mail.protection.outlook.com"]).unwrap();
    let (sim, _shutdown) = start_smtp(Some(tls)).await;
    let mut client = greeted(&sim).await;
    client.ask("EHLO probe.monitor.example").await;
    assert_eq!(
        client.ask_one("STARTTLS").await,
        "220 2.0.0 SMTP server ready"
    );
    let error = start_tls_client(client, &ca)
        .await
        .err()
        .expect("handshake succeeded");
    assert!(error.to_string().contains("certificate"), "{error}");
}

#[tokio::test]
async fn certificate_for_another_name_fails_verification() {
    let ca = TestCa::generate().unwrap();
    let tls = ca.server_config(&["mx.example.net"]).unwrap();
    let (sim, _shutdown) = start_smtp(Some(tls)).await;
    let mut client = greeted(&sim).await;
    client.ask("EHLO probe.monitor.example").await;
    client.ask("STARTTLS").await;
    assert!(start_tls_client(client, &ca).await.is_err());
}

#[tokio::test]
async fn tarpit_sends_nothing_and_ends_at_shutdown() {
    let (sim, shutdown) = start_smtp(None).await;
    sim.set_fault(SmtpFault::Tarpit);
    let mut client = connect(&sim).await;
    let mut byte = [0u8; 1];
    assert!(
        timeout(Duration::from_millis(300), client.stream.read(&mut byte))
            .await
            .is_err(),
        "tarpit sent data or closed"
    );
    assert_eq!(sim.sessions(), 1);
    shutdown.cancel();
    assert!(client.closed().await);
}

#[tokio::test]
async fn drop_after_greeting_closes_before_any_byte() {
    let (sim, _shutdown) = start_smtp(None).await;
    sim.set_fault(SmtpFault::DropAfter(SmtpStep::Greeting));
    let mut client = connect(&sim).await;
    assert!(client.closed().await);
}

#[tokio::test]
async fn drop_after_rcpt_closes_without_reply_but_logs_the_address() {
    let (sim, _shutdown) = start_smtp(None).await;
    sim.set_fault(SmtpFault::DropAfter(SmtpStep::Rcpt));
    let mut client = greeted(&sim).await;
    client.ask("EHLO probe.monitor.example").await;
    client.ask("MAIL FROM:<probe@monitor.example>").await;
    client.send("RCPT TO:<admin@contoso.com>").await;
    assert!(client.closed().await);
    assert_eq!(sim.rcpt_log(), vec!["admin@contoso.com".to_string()]);
}

#[tokio::test]
async fn drop_after_ehlo_closes_without_reply() {
    let (sim, _shutdown) = start_smtp(None).await;
    sim.set_fault(SmtpFault::DropAfter(SmtpStep::Ehlo));
    let mut client = greeted(&sim).await;
    client.send("EHLO probe.monitor.example").await;
    assert!(client.closed().await);
}

#[tokio::test]
async fn greeting_fault_sends_the_line_then_closes() {
    let (sim, _shutdown) = start_smtp(None).await;
    sim.set_fault(SmtpFault::Greeting(
        "421 4.3.2 Service not available, closing transmission channel".to_string(),
    ));
    let mut client = connect(&sim).await;
    assert_eq!(
        client.reply().await,
        vec!["421 4.3.2 Service not available, closing transmission channel".to_string()]
    );
    assert!(client.closed().await);
}

#[tokio::test]
async fn delay_fault_slows_every_reply() {
    let (sim, _shutdown) = start_smtp(None).await;
    let delay = Duration::from_millis(150);
    sim.set_fault(SmtpFault::Delay(delay));
    let started = Instant::now();
    let mut client = greeted(&sim).await;
    assert!(started.elapsed() >= delay);
    let asked = Instant::now();
    assert_eq!(client.ask_one("NOOP").await, "250 2.0.0 OK");
    assert!(asked.elapsed() >= delay);
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let (sim, shutdown) = start_smtp(None).await;
    let addr = sim.local_addr();
    assert_eq!(addr.ip(), std::net::IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut open = greeted(&sim).await;
    shutdown.cancel();
    assert!(open.closed().await);
    let deadline = Instant::now() + WAIT;
    loop {
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "listener still accepting after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// DNS helpers

fn query_bytes(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
    let mut message = Message::new();
    message
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    message.to_vec().unwrap()
}

async fn ask_udp(addr: SocketAddr, name: &str, rtype: RecordType) -> Option<Message> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    socket
        .send_to(&query_bytes(0x4242, name, rtype), addr)
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let len = timeout(WAIT, socket.recv(&mut buffer)).await.ok()?.unwrap();
    let response = Message::from_vec(&buffer[..len]).unwrap();
    assert_eq!(response.id(), 0x4242);
    assert_eq!(response.message_type(), MessageType::Response);
    assert!(response.authoritative());
    assert!(!response.truncated());
    assert_eq!(response.queries().len(), 1);
    assert_eq!(response.queries()[0].query_type(), rtype);
    Some(response)
}

async fn ask(addr: SocketAddr, name: &str, rtype: RecordType) -> Message {
    ask_udp(addr, name, rtype).await.expect("no DNS answer")
}

async fn start_dns() -> (DnsSim, CancellationToken) {
    let shutdown = CancellationToken::new();
    let sim = DnsSim::start(shutdown.clone()).await.unwrap();
    sim.add_microsoft_365_domain("contoso.com");
    (sim, shutdown)
}

fn answers(message: &Message) -> Vec<String> {
    message
        .answers()
        .iter()
        .map(|record| {
            assert_eq!(record.ttl(), 60);
            match record.data() {
                RData::A(a) => format!("A {}", a.0),
                RData::MX(mx) => format!("MX {} {}", mx.preference(), mx.exchange()),
                RData::CNAME(cname) => format!("CNAME {}", cname.0),
                RData::TXT(txt) => format!(
                    "TXT {}",
                    txt.txt_data()
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect::<Vec<_>>()
                        .join("|")
                ),
                other => format!("{other:?}"),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// DNS tests

#[tokio::test]
async fn microsoft_365_domain_has_mx_spf_and_verification_txt() {
    let (sim, _shutdown) = start_dns().await;
    let addr = sim.local_addr();
    assert_eq!(addr.ip(), std::net::IpAddr::V4(Ipv4Addr::LOCALHOST));

    let mx = ask(addr, "Contoso.COM.", RecordType::MX).await;
    assert_eq!(mx.response_code(), ResponseCode::NoError);
    assert_eq!(answers(&mx), vec![format!("MX 0 {MX_NAME}.")]);

    let txt = ask(addr, "contoso.com", RecordType::TXT).await;
    let mut txt = answers(&txt);
    txt.sort();
    assert_eq!(
        txt,
        vec![
            "TXT MS=ms12345678".to_string(),
            "TXT v=spf1 include:spf.protection.outlook.com -all".to_string(),
        ]
    );

    let dmarc = ask(addr, "_dmarc.contoso.com", RecordType::TXT).await;
    assert_eq!(
        answers(&dmarc),
        vec!["TXT v=DMARC1; p=reject; rua=mailto:dmarc@contoso.com".to_string()]
    );

    let a = ask(addr, MX_NAME, RecordType::A).await;
    assert_eq!(answers(&a), vec!["A 127.0.0.1".to_string()]);
    assert_eq!(sim.queries(), 4);
}

#[tokio::test]
async fn cname_answers_its_own_type_and_every_other_type() {
    let (sim, _shutdown) = start_dns().await;
    let addr = sim.local_addr();
    let cname = ask(addr, "autodiscover.contoso.com", RecordType::CNAME).await;
    assert_eq!(
        answers(&cname),
        vec!["CNAME autodiscover.outlook.com.".to_string()]
    );
    let a = ask(addr, "autodiscover.contoso.com", RecordType::A).await;
    assert_eq!(a.response_code(), ResponseCode::NoError);
    assert_eq!(
        answers(&a),
        vec!["CNAME autodiscover.outlook.com.".to_string()]
    );
    let dkim = ask(addr, "selector2._domainkey.contoso.com", RecordType::CNAME).await;
    assert_eq!(
        answers(&dkim),
        vec!["CNAME selector2-contoso-com._domainkey.contoso.onmicrosoft.com.".to_string()]
    );
}

#[tokio::test]
async fn other_type_at_existing_name_is_nodata() {
    let (sim, _shutdown) = start_dns().await;
    let addr = sim.local_addr();
    for rtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
        let response = ask(addr, "contoso.com", rtype).await;
        assert_eq!(response.response_code(), ResponseCode::NoError, "{rtype}");
        assert!(response.answers().is_empty(), "{rtype}");
        assert!(response.name_servers().is_empty(), "{rtype}");
    }
    // An empty non-terminal exists too, because names below it do.
    let response = ask(addr, "_domainkey.contoso.com", RecordType::TXT).await;
    assert_eq!(response.response_code(), ResponseCode::NoError);
    assert!(response.answers().is_empty());
}

#[tokio::test]
async fn unknown_name_is_nxdomain() {
    let (sim, _shutdown) = start_dns().await;
    let response = ask(sim.local_addr(), "fabrikam.com", RecordType::MX).await;
    assert_eq!(response.response_code(), ResponseCode::NXDomain);
    assert!(response.answers().is_empty());
}

#[tokio::test]
async fn set_replaces_only_the_given_types_and_remove_works() {
    let (sim, _shutdown) = start_dns().await;
    let addr = sim.local_addr();
    sim.set(
        "CONTOSO.com.",
        vec![SimRecord::Mx {
            preference: 10,
            exchange: "mx.parking.example".to_string(),
        }],
    );
    assert_eq!(
        answers(&ask(addr, "contoso.com", RecordType::MX).await),
        vec!["MX 10 mx.parking.example.".to_string()]
    );
    assert_eq!(
        ask(addr, "contoso.com", RecordType::TXT)
            .await
            .answers()
            .len(),
        2
    );

    sim.remove("contoso.com", "mx");
    let mx = ask(addr, "contoso.com", RecordType::MX).await;
    assert_eq!(mx.response_code(), ResponseCode::NoError);
    assert!(mx.answers().is_empty());

    sim.remove_name("autodiscover.contoso.com");
    let gone = ask(addr, "autodiscover.contoso.com", RecordType::CNAME).await;
    assert_eq!(gone.response_code(), ResponseCode::NXDomain);
}

#[tokio::test]
async fn long_txt_is_split_into_255_byte_strings() {
    let (sim, _shutdown) = start_dns().await;
    let value = format!("v=DKIM1; k=rsa; p={}", "A".repeat(400));
    sim.set("long.contoso.com", vec![SimRecord::Txt(value.clone())]);
    let response = ask(sim.local_addr(), "long.contoso.com", RecordType::TXT).await;
    let RData::TXT(txt) = response.answers()[0].data() else {
        panic!("not TXT: {response:?}");
    };
    let strings = txt.txt_data();
    assert_eq!(strings.len(), 2);
    assert_eq!(strings[0].len(), 255);
    assert_eq!(strings.concat(), value.as_bytes());
}

#[tokio::test]
async fn servfail_fault_echoes_the_question() {
    let (sim, _shutdown) = start_dns().await;
    sim.set_fault(DnsFault::ServFail);
    let response = ask(sim.local_addr(), "contoso.com", RecordType::MX).await;
    assert_eq!(response.response_code(), ResponseCode::ServFail);
    assert!(response.answers().is_empty());
    assert_eq!(
        response.queries()[0].name(),
        &Name::from_ascii("contoso.com.").unwrap()
    );
}

#[tokio::test]
async fn drop_fault_never_answers_but_counts_the_query() {
    let (sim, _shutdown) = start_dns().await;
    sim.set_fault(DnsFault::Drop);
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    socket
        .send_to(
            &query_bytes(1, "contoso.com", RecordType::MX),
            sim.local_addr(),
        )
        .await
        .unwrap();
    let mut buffer = [0u8; 512];
    assert!(
        timeout(Duration::from_millis(300), socket.recv(&mut buffer))
            .await
            .is_err()
    );
    assert_eq!(sim.queries(), 1);
}

#[tokio::test]
async fn delay_fault_answers_late() {
    let (sim, _shutdown) = start_dns().await;
    let delay = Duration::from_millis(150);
    sim.set_fault(DnsFault::Delay(delay));
    let started = Instant::now();
    let response = ask(sim.local_addr(), "contoso.com", RecordType::MX).await;
    assert!(started.elapsed() >= delay);
    assert_eq!(response.answers().len(), 1);
}

#[tokio::test]
async fn malformed_packets_are_ignored_and_the_server_keeps_answering() {
    let (sim, _shutdown) = start_dns().await;
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let mut truncated = query_bytes(7, "contoso.com", RecordType::MX);
    truncated.truncate(truncated.len() - 3);
    let garbage: [&[u8]; 4] = [b"", b"\x00", &[0xff; 600], &truncated];
    for packet in garbage {
        socket.send_to(packet, sim.local_addr()).await.unwrap();
    }
    let mut buffer = [0u8; 512];
    assert!(
        timeout(Duration::from_millis(200), socket.recv(&mut buffer))
            .await
            .is_err()
    );
    let response = ask(sim.local_addr(), "contoso.com", RecordType::MX).await;
    assert_eq!(response.answers().len(), 1);
    assert_eq!(sim.queries(), 1);
}

#[tokio::test]
async fn tcp_is_served_on_the_same_port() {
    let (sim, _shutdown) = start_dns().await;
    let mut stream = TcpStream::connect(sim.local_addr()).await.unwrap();
    let query = query_bytes(9, "contoso.com", RecordType::MX);
    let mut frame = (query.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&query);
    stream.write_all(&frame).await.unwrap();
    let mut prefix = [0u8; 2];
    timeout(WAIT, stream.read_exact(&mut prefix))
        .await
        .unwrap()
        .unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut body).await.unwrap();
    let response = Message::from_vec(&body).unwrap();
    assert_eq!(response.id(), 9);
    assert_eq!(answers(&response), vec![format!("MX 0 {MX_NAME}.")]);
}
