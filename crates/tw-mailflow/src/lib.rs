//! The mailflow probe stage: a uniquely tagged message sent through the MSP's own
//! (non-Microsoft) SMTP relay to a watched mailbox, and the bounces for it read back from the
//! envelope sender's own (non-Microsoft) mailbox over IMAP.
//!
//! This catches what an RCPT-only probe cannot: Exchange Online accepts a recipient that is
//! still in the directory and only afterwards finds it has no usable mailbox, answering with
//! an NDR such as `550 5.1.10 RESOLVER.ADR.RecipientNotFound` (reference §4.5). It needs no
//! Microsoft credentials. One [`run`] per (tenant, `mailflow_to` address), one [`Outcome`]:
//!
//! 1. log in to the bounce mailbox first (if it cannot be read, sending would be pointless:
//!    `mailbox_unreadable`) and delete probe DSNs older than a day;
//! 2. submit the message (`relay_failed` if the relay does not take it);
//! 3. search the mailbox every `poll_interval` for a DSN naming the tag, until `bounce_wait`
//!    has passed or the deadline is near; a `failed` DSN ends the wait at once;
//! 4. judge the DSN with [`dsn::classify`] (`no_bounce` without one), then delete the DSNs
//!    for this probe.
//!
//! Relay and mailbox faults are the probe's own, never the tenant's: they are `unknown`.
//! Probes are pure with respect to the rest of the daemon: no store, no alerts.

mod clock;
mod dsn;
mod imap;
mod message;
mod relay;
mod tls;
mod transcript;

use std::time::Duration;

use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_rustls::TlsConnector;
use tw_core::config::{MailflowConfig, SecretSource};
use tw_core::{DsnEvidence, EmailAddress, MailflowEvidence, Reason, Secret, TenantName, Timestamp};

use crate::imap::{Imap, Login};
use crate::transcript::Transcript;

/// Time kept back from the deadline for deleting the DSN and logging out.
const CLEANUP_MARGIN: Duration = Duration::from_secs(5);
/// Longest the first IMAP login may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the relay submission may take.
const RELAY_TIMEOUT: Duration = Duration::from_secs(60);
/// A probe DSN older than this is stale: its run is long over.
const STALE_AFTER: Duration = Duration::from_secs(86_400);
/// Lines kept from the start of the IMAP transcript (the tail is kept too).
const IMAP_TRANSCRIPT_HEAD: usize = 40;

/// What one mailflow run concluded about one watched address.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The watched address the probe was sent to.
    pub target: String,
    pub reason: Reason,
    /// One human line with the specifics (the DSN's status, the relay's refusal).
    pub summary: String,
    pub evidence: MailflowEvidence,
}

/// Why [`MailflowClients::load`] failed. Never carries a credential's value.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("mailflow {what}: cannot read {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("mailflow {what}: environment variable {name} is not set")]
    EnvMissing { what: &'static str, name: String },
    #[error("mailflow {what} from {origin} is empty")]
    Empty { what: &'static str, origin: String },
    #[error("mailflow extra_ca_file {path}: {reason}")]
    Tls { path: String, reason: String },
}

/// What every run shares, built once from config: the credentials (read from their files or
/// environment variables) and the TLS client configuration.
pub struct MailflowClients {
    relay_password: Option<Secret>,
    imap_password: Secret,
    tls: TlsConnector,
}

impl std::fmt::Debug for MailflowClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailflowClients")
            .field("relay_password", &self.relay_password)
            .field("imap_password", &self.imap_password)
            .finish_non_exhaustive()
    }
}

