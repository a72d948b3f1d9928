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
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Headers(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
                .collect(),
        )
    }

    /// The first value of `name` (lower-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
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
