//! A small authoritative DNS server on loopback, with the records a Microsoft 365 domain
//! publishes (reference §4.6) and scriptable faults, so DNS probes can be tested without the
//! internet.
//!
//! It answers from a flat table of names, with the three outcomes a probe must tell apart:
//! records, NODATA (the name exists, the type does not) and NXDOMAIN. It serves UDP, and TCP on
//! the same port number because a resolver configured for TCP should not need a second address.
//! hickory-proto only decodes and encodes messages; the answering logic is ours.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, MX, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Every answer carries this TTL; short, so a resolver cache in a test does not hide a change.
const TTL: u32 = 60;

/// One record the simulator can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimRecord {
    A(Ipv4Addr),
    Mx {
        preference: u16,
        exchange: String,
    },
    /// Served as one TXT record, split into 255-byte character-strings when longer.
    Txt(String),
    Cname(String),
}

/// A misbehaviour applied to every query from now on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsFault {
    None,
    /// Never answer.
    Drop,
    /// Answer correctly, this much later.
    Delay(Duration),
    /// Answer SERVFAIL with the question echoed.
    ServFail,
}

/// A running authoritative DNS server bound to `127.0.0.1` (UDP, and TCP on the same port).
#[derive(Clone)]
pub struct DnsSim {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for DnsSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsSim")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Shared {
    /// Keyed by lowercase name without the trailing dot.
    zone: Mutex<HashMap<String, Vec<SimRecord>>>,
    fault: Mutex<DnsFault>,
    queries: AtomicU64,
}

