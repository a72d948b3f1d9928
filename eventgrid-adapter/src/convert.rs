//! Delivery bodies: the stored events in the subscription's delivery format. Event Grid events
//! become CloudEvents the way Event Grid maps them (id, source = topic, type = eventType,
//! subject, time = eventTime, data), built with cloudevents-sdk's event model — the part of the
//! SDK that fits: the events are Rouse's own, so its strict attribute checks are right here.

use cloudevents::{EventBuilder, EventBuilderV10};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::config::Format;
use crate::protocol::cloudevents::{Message, to_binary};
use crate::queue::Item;
use crate::store::Kind;

/// An Event Grid event as a CloudEvent (structured JSON).
pub fn eventgrid_to_cloudevent(json: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("stored event: {e}"))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let topic = s("topic");
    let mut b = EventBuilderV10::new()
        .id(s("id"))
        .source(if topic.is_empty() {
            "/".to_string()
        } else {
            topic
        })
        .ty(s("eventType"));
    let subject = s("subject");
    if !subject.is_empty() {
        b = b.subject(subject);
    }
    // Event Grid writes RFC 3339 with up to 7 fractional digits; skip a time it cannot read
    // rather than lose the event.
    let time = s("eventTime");
    if time.parse::<jiff::Timestamp>().is_ok() {
        b = b.time(time.as_str());
    }
    if let Some(data) = v.get("data") {
        b = b.data("application/json", data.clone());
    }
    let event = b.build().map_err(|e| format!("as a CloudEvent: {e}"))?;
    serde_json::to_string(&event).map_err(|e| e.to_string())
}

fn cloudevent_json(item: &Item) -> Result<String, String> {
    match item.event.kind {
        Kind::CloudEvent => Ok(item.event.json.clone()),
        Kind::EventGrid => eventgrid_to_cloudevent(&item.event.json),
    }
}

/// Headers and body of one delivery request for `items` (one item unless batching).
pub fn request(format: Format, items: &[Item]) -> Result<Message, String> {
    match format {
        Format::Eventgrid => {
            if let Some(i) = items.iter().find(|i| i.event.kind != Kind::EventGrid) {
                return Err(format!(
                    "event {} is a CloudEvent; it cannot be sent as Event Grid",
                    i.event.seq
                ));
            }
            let mut body =
                Vec::with_capacity(items.iter().map(|i| i.event.json.len() + 1).sum::<usize>() + 2);
            body.push(b'[');
            for (n, i) in items.iter().enumerate() {
                if n > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(i.event.json.as_bytes());
            }
            body.push(b']');
            Ok((
                vec![
                    (
                        "content-type".into(),
                        "application/json; charset=utf-8".into(),
                    ),
                    ("aeg-event-type".into(), "Notification".into()),
                ],
                body,
            ))
        }
        Format::CloudeventsStructured if items.len() == 1 => {
            let json = cloudevent_json(&items[0])?;
            Ok((
                vec![(
                    "content-type".into(),
                    "application/cloudevents+json; charset=utf-8".into(),
                )],
                json.into_bytes(),
            ))
        }
        Format::CloudeventsStructured => {
            let parts: Result<Vec<String>, String> = items.iter().map(cloudevent_json).collect();
            let body = format!("[{}]", parts?.join(","));
            Ok((
                vec![(
                    "content-type".into(),
                    "application/cloudevents-batch+json; charset=utf-8".into(),
                )],
                body.into_bytes(),
            ))
        }
        Format::CloudeventsBinary => {
            let [item] = items else {
                return Err("binary mode carries one event per request".into());
            };
            let json = cloudevent_json(item)?;
            let raw = RawValue::from_string(json).map_err(|e| e.to_string())?;
            to_binary(&raw)
        }
    }
}
