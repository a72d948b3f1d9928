//! CloudEvents 1.0 over HTTP: structured, batch and binary modes (binding §3, JSON format).
//!
//! Parsed by hand rather than with cloudevents-sdk's HTTP deserializer, because that one (0.9):
//! detects structured mode case-sensitively, has no server-side batch mode, does not
//! percent-decode or unquote binary-mode headers, and rejects Event Grid's `"dataschema": "#"`
//! (a 400 Event Grid never retries: data loss). Rouse keeps each structured event's exact JSON
//! text for pass-through and validates the attributes the spec requires, strictly where the spec
//! is strict and leniently where Event Grid is sloppy (see [`Strictness`]).

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::percent::{self, Decoded};
use super::{Headers, ProtocolError};

/// How strictly to check what the spec only recommends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Strictness {
    /// Refuse extension attribute names outside `[a-z0-9]` (the spec's MUST). Off by default:
    /// some senders use `_`, and refusing means Event Grid drops the event.
    pub extension_names: bool,
}

/// One CloudEvent: the identity Rouse needs, and the event in structured JSON.
#[derive(Debug, Clone)]
pub struct CeEvent {
    pub id: String,
    pub source: String,
    pub event_type: String,
    /// The structured-mode JSON text (as received in structured/batch mode; built from the
    /// headers and body in binary mode).
    pub json: Box<RawValue>,
}

/// A parsed request: its events and what was tolerated on the way.
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<CeEvent>,
    /// Header values kept raw because they were not well-formed percent-encoding.
    pub raw_header_values: usize,
}

/// The transfer mode, from the content type (case-insensitive, binding §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Structured,
    Batch,
    Binary,
}

/// Which mode a request uses, or 415 when it is not a CloudEvent Rouse can read.
pub fn mode(headers: &Headers) -> Result<Mode, ProtocolError> {
    let ct = headers
        .get("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    let media = ct.split(';').next().unwrap_or("").trim();
    if media.starts_with("application/cloudevents-batch") {
        return if media == "application/cloudevents-batch+json" {
            Ok(Mode::Batch)
        } else {
            Err(ProtocolError::unsupported(format!(
                "unsupported batch format {media:?}"
            )))
        };
    }
    if media.starts_with("application/cloudevents") {
        return if media == "application/cloudevents+json" {
            Ok(Mode::Structured)
        } else {
            Err(ProtocolError::unsupported(format!(
                "unsupported event format {media:?} (only JSON)"
            )))
        };
    }
    if headers.get("ce-specversion").is_some() {
        return Ok(Mode::Binary);
    }
    Err(ProtocolError::unsupported(
        "not a CloudEvent: no application/cloudevents content type and no ce-specversion header",
    ))
}

/// Parses a POST body in whichever mode the headers say.
pub fn parse(headers: &Headers, body: &[u8], strict: Strictness) -> Result<Parsed, ProtocolError> {
    match mode(headers)? {
        Mode::Structured => {
            // Event Grid batches CloudEvents as an array: parse by shape, as the Functions host does.
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'[') {
                return batch(body, strict);
            }
            let raw: Box<RawValue> = serde_json::from_slice(body)
                .map_err(|e| ProtocolError::bad(format!("body is not a JSON event: {e}")))?;
            Ok(Parsed {
                events: vec![structured(raw, 0, strict)?],
                raw_header_values: 0,
            })
        }
        Mode::Batch => batch(body, strict),
        Mode::Binary => binary(headers, body, strict),
    }
}

fn batch(body: &[u8], strict: Strictness) -> Result<Parsed, ProtocolError> {
    let raws: Vec<Box<RawValue>> = serde_json::from_slice(body)
        .map_err(|e| ProtocolError::bad(format!("batch body is not a JSON array: {e}")))?;
    let mut events = Vec::with_capacity(raws.len());
    for (i, raw) in raws.into_iter().enumerate() {
        events.push(structured(raw, i, strict)?);
    }
    Ok(Parsed {
        events,
        raw_header_values: 0,
    })
}

fn is_json_media(ct: &str) -> bool {
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json"
        || media == "text/json"
        || media.ends_with("/json")
        || media.ends_with("+json")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Checks one structured event's attributes (JSON format §3, spec §3.1).
fn check(map: &Map<String, Value>, at: &str, strict: Strictness) -> Result<(), ProtocolError> {
    let bad = |m: String| ProtocolError::bad(format!("{at}: {m}"));
    match map.get("specversion") {
        Some(Value::String(v)) if v == "1.0" => {}
        Some(v) => {
            return Err(bad(format!(
                "specversion {v} is not supported (only \"1.0\")"
            )));
        }
        None => return Err(bad("specversion is required".into())),
    }
    for attr in ["id", "source", "type"] {
        match map.get(attr) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::String(_)) => return Err(bad(format!("{attr} must not be empty"))),
            Some(_) => return Err(bad(format!("{attr} must be a string"))),
            None => return Err(bad(format!("{attr} is required"))),
        }
    }
    if map.contains_key("data") && map.contains_key("data_base64") {
        return Err(bad("data and data_base64 are mutually exclusive".into()));
    }
    if let Some(Value::String(b64)) = map.get("data_base64")
        && base64::engine::general_purpose::STANDARD
            .decode(b64)
            .is_err()
    {
        return Err(bad("data_base64 is not valid base64".into()));
    }
    if let Some(t) = map.get("time") {
        let ok = t
            .as_str()
            .is_some_and(|s| s.parse::<jiff::Timestamp>().is_ok());
        if !ok {
            return Err(bad(format!("time {t} is not an RFC 3339 timestamp")));
        }
    }
    // `subject` must be non-empty by the spec, but Event Grid sends "" (e.g. on validation
    // events): tolerated, like `dataschema: "#"`, rather than a 400 that drops the event.
    if let Some(s) = map.get("subject")
        && !s.is_string()
    {
        return Err(bad("subject must be a string".into()));
    }
    // `dataschema` must be an absolute URI by the spec; Event Grid sends "#". Tolerated as is.
    for (name, value) in map {
        let known = matches!(
            name.as_str(),
            "specversion"
                | "id"
                | "source"
                | "type"
                | "datacontenttype"
                | "dataschema"
                | "subject"
                | "time"
                | "data"
                | "data_base64"
        );
        if known {
            continue;
        }
        if strict.extension_names && !valid_name(name) {
            return Err(bad(format!(
                "extension attribute name {name:?} must be lower-case letters and digits"
            )));
        }
        if value.is_object() || value.is_array() {
            return Err(bad(format!(
                "extension {name:?} must be a string, number or boolean"
            )));
        }
    }
    Ok(())
}

