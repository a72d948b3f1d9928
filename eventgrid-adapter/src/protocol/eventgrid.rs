//! The Event Grid schema on a webhook (reference §1): the `aeg-event-type` header, the JSON
//! array body (a lone object is accepted as an array of one), and the two control events.
//!
//! Parsed by hand with serde: there is no maintained Rust receiver crate, and every event is
//! kept as its *raw JSON text* so pass-through delivery is byte-identical (Event Grid's
//! 7-digit timestamps, `dataVersion: ""` and unknown fields survive untouched).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Headers, ProtocolError};

/// `aeg-event-type` values and the event types of the control events.
pub const VALIDATION_EVENT: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
pub const DELETION_EVENT: &str = "Microsoft.EventGrid.SubscriptionDeletedEvent";

/// One Event Grid event: the fields Rouse needs, plus its exact text.
#[derive(Debug, Clone)]
pub struct EgEvent {
    pub id: String,
    pub topic: String,
    pub event_type: String,
    pub subject: String,
    pub event_time: String,
    pub raw: Box<RawValue>,
}

/// What one POST in the Event Grid schema asks for.
#[derive(Debug)]
pub enum Delivery {
    /// Answer 200 `{"validationResponse": code}` at once.
    Validation { code: String },
    /// The subscription was deleted: answer 200, stop expecting events.
    Deletion { subscription_id: Option<String> },
    /// Legacy `aeg-event-type: Unsubscribe`: 202, ignored (what the Functions host does).
    Unsubscribe,
    /// Events to store and deliver (may be empty: `[]` is a no-op).
    Notification(Vec<EgEvent>),
}

#[derive(Deserialize)]
struct Fields {
    id: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(rename = "eventType")]
    event_type: Option<String>,
    subject: Option<String>,
    #[serde(rename = "eventTime")]
    event_time: Option<String>,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

/// Splits a body that is an array of events, or a single event object, into raw events.
fn raw_events(body: &[u8]) -> Result<Vec<Box<RawValue>>, ProtocolError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'[') => serde_json::from_slice::<Vec<Box<RawValue>>>(body)
            .map_err(|e| ProtocolError::bad(format!("body is not a JSON array of events: {e}"))),
        Some(b'{') => serde_json::from_slice::<Box<RawValue>>(body)
            .map(|v| vec![v])
            .map_err(|e| ProtocolError::bad(format!("body is not a JSON event object: {e}"))),
        _ => Err(ProtocolError::bad(
            "body must be a JSON array of events (or one event object)",
        )),
    }
}

fn fields(raw: &RawValue, index: usize) -> Result<Fields, ProtocolError> {
    serde_json::from_str(raw.get()).map_err(|e| {
        ProtocolError::bad(format!(
            "event [{index}] is not a JSON object with string fields: {e}"
        ))
    })
}

/// The validation code of a validation event: `data.validationCode`, also when `data` is a
/// JSON *string* holding that object (the double-encoding the Functions host accepts).
fn validation_code(data: Option<&serde_json::Value>) -> Option<String> {
    let data = data?;
    let object = match data {
        serde_json::Value::String(s) => serde_json::from_str::<serde_json::Value>(s).ok()?,
        other => other.clone(),
    };
    object
        .get("validationCode")
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

/// Reads one Event Grid POST. The `aeg-event-type` header decides; without it (Microsoft's own
/// troubleshooting curl) a body holding a validation event is still a validation.
pub fn parse(headers: &Headers, body: &[u8]) -> Result<Delivery, ProtocolError> {
    let kind = headers.get("aeg-event-type").map(str::to_ascii_lowercase);
    match kind.as_deref() {
        Some("unsubscribe") => return Ok(Delivery::Unsubscribe),
        Some("subscriptionvalidation" | "subscriptiondeletion" | "notification") | None => {}
        Some(other) => {
            return Err(ProtocolError::bad(format!(
                "unknown aeg-event-type {other:?} (expected SubscriptionValidation, Notification \
                 or SubscriptionDeletion)"
            )));
        }
    }
    let raws = raw_events(body)?;
    let first = raws.first().map(|r| fields(r, 0)).transpose()?;
    let first_type = first.as_ref().and_then(|f| f.event_type.as_deref());
    let is_validation = kind.as_deref() == Some("subscriptionvalidation")
        || (kind.is_none() && first_type == Some(VALIDATION_EVENT));
    if is_validation {
        let code = validation_code(first.as_ref().and_then(|f| f.data.as_ref()));
        return match code {
            Some(code) => Ok(Delivery::Validation { code }),
            None => Err(ProtocolError::bad(
                "validation event without data.validationCode (manual validation through \
                 validationUrl is not supported)",
            )),
        };
    }
    // By the header; without it only a lone deletion event counts (a Notification batch may
    // carry that system event as data to deliver).
    let lone_deletion = kind.is_none() && raws.len() == 1 && first_type == Some(DELETION_EVENT);
    if kind.as_deref() == Some("subscriptiondeletion") || lone_deletion {
        let id = first
            .as_ref()
            .and_then(|f| f.data.as_ref())
            .and_then(|d| d.get("eventSubscriptionId"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        return Ok(Delivery::Deletion {
            subscription_id: id,
        });
    }
    let mut events = Vec::with_capacity(raws.len());
    for (i, raw) in raws.into_iter().enumerate() {
        let f = fields(&raw, i)?;
        let missing = [
            ("id", f.id.is_none()),
            ("eventType", f.event_type.is_none()),
            ("eventTime", f.event_time.is_none()),
            ("subject", f.subject.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, absent)| absent.then_some(name))
        .collect::<Vec<_>>();
        if !missing.is_empty() {
            return Err(ProtocolError::bad(format!(
                "event [{i}] lacks required field(s) {}",
                missing.join(", ")
            )));
        }
        let id = f.id.unwrap_or_default();
        if id.is_empty() {
            return Err(ProtocolError::bad(format!("event [{i}] has an empty id")));
        }
        events.push(EgEvent {
            id,
            topic: f.topic.unwrap_or_default(),
            event_type: f.event_type.unwrap_or_default(),
            subject: f.subject.unwrap_or_default(),
            event_time: f.event_time.unwrap_or_default(),
            raw,
        });
    }
    Ok(Delivery::Notification(events))
}

/// The body of a successful validation answer.
pub fn validation_response(code: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "validationResponse": code })).unwrap_or_default()
}
