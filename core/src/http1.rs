//! The HTTP/1 request head as the proxy's front reads it: where it ends, how its body is framed,
//! and every RFC 9112 rule that a proxy must enforce *before* a request is routed or forwarded
//! (framing ambiguities are how requests get smuggled past a proxy). Pure: bytes in, verdict
//! out; fuzzed by `fuzz/fuzz_targets/http1_head.rs`.

/// Longest request head (request line and fields): 431 above it.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest request line: 414 above it (the target is what makes it long).
pub const MAX_REQUEST_LINE_BYTES: usize = 16 * 1024;
/// Most header fields in one head: 431 above it.
pub const MAX_HEADERS: usize = 100;
/// The HTTP/2 connection preface (RFC 9113 §3.4): a plaintext connection starting with it is h2c.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How the request's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body: the next request starts right after the head.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the end is known only by decoding.
    Chunked,
}

/// A complete, valid request head at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, final empty line included.
    pub len: usize,
    pub body: Body,
    /// An `Upgrade` request (WebSocket): after it, the bytes are the tunnel's.
    pub upgrade: bool,
}

/// Why a head is refused, with the status it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400: malformed or ambiguous; the text says which rule.
    Bad(&'static str),
    /// 414: the request line is longer than [`MAX_REQUEST_LINE_BYTES`].
    UriTooLong,
    /// 431: the head is longer than [`MAX_HEAD_BYTES`] or has more than [`MAX_HEADERS`] fields.
    TooLarge,
}

/// What the bytes read so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A complete head.
    Head(Head),
    /// The h2 connection preface: an h2c connection.
    H2c,
    /// Not complete yet, and within the limits: read more.
    Partial,
    Refused(Refusal),
}

/// Parses the head at the start of `buf` (which may hold body and pipelined bytes after it).
pub fn parse(buf: &[u8]) -> Parsed {
    if !buf.is_empty() && H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())]) {
        // Decided only on the whole preface: `P` may still become `PUT`.
        return if buf.len() >= H2_PREFACE.len() {
            Parsed::H2c
        } else {
            Parsed::Partial
        };
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
            Parsed::Refused(Refusal::TooLarge)
        }
        Ok(httparse::Status::Complete(_))
            if buf.iter().position(|&b| b == b'\n').unwrap_or(0) > MAX_REQUEST_LINE_BYTES =>
        {
            Parsed::Refused(Refusal::UriTooLong)
        }
        Ok(httparse::Status::Complete(len)) => match framing(&req) {
            Ok((body, upgrade)) => Parsed::Head(Head { len, body, upgrade }),
            Err(r) => Parsed::Refused(r),
        },
        Ok(httparse::Status::Partial) => {
            let line_end = buf.iter().position(|&b| b == b'\n');
            let line_ended = line_end.is_some();
            if line_end.unwrap_or(buf.len()) > MAX_REQUEST_LINE_BYTES {
                Parsed::Refused(Refusal::UriTooLong)
            } else if buf.len() > MAX_HEAD_BYTES {
                Parsed::Refused(Refusal::TooLarge)
            } else if line_ended && request_line_is_09(buf) {
                Parsed::Refused(Refusal::Bad(
                    "HTTP/0.9 requests (no version) are not served",
                ))
            } else {
                Parsed::Partial
            }
        }
        Err(httparse::Error::TooManyHeaders) => Parsed::Refused(Refusal::TooLarge),
        Err(_) if request_line_is_09(buf) => Parsed::Refused(Refusal::Bad(
            "HTTP/0.9 requests (no version) are not served",
        )),
        Err(e) => {
            let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
            if line_end > MAX_REQUEST_LINE_BYTES {
                Parsed::Refused(Refusal::UriTooLong)
            } else {
                Parsed::Refused(Refusal::Bad(describe(e)))
            }
        }
    }
}

/// The header fields of a head, as routing reads them (names compare case-insensitively;
/// values that are not UTF-8 cannot equal a configured string and are skipped).
pub struct Fields<'h, 'b>(&'h [httparse::Header<'b>]);

impl<'b> Fields<'_, 'b> {
    /// The first value of field `name`.
    pub fn get(&self, name: &str) -> Option<&'b [u8]> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