fn structured(
    raw: Box<RawValue>,
    index: usize,
    strict: Strictness,
) -> Result<CeEvent, ProtocolError> {
    let at = format!("event [{index}]");
    let map: Map<String, Value> = serde_json::from_str(raw.get())
        .map_err(|e| ProtocolError::bad(format!("{at} is not a JSON object: {e}")))?;
    check(&map, &at, strict)?;
    let s = |k: &str| map.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Ok(CeEvent {
        id: s("id"),
        source: s("source"),
        event_type: s("type"),
        json: raw,
    })
}

/// Binary mode: attributes from `ce-*` headers (decoded), `Content-Type` as datacontenttype,
/// the body as data. Rebuilt as a structured event for storage.
fn binary(headers: &Headers, body: &[u8], strict: Strictness) -> Result<Parsed, ProtocolError> {
    if headers.get("ce-datacontenttype").is_some() {
        return Err(ProtocolError::bad(
            "ce-datacontenttype must not be sent in binary mode (Content-Type is the data's type)",
        ));
    }
    let mut raw_values = 0;
    let mut attrs: BTreeMap<String, Value> = BTreeMap::new();
    for (name, value) in headers.iter() {
        let Some(attr) = name.strip_prefix("ce-") else {
            continue;
        };
        let decoded = percent::decode(value)
            .map_err(|e| ProtocolError::bad(format!("header {name}: {e}")))?;
        if matches!(decoded, Decoded::Raw(_)) {
            raw_values += 1;
        }
        attrs.insert(attr.to_string(), Value::String(decoded.into_string()));
    }
    let content_type = headers.get("content-type").filter(|c| !c.is_empty());
    if let Some(ct) = content_type {
        attrs.insert("datacontenttype".into(), Value::String(ct.to_string()));
    }
    let mut map: Map<String, Value> = attrs.into_iter().collect();
    if !body.is_empty() {
        let json_data = content_type
            .filter(|ct| is_json_media(ct))
            .and_then(|_| serde_json::from_slice::<Value>(body).ok());
        match json_data {
            Some(v) => {
                map.insert("data".into(), v);
            }
            None => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(body);
                map.insert("data_base64".into(), Value::String(b64));
            }
        }
    }
    check(&map, "binary-mode event", strict)?;
    let text = serde_json::to_string(&map).map_err(|e| ProtocolError::bad(e.to_string()))?;
    let json = RawValue::from_string(text).map_err(|e| ProtocolError::bad(e.to_string()))?;
    let s = |k: &str| map.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Ok(Parsed {
        events: vec![CeEvent {
            id: s("id"),
            source: s("source"),
            event_type: s("type"),
            json,
        }],
        raw_header_values: raw_values,
    })
}

/// An outgoing HTTP message: headers (lower-case names) and body.
pub type Message = (Vec<(String, String)>, Vec<u8>);

/// Headers and body for delivering `event` (structured JSON) in binary mode.
pub fn to_binary(event: &RawValue) -> Result<Message, String> {
    let map: Map<String, Value> =
        serde_json::from_str(event.get()).map_err(|e| format!("stored event: {e}"))?;
    let mut headers = Vec::new();
    let mut body = Vec::new();
    for (name, value) in &map {
        match name.as_str() {
            "data" => {
                body = match value {
                    Value::String(s)
                        if !map
                            .get("datacontenttype")
                            .and_then(Value::as_str)
                            .is_none_or(is_json_media) =>
                    {
                        s.clone().into_bytes()
                    }
                    v => serde_json::to_vec(v).map_err(|e| e.to_string())?,
                };
            }
            "data_base64" => {
                body = base64::engine::general_purpose::STANDARD
                    .decode(value.as_str().unwrap_or(""))
                    .map_err(|e| format!("data_base64: {e}"))?;
            }
            "datacontenttype" => {
                headers.push((
                    "content-type".into(),
                    value.as_str().unwrap_or("").to_string(),
                ));
            }
            _ => {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                headers.push((format!("ce-{name}"), percent::encode(&text)));
            }
        }
    }
    if map.contains_key("data") && !map.contains_key("datacontenttype") {
        headers.push(("content-type".into(), "application/json".into()));
    }
    Ok((headers, body))
}