impl DnsSim {
    /// Binds UDP (and TCP on the same port number) on `127.0.0.1` and serves until `shutdown`
    /// is cancelled.
    pub async fn start(shutdown: CancellationToken) -> std::io::Result<DnsSim> {
        let (udp, tcp) = bind_same_port().await?;
        let local_addr = udp.local_addr()?;
        let shared = Arc::new(Shared {
            zone: Mutex::new(HashMap::new()),
            fault: Mutex::new(DnsFault::None),
            queries: AtomicU64::new(0),
        });
        let tracker = TaskTracker::new();
        tracker.spawn(run_udp(
            Arc::new(udp),
            Arc::clone(&shared),
            shutdown.clone(),
            tracker.clone(),
        ));
        tracker.spawn(run_tcp(tcp, Arc::clone(&shared), shutdown, tracker.clone()));
        tracker.close();
        Ok(DnsSim { shared, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces all records at `name` of the types present in `records`, keeping other types.
    /// The name is case-insensitive and its trailing dot optional.
    pub fn set(&self, name: &str, records: Vec<SimRecord>) {
        let mut zone = self.shared.zone.lock();
        let existing = zone.entry(normalize_name(name)).or_default();
        existing.retain(|old| {
            !records
                .iter()
                .any(|new| new.record_type() == old.record_type())
        });
        existing.extend(records);
    }

    /// Removes the records of one type (`"A"`, `"MX"`, `"TXT"` or `"CNAME"`) at `name`; an
    /// unknown type removes nothing.
    pub fn remove(&self, name: &str, rtype: &str) {
        let rtype = rtype.trim().to_ascii_uppercase();
        let key = normalize_name(name);
        let mut zone = self.shared.zone.lock();
        if let Some(existing) = zone.get_mut(&key) {
            existing.retain(|record| record.type_name() != rtype);
            if existing.is_empty() {
                zone.remove(&key);
            }
        }
    }

    /// Removes every record at `name`; queries then get NXDOMAIN unless a name below it exists.
    pub fn remove_name(&self, name: &str) {
        self.shared.zone.lock().remove(&normalize_name(name));
    }

    pub fn set_fault(&self, fault: DnsFault) {
        *self.shared.fault.lock() = fault;
    }

    /// Well-formed queries received so far, answered or not; malformed packets are not counted.
    pub fn queries(&self) -> u64 {
        self.shared.queries.load(Ordering::SeqCst)
    }

    /// Publishes what Microsoft 365 expects for `domain` in the global cloud (reference §4.6),
    /// plus an A record pointing the MX host at `127.0.0.1` so a probe reaches the SMTP sim.
    pub fn add_microsoft_365_domain(&self, domain: &str) {
        let domain = normalize_name(domain);
        let dashes = domain.replace('.', "-");
        let initial = domain.split('.').next().unwrap_or(&domain).to_string();
        let mx_host = format!("{dashes}.mail.protection.outlook.com");
        self.set(
            &domain,
            vec![
                SimRecord::Mx {
                    preference: 0,
                    exchange: mx_host.clone(),
                },
                SimRecord::Txt("v=spf1 include:spf.protection.outlook.com -all".to_string()),
                SimRecord::Txt("MS=ms12345678".to_string()),
            ],
        );
        self.set(
            &format!("autodiscover.{domain}"),
            vec![SimRecord::Cname("autodiscover.outlook.com".to_string())],
        );
        for selector in ["selector1", "selector2"] {
            self.set(
                &format!("{selector}._domainkey.{domain}"),
                vec![SimRecord::Cname(format!(
                    "{selector}-{dashes}._domainkey.{initial}.onmicrosoft.com"
                ))],
            );
        }
        self.set(
            &format!("_dmarc.{domain}"),
            vec![SimRecord::Txt(format!(
                "v=DMARC1; p=reject; rua=mailto:dmarc@{domain}"
            ))],
        );
        self.set(&mx_host, vec![SimRecord::A(Ipv4Addr::LOCALHOST)]);
    }
}

impl SimRecord {
    fn record_type(&self) -> RecordType {
        match self {
            SimRecord::A(_) => RecordType::A,
            SimRecord::Mx { .. } => RecordType::MX,
            SimRecord::Txt(_) => RecordType::TXT,
            SimRecord::Cname(_) => RecordType::CNAME,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            SimRecord::A(_) => "A",
            SimRecord::Mx { .. } => "MX",
            SimRecord::Txt(_) => "TXT",
            SimRecord::Cname(_) => "CNAME",
        }
    }

    /// `None` when a stored name cannot be encoded; the record is then left out of the answer
    /// rather than failing the whole response.
    fn to_rdata(&self) -> Option<RData> {
        match self {
            SimRecord::A(address) => Some(RData::A(A(*address))),
            SimRecord::Mx {
                preference,
                exchange,
            } => Some(RData::MX(MX::new(*preference, fqdn(exchange)?))),
            SimRecord::Txt(text) => {
                // A character-string holds at most 255 bytes (RFC 1035 §3.3); longer SPF and
                // DKIM values are published as several strings of one record.
                let bytes = text.as_bytes();
                let strings: Vec<&[u8]> = if bytes.is_empty() {
                    vec![bytes]
                } else {
                    bytes.chunks(255).collect()
                };
                Some(RData::TXT(TXT::from_bytes(strings)))
            }
            SimRecord::Cname(target) => Some(RData::CNAME(CNAME(fqdn(target)?))),
        }
    }
}

fn normalize_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn fqdn(name: &str) -> Option<Name> {
    let mut absolute = name.trim().trim_end_matches('.').to_string();
    absolute.push('.');
    match Name::from_ascii(&absolute) {
        Ok(name) => Some(name),
        Err(error) => {
            tracing::debug!(%error, name = %absolute, "DNS sim cannot encode name");
            None
        }
    }
}

/// The zone key for a wire name: labels lowercased and joined, compared byte for byte so that
/// escaping rules of a text form cannot make two spellings of one name differ.
fn key_of(name: &Name) -> String {
    name.iter()
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(".")
}

async fn bind_same_port() -> std::io::Result<(UdpSocket, TcpListener)> {
    // The kernel picks a free UDP port, which may be taken for TCP; a few tries make that rare
    // collision irrelevant without a port registry.
    let mut last_error = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no port free for both UDP and TCP")))
}

/// What to send back for one datagram or TCP frame, after the fault is applied.
enum Reply {
    None,
    Now(Vec<u8>),
    Later(Duration, Vec<u8>),
}

impl Shared {
    fn handle(&self, packet: &[u8]) -> Reply {
        let Ok(request) = Message::from_vec(packet) else {
            return Reply::None;
        };
        // Responses sent to us are not queries; answering them could start a reflection loop.
        if request.message_type() != MessageType::Query {
            return Reply::None;
        }
        self.queries.fetch_add(1, Ordering::SeqCst);
        let fault = self.fault.lock().clone();
        let response = match fault {
            DnsFault::Drop => return Reply::None,
            DnsFault::ServFail => response_to(&request, ResponseCode::ServFail),
            DnsFault::None | DnsFault::Delay(_) => self.answer(&request),
        };
        let bytes = match response.to_vec() {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::debug!(%error, "DNS sim cannot encode response");
                return Reply::None;
            }
        };
        match fault {
            DnsFault::Delay(delay) => Reply::Later(delay, bytes),
            DnsFault::None | DnsFault::Drop | DnsFault::ServFail => Reply::Now(bytes),
        }
    }

    fn answer(&self, request: &Message) -> Message {
        if request.op_code() != OpCode::Query {
            return response_to(request, ResponseCode::NotImp);
        }
        let [query] = request.queries() else {
            return response_to(request, ResponseCode::FormErr);
        };
        let key = key_of(query.name());
        let zone = self.zone.lock();
        let at_name = zone.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let exists = !at_name.is_empty()
            || zone
                .iter()
                .any(|(name, records)| !records.is_empty() && is_below(name, &key));
        if !exists {
            return response_to(request, ResponseCode::NXDomain);
        }
        let wanted = query.query_type();
        // A CNAME stands for the whole name, so it answers every other type; the resolver
        // chases it, which is what a probe's stub resolver expects from an authoritative server.
        let cname: Vec<&SimRecord> = at_name
            .iter()
            .filter(|record| matches!(record, SimRecord::Cname(_)))
            .collect();
        let selected: Vec<&SimRecord> = if !cname.is_empty() && wanted != RecordType::CNAME {
            cname
        } else {
            at_name
                .iter()
                .filter(|record| record.record_type() == wanted)
                .collect()
        };
        let mut response = response_to(request, ResponseCode::NoError);
        for record in selected {
            if let Some(rdata) = record.to_rdata() {
                response.add_answer(Record::from_rdata(query.name().clone(), TTL, rdata));
            }
        }
        response
    }
}

fn is_below(name: &str, ancestor: &str) -> bool {
    if ancestor.is_empty() {
        return true;
    }
    name.len() > ancestor.len()
        && name.ends_with(ancestor)
        && name.as_bytes().get(name.len() - ancestor.len() - 1) == Some(&b'.')
}

fn response_to(request: &Message, code: ResponseCode) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_authoritative(true)
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(false)
        .set_checking_disabled(request.checking_disabled())
        .set_response_code(code);
    response.add_queries(request.queries().iter().cloned());
    response
}

async fn run_udp(
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    // 4096 covers any EDNS payload a resolver offers; longer datagrams are truncated by the
    // kernel and then fail to decode, which is the "malformed" path.
    let mut buffer = vec![0u8; 4096];
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            received = socket.recv_from(&mut buffer) => received,
        };
        let (len, peer) = match received {
            Ok(received) => received,
            Err(error) => {
                // On Linux an ICMP port-unreachable from an earlier reply surfaces here; it
                // says nothing about the next datagram.
                tracing::debug!(%error, "DNS sim UDP receive failed");
                continue;
            }
        };
        let Some(packet) = buffer.get(..len) else {
            continue;
        };
        match shared.handle(packet) {
            Reply::None => {}
            Reply::Now(bytes) => {
                if let Err(error) = socket.send_to(&bytes, peer).await {
                    tracing::debug!(%error, %peer, "DNS sim UDP send failed");
                }
            }
            Reply::Later(delay, bytes) => {
                // Delayed answers go to their own task so one slow reply does not hold up the
                // queries behind it, as with a real server under load.
                let socket = Arc::clone(&socket);
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {
                            if let Err(error) = socket.send_to(&bytes, peer).await {
                                tracing::debug!(%error, %peer, "DNS sim UDP send failed");
                            }
                        }
                    }
                });
            }
        }
    }
}