impl MailflowClients {
    /// Reads the relay and IMAP passwords that `config` names, from files or from environment
    /// variables looked up with `env` (the binary passes a closure over `std::env::var`;
    /// tests pass their own), trimmed of surrounding whitespace, and the extra CA file.
    pub fn load(
        config: &MailflowConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<MailflowClients, SetupError> {
        let relay_password = config
            .relay_password
            .as_ref()
            .map(|source| read_secret(source, "relay password", env))
            .transpose()?;
        let imap_password = read_secret(&config.imap_password, "IMAP password", env)?;
        let extra_ca = match &config.extra_ca_file {
            None => None,
            Some(path) => Some(
                std::fs::read_to_string(path).map_err(|err| SetupError::File {
                    what: "extra_ca_file",
                    path: path.display().to_string(),
                    reason: err.to_string(),
                })?,
            ),
        };
        let tls = tls::client_config(extra_ca.as_deref()).map_err(|reason| SetupError::Tls {
            path: config
                .extra_ca_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            reason,
        })?;
        Ok(MailflowClients {
            relay_password,
            imap_password,
            tls: TlsConnector::from(tls),
        })
    }
}

fn read_secret(
    source: &SecretSource,
    what: &'static str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, SetupError> {
    let (value, origin) = match source {
        SecretSource::File(path) => (
            std::fs::read_to_string(path).map_err(|err| SetupError::File {
                what,
                path: path.display().to_string(),
                reason: match err.kind() {
                    std::io::ErrorKind::InvalidData => "the file is not UTF-8 text".to_owned(),
                    _ => err.to_string(),
                },
            })?,
            format!("file {}", path.display()),
        ),
        SecretSource::Env(name) => (
            env(name).ok_or_else(|| SetupError::EnvMissing {
                what,
                name: name.clone(),
            })?,
            format!("environment variable {name}"),
        ),
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(SetupError::Empty { what, origin });
    }
    Ok(Secret::new(trimmed))
}

/// Sends one probe message to `to` and waits for its fate; see the crate docs. Finishes
/// before `deadline` (keeping a few seconds for clean-up), whatever the servers do.
pub async fn run(
    config: &MailflowConfig,
    clients: &MailflowClients,
    tenant: &TenantName,
    to: &EmailAddress,
    deadline: Instant,
) -> Outcome {
    let start = Instant::now();
    let now = Timestamp::now();
    let tag = message::new_tag(now);
    let message_id = message::message_id(&tag, &config.mail_from);
    let mut probe = Probe {
        config,
        clients,
        to,
        tag: tag.clone(),
        message_id: message_id.clone(),
        imap_transcript: Transcript::new(start, IMAP_TRANSCRIPT_HEAD),
        evidence: MailflowEvidence {
            tag,
            message_id,
            mail_from: config.mail_from.to_string(),
            rcpt_to: to.to_string(),
            relay: format!("{}:{}", config.relay_host, config.relay_port),
            mailbox: format!(
                "{}@{}:{}/{}",
                config.imap_username, config.imap_host, config.imap_port, config.imap_folder
            ),
            ..MailflowEvidence::default()
        },
    };
    let (reason, summary) = probe.run(tenant, start, now, deadline).await;
    let mut evidence = probe.evidence;
    evidence.imap_transcript = probe.imap_transcript.into_lines();
    Outcome {
        target: to.to_string(),
        reason,
        summary,
        evidence,
    }
}

/// One run's state.
struct Probe<'a> {
    config: &'a MailflowConfig,
    clients: &'a MailflowClients,
    to: &'a EmailAddress,
    tag: String,
    message_id: String,
    imap_transcript: Transcript,
    evidence: MailflowEvidence,
}

/// A DSN found for this probe, with where it is.
struct Found {
    uid: u32,
    reason: Option<Reason>,
    evidence: DsnEvidence,
}

