//! The proxy's request-head parser on arbitrary bytes: it must decide (head, h2c, partial or
//! refused) without panicking; a head it accepts ends at an empty line within the limits, and the
//! bytes after it (body, a pipelined request) never change the verdict on the head; the fields
//! the front routes a parked request by are readable from every head it accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rouse_core::RequestHeaders;
use rouse_core::http1::{MAX_HEAD_BYTES, Parsed, parse, with_fields};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Parsed::Head(h) => {
            assert!(h.len <= data.len() && h.len <= MAX_HEAD_BYTES);
            assert!(data[..h.len].ends_with(b"\n"), "a head ends with its empty line");
            assert_eq!(parse(&data[..h.len]), Parsed::Head(h), "what follows changed the head");
            let read = with_fields(&data[..h.len], |method, target, fields| {
                let _ = fields.get("host");
                method.len() + target.len() + fields.values("x-tenant").count()
            });
            assert!(read.is_some(), "an accepted head's fields are readable");
        }
        Parsed::Partial => assert!(data.len() <= MAX_HEAD_BYTES, "partial beyond the head limit"),
        Parsed::H2c | Parsed::Refused(_) => {}
    }
});
