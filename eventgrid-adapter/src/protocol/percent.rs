//! Header values of the CloudEvents HTTP binding (§3.1.3.2): undo an RFC 7230 quoted-string,
//! then one round of percent-decoding. Hand-written because cloudevents-sdk does neither (it
//! calls `HeaderValue::to_str()` on the raw value).
//!
//! Lenient where senders are sloppy (sdk-go and sdk-java do not encode: a raw `100%` is kept as
//! is and reported), strict where the spec is (well-formed escapes that decode to invalid UTF-8
//! are refused).

/// How a value was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Decoded per the spec.
    Ok(String),
    /// Not well-formed percent-encoding (`%` without two hex digits): kept raw.
    Raw(String),
}

impl Decoded {
    pub fn into_string(self) -> String {
        match self {
            Decoded::Ok(s) | Decoded::Raw(s) => s,
        }
    }
}

/// Removes one RFC 7230 quoted-string layer (`"a b"` → `a b`, `\"` → `"`), if present.
fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return v.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Decodes one `ce-*` header value. `Err` = escapes that decode to invalid UTF-8.
pub fn decode(raw: &str) -> Result<Decoded, String> {
    let v = unquote(raw);
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => return Ok(Decoded::Raw(v)),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
        .map(Decoded::Ok)
        .map_err(|_| format!("{raw:?} percent-decodes to invalid UTF-8"))
}

/// Encodes a value for a `ce-*` header: space, `"`, `%` and everything outside U+0021..U+007E
/// as `%XY` per UTF-8 byte, upper-case hex.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_round_trips() {
        let encoded = "Euro%20%E2%82%AC%20%F0%9F%98%80";
        assert_eq!(encode("Euro € 😀"), encoded);
        assert_eq!(decode(encoded), Ok(Decoded::Ok("Euro € 😀".into())));
        assert_eq!(
            decode("euro%20%e2%82%ac"),
            Ok(Decoded::Ok("euro €".into())),
            "lower-case hex accepted"
        );
    }

    #[test]
    fn raw_percent_is_kept_and_invalid_utf8_refused() {
        assert_eq!(decode("100%"), Ok(Decoded::Raw("100%".into())));
        assert!(decode("%C0%A0").is_err());
        assert_eq!(decode("\"a b\""), Ok(Decoded::Ok("a b".into())));
        assert_eq!(
            decode(r#""say \"hi\"""#),
            Ok(Decoded::Ok("say \"hi\"".into()))
        );
    }
}