impl Probe<'_> {
    async fn run(
        &mut self,
        tenant: &TenantName,
        start: Instant,
        now: Timestamp,
        deadline: Instant,
    ) -> (Reason, String) {
        let work_deadline = deadline
            .checked_sub(CLEANUP_MARGIN)
            .unwrap_or(deadline)
            .max(start);

        // 1. The mailbox first: without it a bounce could not be seen.
        let mut imap = match self
            .open_imap((start + LOGIN_TIMEOUT).min(work_deadline))
            .await
        {
            Ok(imap) => imap,
            Err(error) => {
                return (
                    Reason::MailboxUnreadable,
                    format!("bounce mailbox {}: {error}", self.evidence.mailbox),
                )
            }
        };
        let stale_cleaned = self.delete_stale(&mut imap, now, work_deadline).await;
        // A failed clean-up may leave the session mid-command; the first poll reconnects.
        let mut session = stale_cleaned.then_some(imap);

        // 2. The message.
        let text = message::build(&self.tag, &self.config.mail_from, self.to, tenant, now);
        let body = message::dot_stuffed(&text);
        let credentials = match (&self.config.relay_username, &self.clients.relay_password) {
            (Some(user), Some(password)) => Some((user.as_str(), password)),
            _ => None,
        };
        let submission = relay::Submission {
            host: &self.config.relay_host,
            port: self.config.relay_port,
            tls: self.config.relay_tls,
            connector: &self.clients.tls,
            helo: self.config.helo_name.as_str(),
            credentials,
            from: &self.config.mail_from,
            to: self.to,
            envelope_id: &self.tag,
            message: &body,
        };
        let mut relay_transcript = Transcript::new(start, 200);
        let relay_deadline = (Instant::now() + RELAY_TIMEOUT).min(work_deadline);
        let submitted = relay::submit(&submission, &mut relay_transcript, relay_deadline).await;
        self.evidence.relay_transcript = relay_transcript.into_lines();
        let sent = Instant::now();
        match submitted {
            Ok(reply) => {
                self.evidence.sent_at = Some(Timestamp::now());
                self.evidence.relay_reply = Some(reply);
            }
            Err(error) => {
                if let Some(imap) = session {
                    self.logout(imap, deadline).await;
                }
                return (
                    Reason::RelayFailed,
                    format!("relay {}: {error}", self.evidence.relay),
                );
            }
        }

        // 3. Wait for a bounce.
        let wait_until = (sent + self.config.bounce_wait).min(work_deadline);
        let mut found: Vec<Found> = Vec::new();
        let mut last_poll: Result<(), String>;
        loop {
            let poll_started = Instant::now();
            last_poll = self
                .poll(&mut session, &mut found, sent, work_deadline)
                .await;
            if found
                .iter()
                .any(|f| f.reason.is_some_and(|r| r != Reason::MailDelayed))
            {
                break;
            }
            if poll_started >= wait_until {
                break;
            }
            let next = (Instant::now() + self.config.poll_interval).min(wait_until);
            sleep_until(next).await;
        }
        self.evidence.waited_ms = u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX);
        if sent + self.config.bounce_wait > work_deadline {
            self.evidence.findings.push(format!(
                "the check's deadline cut the wait for a bounce to {} s",
                self.evidence.waited_ms / 1000
            ));
        }

        // 4. Judge, then clean up.
        let verdict = self.verdict(&found, &last_poll);
        if let Some(imap) = session.as_mut() {
            let uids: Vec<u32> = found.iter().map(|f| f.uid).collect();
            let deleted = timeout_at(deadline, imap.delete(&uids, &mut self.imap_transcript)).await;
            match deleted {
                Ok(Ok(())) => self.evidence.deleted.extend(
                    found
                        .iter()
                        .map(|f| format!("uid {}: DSN for this probe", f.uid)),
                ),
                Ok(Err(error)) => self
                    .evidence
                    .findings
                    .push(format!("could not delete this probe's DSN: {error}")),
                Err(_) => self
                    .evidence
                    .findings
                    .push("no time left to delete this probe's DSN".to_owned()),
            }
        } else if !found.is_empty() {
            self.evidence.findings.push(
                "the mailbox connection was lost; this probe's DSN is left in place".to_owned(),
            );
        }
        if let Some(imap) = session {
            self.logout(imap, deadline).await;
        }
        verdict
    }

    fn verdict(&mut self, found: &[Found], last_poll: &Result<(), String>) -> (Reason, String) {
        // The most telling DSN: a failure over a delay; among failures the worst status.
        let best = found
            .iter()
            .filter_map(|f| f.reason.map(|reason| (reason, f)))
            .max_by_key(|(reason, _)| match reason {
                Reason::MailBounced => 3,
                Reason::MailFailed => 2,
                Reason::BounceInconclusive => 1,
                _ => 0,
            });
        if let Some((reason, f)) = best {
            self.evidence.dsn = Some(f.evidence.clone());
            let dsn = &f.evidence;
            let mut summary = format!("DSN: {} {}", dsn.action, dsn.status);
            if let Some(code) = &dsn.diagnostic_code {
                summary.push_str(&format!(" ({code})"));
            }
            if let Some(mta) = &dsn.reporting_mta {
                summary.push_str(&format!(" from {mta}"));
            }
            summary.push_str(&format!(" after {} s", dsn.found_after_ms / 1000));
            return (reason, summary);
        }
        if let Some(f) = found.first() {
            // Only success notices (delivered, relayed) came back.
            self.evidence.dsn = Some(f.evidence.clone());
        }
        match last_poll {
            Ok(()) => (
                Reason::NoBounce,
                format!(
                    "the relay took the message ({}) and no DSN came back in {} s",
                    self.evidence.relay_reply.as_deref().unwrap_or("accepted"),
                    self.evidence.waited_ms / 1000
                ),
            ),
            Err(error) => (
                Reason::MailboxUnreadable,
                format!(
                    "the message was sent but the bounce mailbox {} could not be searched at the end of the wait: {error}",
                    self.evidence.mailbox
                ),
            ),
        }
    }

    async fn open_imap(&mut self, deadline: Instant) -> Result<Imap, String> {
        let login = Login {
            host: &self.config.imap_host,
            port: self.config.imap_port,
            tls: self.config.imap_tls,
            connector: &self.clients.tls,
            user: &self.config.imap_username,
            password: &self.clients.imap_password,
            folder: &self.config.imap_folder,
        };
        match timeout_at(deadline, Imap::open(&login, &mut self.imap_transcript)).await {
            Ok(result) => result,
            Err(_) => {
                self.imap_transcript.note("deadline reached");
                Err("no complete answer in time".to_owned())
            }
        }
    }

    /// One search for DSNs naming the tag, reconnecting first if the session was lost.
    async fn poll(
        &mut self,
        session: &mut Option<Imap>,
        found: &mut Vec<Found>,
        sent: Instant,
        deadline: Instant,
    ) -> Result<(), String> {
        self.evidence.polls += 1;
        if session.is_none() {
            *session = Some(self.open_imap(deadline).await?);
        }
        let Some(imap) = session.as_mut() else {
            return Err("not connected".to_owned());
        };
        let transcript = &mut self.imap_transcript;
        let searched = timeout_at(deadline, async {
            imap.noop(transcript).await?;
            let uids = imap
                .search(&format!("TEXT \"{}\"", self.tag), transcript)
                .await?;
            let mut fetched = Vec::new();
            for uid in uids
                .into_iter()
                .filter(|uid| !found.iter().any(|f| f.uid == *uid))
            {
                if let Some(bytes) = imap.fetch(uid, transcript).await? {
                    fetched.push((uid, bytes));
                }
            }
            Ok::<_, String>(fetched)
        })
        .await;
        let fetched = match searched {
            Ok(Ok(fetched)) => fetched,
            Ok(Err(error)) => {
                *session = None;
                return Err(error);
            }
            Err(_) => {
                *session = None;
                return Err("no complete answer in time".to_owned());
            }
        };
        for (uid, bytes) in fetched {
            let Some(report) = dsn::parse(&bytes) else {
                self.evidence.findings.push(format!(
                    "uid {uid} mentions the probe's tag but is not a delivery status notification; left in place"
                ));
                continue;
            };
            if !report.refers_to(&self.tag, &self.message_id) {
                self.evidence.findings.push(format!(
                    "uid {uid} is a DSN that mentions the tag but is about another message; left in place"
                ));
                continue;
            }
            let recipient = self.to.to_string();
            let status = report
                .for_recipient(&recipient)
                .cloned()
                .unwrap_or_default();
            let reason = dsn::classify(&status.action, &status.status);
            found.push(Found {
                uid,
                reason,
                evidence: DsnEvidence {
                    action: status.action,
                    status: status.status,
                    diagnostic_code: status.diagnostic_code,
                    reporting_mta: report.reporting_mta,
                    remote_mta: status.remote_mta,
                    final_recipient: status.final_recipient,
                    subject: report.subject,
                    date: report.date,
                    found_after_ms: u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX),
                },
            });
        }
        Ok(())
    }

    /// Deletes probe DSNs (any probe's) that arrived before yesterday; their runs are over.
    /// `false` when the session can no longer be trusted.
    async fn delete_stale(&mut self, imap: &mut Imap, now: Timestamp, deadline: Instant) -> bool {
        let before = clock::imap_date(now.minus(STALE_AFTER));
        let transcript = &mut self.imap_transcript;
        let result = timeout_at(deadline, async {
            let criteria = format!("BEFORE {before} TEXT \"{}\"", message::PROBE_HEADER);
            let uids = imap.search(&criteria, transcript).await?;
            let mut stale = Vec::new();
            for uid in uids.into_iter().take(100) {
                let Some(bytes) = imap.fetch(uid, transcript).await? else {
                    continue;
                };
                if let Some(tag) = dsn::parse(&bytes).and_then(|report| report.probe_tag()) {
                    stale.push((uid, tag));
                }
            }
            let uids: Vec<u32> = stale.iter().map(|(uid, _)| *uid).collect();
            imap.delete(&uids, transcript).await?;
            Ok::<_, String>(stale)
        })
        .await;
        match result {
            Ok(Ok(stale)) => {
                self.evidence.deleted.extend(
                    stale
                        .into_iter()
                        .map(|(uid, tag)| format!("uid {uid}: stale DSN for probe {tag}")),
                );
                true
            }
            Ok(Err(error)) => {
                self.evidence
                    .findings
                    .push(format!("clean-up of stale probe DSNs failed: {error}"));
                false
            }
            Err(_) => {
                self.evidence
                    .findings
                    .push("clean-up of stale probe DSNs ran out of time".to_owned());
                false
            }
        }
    }

    async fn logout(&mut self, imap: Imap, deadline: Instant) {
        let _ = timeout_at(deadline, imap.logout(&mut self.imap_transcript)).await;
    }
}

/// For the fuzzer only (`fuzz/fuzz_targets/dsn.rs`): parses `raw` as a delivery status
/// notification and classifies each recipient block the way a run does, returning
/// (action, status, reason). Not used by the daemon.
#[doc(hidden)]
pub fn classify_dsn_for_fuzzing(raw: &[u8]) -> Option<Vec<(String, String, Option<Reason>)>> {
    let parsed = dsn::parse(raw)?;
    // What a run does with a DSN it fetched: ask for the probe tag and the block of its
    // recipient (both walk the parsed structure).
    let _ = parsed.probe_tag();
    let _ = parsed.for_recipient("admin@contoso.com");
    Some(
        parsed
            .recipients
            .iter()
            .map(|block| {
                (
                    block.action.clone(),
                    block.status.clone(),
                    dsn::classify(&block.action, &block.status),
                )
            })
            .collect(),
    )
}