impl crate::RequestHeaders for Fields<'_, '_> {
    fn values(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
    }
}

/// Calls `f` with the method, the request target and the fields of the complete head at the
/// start of `buf` (one that [`parse`] accepted); `None` when there is none. The fields borrow
/// `buf`, so nothing is copied: this is how the front routes a request before any engine sees it.
pub fn with_fields<R>(buf: &[u8], f: impl FnOnce(&str, &str, &Fields<'_, '_>) -> R) -> Option<R> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => Some(f(req.method?, req.path?, &Fields(req.headers))),
        _ => None,
    }
}

/// `GET /\r\n`: a request line without a version.
fn request_line_is_09(buf: &[u8]) -> bool {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(buf);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.split(|&b| b == b' ').count() == 2
}

fn describe(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::Version => {
            "the request line's version is not HTTP/1.0 or HTTP/1.1 (or it has extra spaces)"
        }
        httparse::Error::Token => {
            "the request line is not `method SP target SP version` (one space each)"
        }
        httparse::Error::HeaderName => "a header field name is invalid (or an obsolete line fold)",
        httparse::Error::HeaderValue => {
            "a header field value holds a control character (or a bare CR)"
        }
        httparse::Error::NewLine => "a line ends in a bare CR",
        _ => "the request head is malformed",
    }
}

