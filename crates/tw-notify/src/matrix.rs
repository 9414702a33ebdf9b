//! Matrix client-server API: one `m.room.message` event per message,
//! `PUT <hs>/_matrix/client/v3/rooms/<room>/send/m.room.message/<txnId>`.
//!
//! The transaction id is the message id, which makes retries idempotent: the homeserver
//! answers a repeated transaction id (from the same access token) with the event it already
//! created instead of creating another. Room id and transaction id are percent-encoded as
//! path segments (`!room:example.org` → `%21room%3Aexample.org`).

use serde::Serialize;
use tw_core::Secret;

use crate::error::DeliveryError;
use crate::http::{self, describe};
use crate::text::{encode_path_segment, titled_text, trim_base};
use crate::Message;

#[derive(Serialize)]
struct RoomMessage<'a> {
    msgtype: &'a str,
    body: &'a str,
}

pub(crate) async fn send(
    http: &reqwest::Client,
    homeserver: &str,
    access_token: &Secret,
    room_id: &str,
    message: &Message,
) -> Result<(), DeliveryError> {
    let what = describe("matrix", homeserver);
    let text = titled_text(message);
    let url = format!(
        "{}/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
        trim_base(homeserver),
        encode_path_segment(room_id),
        encode_path_segment(&message.id)
    );
    let request = http
        .put(url)
        .bearer_auth(access_token.expose())
        .json(&RoomMessage {
            msgtype: "m.text",
            body: &text,
        });
    http::send(request, &what).await
}
