//! The CloudEvents parser (all three modes) and the header decoder on arbitrary input: no
//! panics; accepted events have the required attributes; decode(encode(x)) == x.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rouse_eventgrid::protocol::cloudevents::{self, Strictness};
use rouse_eventgrid::protocol::{Headers, percent};

fuzz_target!(|input: (&str, Vec<(String, String)>, &[u8])| {
    let (content_type, ce_headers, body) = input;
    let mut pairs = vec![("content-type".to_string(), content_type.to_string())];
    pairs.extend(ce_headers.into_iter().map(|(k, v)| (format!("ce-{k}"), v)));
    let headers = Headers::new(pairs);
    for strict in [Strictness::default(), Strictness { extension_names: true }] {
        if let Ok(parsed) = cloudevents::parse(&headers, body, strict) {
            for e in parsed.events {
                assert!(!e.id.is_empty() && !e.source.is_empty() && !e.event_type.is_empty());
                let v: serde_json::Value = serde_json::from_str(e.json.get()).expect("stored JSON");
                assert_eq!(v["specversion"], "1.0");
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let encoded = percent::encode(text);
        assert_eq!(percent::decode(&encoded), Ok(percent::Decoded::Ok(text.to_string())));
    }
});