/// The body's framing, refusing what RFC 9112 §6 says a server must not guess at.
fn framing(req: &httparse::Request) -> Result<(Body, bool), Refusal> {
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut hosts = 0;
    let mut upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err(Refusal::Bad("more than one Content-Length"));
            }
            let v = h.value.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err(Refusal::Bad("Content-Length is not one decimal number"));
            }
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(Refusal::Bad("Content-Length is out of range"))?;
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Several fields make one list (RFC 9110 §5.3): its last coding is what counts.
            let last = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .map(<[u8]>::trim_ascii)
                .unwrap_or_default();
            chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    let http11 = req.version == Some(1);
    if hosts > 1 {
        return Err(Refusal::Bad("more than one Host"));
    }
    if http11 && hosts == 0 && req.path.is_some_and(|p| p.starts_with('/')) {
        return Err(Refusal::Bad("an HTTP/1.1 request without Host"));
    }
    let body = match (chunked, length) {
        (Some(_), Some(_)) => {
            return Err(Refusal::Bad(
                "both Content-Length and Transfer-Encoding (a smuggling vector)",
            ));
        }
        (Some(_), None) if !http11 => {
            return Err(Refusal::Bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        (Some(false), None) => {
            return Err(Refusal::Bad(
                "Transfer-Encoding whose final coding is not chunked",
            ));
        }
        (Some(true), None) => Body::Chunked,
        (None, Some(0)) | (None, None) => Body::None,
        (None, Some(n)) => Body::Length(n),
    };
    Ok((body, upgrade))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(head: &str) -> Refusal {
        match parse(head.as_bytes()) {
            Parsed::Refused(r) => r,
            other => panic!("{head:?} was not refused: {other:?}"),
        }
    }

    fn bad(head: &str) -> &'static str {
        match refused(head) {
            Refusal::Bad(why) => why,
            other => panic!("{head:?}: {other:?}, not 400"),
        }
    }

    fn head(s: &str) -> Head {
        match parse(s.as_bytes()) {
            Parsed::Head(h) => h,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn a_plain_get_ends_at_the_empty_line_and_has_no_body() {
        let h = head("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n");
        assert_eq!(h.len, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n".len());
        assert_eq!(h.body, Body::None);
        assert!(!h.upgrade);
    }

    #[test]
    fn bodies_are_framed_by_length_or_chunked() {
        let h = head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(h.body, Body::Length(12));
        let h = head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n");
        assert_eq!(h.body, Body::Chunked);
        let h = head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.body, Body::None);
    }

    #[test]
    fn a_partial_head_asks_for_more() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial);
        assert_eq!(parse(b"GET /"), Parsed::Partial);
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        // RFC 9112 §2.2: a recipient MAY recognize a single LF as a line terminator.
        assert_eq!(head("GET / HTTP/1.1\nHost: x\n\n").body, Body::None);
    }

    #[test]
    fn the_h2_preface_is_recognised_whole() {
        assert_eq!(parse(b"P"), Parsed::Partial);
        assert_eq!(parse(&H2_PREFACE[..10]), Parsed::Partial);
        assert_eq!(parse(H2_PREFACE), Parsed::H2c);
        // A method that merely starts like it is HTTP/1.
        assert!(matches!(
            parse(b"PUT / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Parsed::Head(_)
        ));
    }

    #[test]
    fn smuggling_vectors_are_400() {
        assert!(
            bad("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
                .contains("both")
        );
        assert!(
            bad("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n")
                .contains("more than one")
        );
        assert!(
            bad("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n")
                .contains("one decimal")
        );
        assert!(
            bad("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n").contains("one decimal")
        );
        assert!(
            bad("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n")
                .contains("range")
        );
        assert!(
            bad("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n")
                .contains("final coding")
        );
        assert!(
            bad("POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                .contains("HTTP/1.0")
        );
    }

    #[test]
    fn malformed_request_lines_are_400() {
        assert!(bad("GET  /path HTTP/1.1\r\nHost: x\r\n\r\n").contains("one space"));
        assert!(bad("GET /path  HTTP/1.1\r\nHost: x\r\n\r\n").contains("extra spaces"));
        assert!(bad("GET /\r\n").contains("HTTP/0.9"));
        assert!(bad("GET /\r\n\r\n").contains("HTTP/0.9"));
        assert!(bad("GET / HTTP/1.2\r\nHost: x\r\n\r\n").contains("version"));
    }

    #[test]
    fn malformed_fields_are_400() {
        assert!(bad("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n").contains("fold"));
        assert!(bad("GET / HTTP/1.1\r\nHost: x\rX-A: 1\r\n\r\n").contains("bare CR"));
        assert!(bad("GET / HTTP/1.1\r\nHo st: x\r\n\r\n").contains("name"));
        assert!(bad("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n").contains("control"));
        assert!(bad("GET / HTTP/1.1\r\n\r\n").contains("without Host"));
        assert!(bad("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").contains("more than one Host"));
        // Absolute form names its authority; HTTP/1.0 may omit Host.
        assert_eq!(head("GET http://x/ HTTP/1.1\r\n\r\n").body, Body::None);
        assert_eq!(head("GET / HTTP/1.0\r\n\r\n").body, Body::None);
    }

    #[test]
    fn fields_give_routing_its_target_host_and_headers() {
        use crate::RequestHeaders;
        let buf = b"GET /a?b HTTP/1.1\r\nHOST: x.test\r\nX-Tenant: one\r\nx-tenant: two\r\nX-Bin: \xff\r\n\r\nbody";
        let got = with_fields(buf, |method, target, fields| {
            let tenants: Vec<String> = fields.values("x-tenant").map(str::to_string).collect();
            (
                format!("{method} {target}"),
                fields.get("host").map(<[u8]>::to_vec),
                tenants,
                fields.values("x-bin").count(),
                fields.get("x-absent").is_none(),
            )
        });
        assert_eq!(
            got,
            Some((
                "GET /a?b".to_string(),
                Some(b"x.test".to_vec()),
                vec!["one".to_string(), "two".to_string()],
                0,
                true
            ))
        );
        assert_eq!(
            with_fields(b"GET / HTTP/1.1\r\nHost: x\r\n", |_, _, _| ()),
            None
        );
    }

    #[test]
    fn limits_are_414_and_431() {
        let long_target = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_REQUEST_LINE_BYTES));
        assert_eq!(refused(&long_target), Refusal::UriTooLong);
        // Complete, and still too long.
        assert_eq!(
            refused(&format!("{long_target}Host: x\r\n\r\n")),
            Refusal::UriTooLong
        );
        // Still being sent, already too long.
        assert_eq!(
            refused(&long_target[..long_target.len() - 11]),
            Refusal::UriTooLong
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            refused(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")),
            Refusal::TooLarge
        );
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n",
            "b".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(refused(&big), Refusal::TooLarge);
    }
}
