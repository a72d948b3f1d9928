//! The Event Grid parser on arbitrary bodies and `aeg-event-type` values: it must return
//! events or an error, never panic, and every accepted event must be valid JSON with an id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rouse_eventgrid::protocol::{Headers, eventgrid};

fuzz_target!(|input: (&str, &[u8])| {
    let (kind, body) = input;
    let headers = Headers::new([("aeg-event-type".to_string(), kind.to_string())]);
    if let Ok(eventgrid::Delivery::Notification(events)) = eventgrid::parse(&headers, body) {
        for e in events {
            assert!(!e.id.is_empty());
            assert!(serde_json::from_str::<serde_json::Value>(e.raw.get()).is_ok());
        }
    }
});
