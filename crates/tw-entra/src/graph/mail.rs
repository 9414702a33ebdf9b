//! The mailflow check's arrival confirmation: is the probe message in the recipient's
//! mailbox, and when did it arrive; then delete it (reference §3.9).
//!
//! Needs `Mail.ReadWrite` for the watched mailbox only (scoped with Exchange RBAC for
//! Applications; docs/entra-app.md). The message is found by its `internetMessageId`, which
//! the probe set itself, so nothing else in the mailbox is read.

use serde::Deserialize;
use tw_core::{HttpEvidence, Timestamp};

use super::client::{Call, GraphClient, GraphError};
use super::{encode_query_value, encode_segment};

/// The probe message as Graph lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundMessage {
    /// Graph's id of the message (changes when it moves between folders).
    pub id: String,
    pub received: Option<Timestamp>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    id: Option<String>,
    received_date_time: Option<String>,
}

/// The message with `internet_message_id` (angle brackets included) in `user`'s mailbox
/// (object id or UPN), if it is there.
pub async fn find_message(
    graph: &GraphClient,
    call: Call<'_>,
    user: &str,
    internet_message_id: &str,
    evidence: &mut HttpEvidence,
) -> Result<Option<FoundMessage>, GraphError> {
    let filter = format!(
        "internetMessageId eq '{}'",
        internet_message_id.replace('\'', "''")
    );
    let path = format!(
        "/users/{}/messages?$filter={}&$select=id,internetMessageId,receivedDateTime&$top=10",
        encode_segment(user),
        encode_query_value(&filter)
    );
    let found: Vec<Message> = graph.get_all(call, &path, evidence).await?;
    Ok(found.into_iter().find_map(|message| {
        Some(FoundMessage {
            id: message.id?,
            received: message
                .received_date_time
                .as_deref()
                .and_then(Timestamp::parse_utc),
        })
    }))
}

/// Deletes the probe message (it moves to Deleted Items, reference §3.9).
pub async fn delete_message(
    graph: &GraphClient,
    call: Call<'_>,
    user: &str,
    message_id: &str,
    evidence: &mut HttpEvidence,
) -> Result<(), GraphError> {
    let path = format!(
        "/users/{}/messages/{}",
        encode_segment(user),
        encode_segment(message_id)
    );
    graph.delete(call, &path, evidence).await.map(|_| ())
}