async fn run_tcp(
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
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                tracing::debug!(%error, "DNS sim TCP accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let shared = Arc::clone(&shared);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                result = serve_tcp(stream, &shared) => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "DNS sim TCP session ended with error");
                    }
                }
            }
        });
    }
}

/// Serves length-prefixed messages (RFC 1035 §4.2.2) on one connection, in order.
async fn serve_tcp(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    loop {
        let mut prefix = [0u8; 2];
        match stream.read_exact(&mut prefix).await {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error),
        }
        let mut packet = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut packet).await?;
        let bytes = match shared.handle(&packet) {
            Reply::None => continue,
            Reply::Now(bytes) => bytes,
            Reply::Later(delay, bytes) => {
                tokio::time::sleep(delay).await;
                bytes
            }
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            continue;
        };
        let mut frame = Vec::with_capacity(bytes.len() + 2);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&bytes);
        stream.write_all(&frame).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_below_matches_whole_labels_only() {
        assert!(is_below(
            "selector1._domainkey.contoso.com",
            "_domainkey.contoso.com"
        ));
        assert!(is_below("a.contoso.com", "contoso.com"));
        assert!(!is_below("xcontoso.com", "contoso.com"));
        assert!(!is_below("contoso.com", "contoso.com"));
        assert!(is_below("com", ""));
    }

    #[test]
    fn long_txt_is_split_into_character_strings() {
        let record = SimRecord::Txt("x".repeat(600));
        let Some(RData::TXT(txt)) = record.to_rdata() else {
            panic!("not TXT");
        };
        let lens: Vec<usize> = txt.txt_data().iter().map(|s| s.len()).collect();
        assert_eq!(lens, vec![255, 255, 90]);
    }
}
