//! The `smtp_rcpt` check: does the tenant's MX still know each watched address?
//!
//! One session per domain: every watched address plus one control address that cannot exist
//! is asked at RCPT, then RSET and QUIT — never DATA. A `250` proves only that the address is
//! in the directory; if the control is accepted too, the domain accepts everything and the
//! check says it is blind. IO lives in `dialogue`, deciding in `classify`.

mod classify;
mod dialogue;

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tw_core::{DomainName, EmailAddress, RcptVerdict, Reason, SmtpEvidence};

use crate::clients::Clients;
use crate::dns;
pub use classify::{classify_rcpt, classify_watched, parse_enhanced, RcptMeaning, Reply};
pub use dialogue::parse_reply;
use dialogue::{Dialogue, SessionLog, Stop};

/// The verdict for one watched address.
#[derive(Debug, Clone, PartialEq)]
pub struct AddressVerdict {
    pub address: EmailAddress,
    pub reason: Reason,
    pub summary: String,
}

/// Everything one session found: a verdict per watched address and the shared evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct SmtpOutcome {
    pub verdicts: Vec<AddressVerdict>,
    pub evidence: SmtpEvidence,
}

/// Runs one session for `domain`. Every network wait ends by `deadline`; nothing here fails:
/// a target that misbehaves yields `Unknown` verdicts with the reason.
pub async fn run(
    domain: &DomainName,
    addresses: &[EmailAddress],
    clients: &Clients,
    deadline: Instant,
) -> SmtpOutcome {
    let mut log = SessionLog::new();
    let mut evidence = SmtpEvidence::default();
    let control = control_address(domain);
    let recipients: Vec<(String, bool)> = addresses
        .iter()
        .map(|address| (address.to_string(), false))
        .chain(std::iter::once((control.clone(), true)))
        .collect();

    let stop = match tokio::time::timeout_at(
        deadline,
        session(domain, clients, &recipients, &mut log, &mut evidence),
    )
    .await
    {
        Ok(Ok(())) => None,
        Ok(Err(stop)) => Some(stop),
        Err(_elapsed) => {
            log.note("probe deadline reached");
            Some(Stop {
                reason: Reason::Timeout,
                summary: "no answer within the probe timeout".to_owned(),
            })
        }
    };

    let control_reply = log
        .rcpt
        .iter()
        .find(|(_, is_control, _)| *is_control)
        .map(|(_, _, reply)| reply.clone());
    let verdicts = addresses
        .iter()
        .map(|address| {
            let text = address.to_string();
            let answered = log
                .rcpt
                .iter()
                .find(|(sent, is_control, _)| !is_control && *sent == text);
            let (reason, summary) = match (answered, &stop) {
                // The session ended between this RCPT and the control's: without the
                // control the answer means nothing, and the stop says why.
                (Some((_, _, reply)), Some(stop)) if control_reply.is_none() => (
                    stop.reason,
                    format!(
                        "{} before the control address was checked (RCPT answered {})",
                        stop.summary,
                        reply.one_line()
                    ),
                ),
                (Some((_, _, reply)), _) => classify_watched(reply, control_reply.as_ref()),
                (None, Some(stop)) => (stop.reason, stop.summary.clone()),
                (None, None) => (
                    Reason::ConnectionDropped,
                    "the server closed the session before this RCPT".to_owned(),
                ),
            };
            AddressVerdict {
                address: address.clone(),
                reason,
                summary,
            }
        })
        .collect();

    evidence.tls = log.tls.take();
    evidence.rcpt = log
        .rcpt
        .iter()
        .map(|(address, control, reply)| RcptVerdict {
            address: address.clone(),
            control: *control,
            code: Some(reply.code),
            enhanced: reply.enhanced.clone(),
            text: reply.text.clone(),
        })
        .collect();
    evidence.transcript = std::mem::take(&mut log.transcript);
    SmtpOutcome { verdicts, evidence }
}

async fn session(
    domain: &DomainName,
    clients: &Clients,
    recipients: &[(String, bool)],
    log: &mut SessionLog,
    evidence: &mut SmtpEvidence,
) -> Result<(), Stop> {
    let mx_host = resolve_mx(domain, clients).await?;
    log.note(format!("MX for {domain}: {mx_host}"));
    evidence.mx_host = Some(mx_host.clone());
    let peer = resolve_host(&mx_host, clients).await?;
    evidence.peer = Some(peer.to_string());

    let _permit = clients.destinations.acquire(&mx_host).await;
    let stream = TcpStream::connect(peer).await.map_err(|err| {
        log.note(format!("connect to {peer} failed: {err}"));
        Stop {
            reason: Reason::ConnectFailed,
            summary: format!("cannot connect to {mx_host} ({peer}): {err}"),
        }
    })?;
    log.note(format!("connected to {peer}"));
    // Small writes answered by the peer: Nagle would only add latency to every command.
    let _ = stream.set_nodelay(true);
    Dialogue::new(clients, &mx_host, log, stream)
        .run(recipients)
        .await
}

/// The lowest-preference MX host, without its trailing dot.
async fn resolve_mx(domain: &DomainName, clients: &Clients) -> Result<String, Stop> {
    let fqdn = format!("{domain}.");
    let lookup = clients.resolver.mx_lookup(fqdn).await.map_err(|err| Stop {
        reason: Reason::MxUnresolvable,
        summary: match dns::classify_error(&err) {
            dns::Answer::NxDomain => format!("{domain} does not exist in DNS"),
            dns::Answer::NoRecords => format!("{domain} has no MX record"),
            dns::Answer::Failed(error) => format!("MX lookup for {domain} failed: {error}"),
            dns::Answer::Records(_) => format!("MX lookup for {domain} failed: {err}"),
        },
    })?;
    lookup
        .iter()
        .filter(|mx| !mx.exchange().is_root())
        .min_by_key(|mx| mx.preference())
        .map(|mx| {
            mx.exchange()
                .to_utf8()
                .trim_end_matches('.')
                .to_ascii_lowercase()
        })
        .ok_or_else(|| Stop {
            reason: Reason::MxUnresolvable,
            summary: format!("{domain} has a null MX (accepts no mail)"),
        })
}

async fn resolve_host(host: &str, clients: &Clients) -> Result<SocketAddr, Stop> {
    let ips = clients
        .resolver
        .lookup_ip(format!("{host}."))
        .await
        .map_err(|err| Stop {
            reason: Reason::MxUnresolvable,
            summary: format!("MX host {host} does not resolve: {err}"),
        })?;
    // Prefer IPv4: EOP refuses mail over IPv6 from senders without reverse DNS (5.7.25),
    // which would make the probe blind for a reason that has nothing to do with the tenant.
    let ip = ips
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| ips.iter().next())
        .ok_or_else(|| Stop {
            reason: Reason::MxUnresolvable,
            summary: format!("MX host {host} has no address"),
        })?;
    Ok(SocketAddr::new(ip, clients.smtp.port))
}

/// A local part no directory holds: random, so no one can create it to fool the check.
fn control_address(domain: &DomainName) -> String {
    format!("tw-control-{:016x}@{domain}", fastrand::u64(..))
}
