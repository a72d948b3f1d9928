//! Why the proxy answered a request itself: one small enum shared by the hold code (which
//! decides) and the response writer (which renders), so neither imports the other.

/// Why the proxy answered instead of the target. `as_str` feeds metric labels and JSON bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No route for the host/path/headers.
    NoRoute,
    /// The route's held-request count cap is reached.
    RouteQueueFull,
    /// The route's held-bytes cap is reached.
    RouteBytesFull,
    /// The proxy-wide held-request cap is reached.
    GlobalQueueFull,
    /// The proxy-wide held-bytes cap is reached.
    GlobalBytesFull,
    /// No endpoint became ready with capacity before the route's hold timeout.
    ColdStartTimeout,
    /// The target's endpoint source went away (shutting down).
    NoEndpoint,
    /// Every endpoint refused the connection and retries are exhausted.
    UpstreamUnreachable,
    /// The upstream failed after the connection was made.
    UpstreamError,
    /// The request itself is malformed (e.g. missing host).
    BadRequest,
    /// The client hung up while its request was held; nothing is sent (status 499 in metrics).
    ClientClosed,
    /// The target cannot get endpoints at all (e.g. its Service does not exist); the body's
    /// `detail` says why.
    TargetUnavailable,
    /// The path receives the event gateway's deliveries only ([`crate::delivery_guard`]).
    DeliveryPathReserved,
    /// The request head did not arrive within `proxy.connections.header_timeout_ms`.
    HeadTimeout,
    /// The request line is longer than the front allows ([`rouse_core::http1`]).
    UriTooLong,
    /// The request head is larger, or has more fields, than the front allows.
    HeadTooLarge,
    /// The listener holds `proxy.connections.max` connections already.
    ConnectionLimit,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoRoute => "no_route",
            Reason::RouteQueueFull => "route_queue_full",
            Reason::RouteBytesFull => "route_bytes_full",
            Reason::GlobalQueueFull => "global_queue_full",
            Reason::GlobalBytesFull => "global_bytes_full",
            Reason::ColdStartTimeout => "cold_start_timeout",
            Reason::NoEndpoint => "no_endpoint",
            Reason::UpstreamUnreachable => "upstream_unreachable",
            Reason::UpstreamError => "upstream_error",
            Reason::BadRequest => "bad_request",
            Reason::ClientClosed => "client_closed",
            Reason::TargetUnavailable => "target_unavailable",
            Reason::DeliveryPathReserved => "delivery_path_reserved",
            Reason::HeadTimeout => "header_timeout",
            Reason::UriTooLong => "uri_too_long",
            Reason::HeadTooLarge => "header_too_large",
            Reason::ConnectionLimit => "connection_limit",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Reason::NoRoute => 404,
            Reason::RouteQueueFull
            | Reason::RouteBytesFull
            | Reason::GlobalQueueFull
            | Reason::GlobalBytesFull => 503,
            Reason::NoEndpoint | Reason::TargetUnavailable => 503,
            Reason::ColdStartTimeout => 504,
            Reason::UpstreamUnreachable | Reason::UpstreamError => 502,
            Reason::BadRequest => 400,
            Reason::ClientClosed => 499,
            Reason::DeliveryPathReserved => 403,
            Reason::HeadTimeout => 408,
            Reason::UriTooLong => 414,
            Reason::HeadTooLarge => 431,
            Reason::ConnectionLimit => 503,
        }
    }

    /// Overflow is transient: tell the client when to come back.
    pub fn retry_after(self) -> bool {
        self.status() == 503
    }

    /// The human sentence of the JSON body's `message`.
    pub fn message(self) -> &'static str {
        match self {
            Reason::NoRoute => "no route matches this host, path and headers",
            Reason::RouteQueueFull => {
                "too many requests are already waiting for this route to start"
            }
            Reason::RouteBytesFull => "too many bytes are already waiting for this route to start",
            Reason::GlobalQueueFull => "the proxy holds as many waiting requests as it allows",
            Reason::GlobalBytesFull => "the proxy holds as many waiting bytes as it allows",
            Reason::ColdStartTimeout => {
                "no ready endpoint with capacity before the route's hold timeout"
            }
            Reason::NoEndpoint => "the target has no endpoint source",
            Reason::UpstreamUnreachable => "every endpoint refused the connection",
            Reason::UpstreamError => "the upstream failed",
            Reason::BadRequest => "the request is malformed or has no usable host",
            Reason::ClientClosed => "the client closed the connection while the request was held",
            Reason::TargetUnavailable => "the target cannot get endpoints; see detail",
            Reason::DeliveryPathReserved => {
                "this path receives the event gateway's deliveries only; send events to its webhook"
            }
            Reason::HeadTimeout => "the request head did not arrive in time",
            Reason::UriTooLong => "the request line is longer than 16 KiB",
            Reason::HeadTooLarge => {
                "the request head is larger than 64 KiB or has more than 100 fields"
            }
            Reason::ConnectionLimit => {
                "the proxy holds as many connections as it allows; retry shortly"
            }
        }
    }
}
