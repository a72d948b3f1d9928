//! Wire formats, parsed without I/O: Event Grid's schema ([`eventgrid`]), CloudEvents 1.0 in
//! its three HTTP modes ([`cloudevents`]) with the header encoding of the HTTP binding
//! ([`percent`]), and the CloudEvents webhook handshake ([`handshake`]). Each function takes
//! headers and body bytes and returns events or a [`ProtocolError`] carrying the status to answer.

pub mod cloudevents;
pub mod eventgrid;
pub mod handshake;
pub mod percent;

/// Request headers with case-insensitive names (values as received, trimmed).
#[derive(Debug, Clone, Default)]
pub struct Headers {
    pairs: Vec<(String, String)>,
    /// Names (lower-case) of the headers whose value was not UTF-8 ([`Headers::from_bytes`]).
    not_utf8: Vec<String>,
}

impl Headers {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Headers {
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
                .collect(),
            not_utf8: Vec::new(),
        }
    }

    /// Headers as they came off the wire. Raw UTF-8 (e.g. an unencoded `ce-subject` from
    /// sdk-go) is kept as is; a value that is not UTF-8 is kept lossily (U+FFFD) *and* its
    /// header is remembered ([`Headers::not_utf8`]), so the gateway can refuse the request
    /// rather than act on a value that no longer says what was sent.
    pub fn from_bytes<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut not_utf8 = Vec::new();
        let pairs = pairs
            .into_iter()
            .map(|(k, v)| {
                let k = k.to_ascii_lowercase();
                let v = match std::str::from_utf8(v) {
                    Ok(v) => v.trim().to_string(),
                    Err(_) => {
                        if !not_utf8.contains(&k) {
                            not_utf8.push(k.clone());
                        }
                        String::from_utf8_lossy(v).trim().to_string()
                    }
                };
                (k, v)
            })
            .collect();
        Headers { pairs, not_utf8 }
    }

    /// The headers (lower-case names) at least one value of which was not UTF-8.
    pub fn not_utf8(&self) -> impl Iterator<Item = &str> {
        self.not_utf8.iter().map(String::as_str)
    }

    /// The first value of `name` (lower-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Why a request cannot be accepted, with the status that tells the sender whether to retry
/// (400/415 = never retry this content; 401/403 = credentials; 413 = too large).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ProtocolError {
    pub status: u16,
    pub message: String,
}

impl ProtocolError {
    pub fn bad(message: impl Into<String>) -> Self {
        ProtocolError {
            status: 400,
            message: message.into(),
        }
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        ProtocolError {
            status: 415,
            message: message.into(),
        }
    }
}
