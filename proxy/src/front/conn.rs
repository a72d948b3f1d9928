//! One plaintext connection: read a request head under deadlines, check it, park it if its
//! target is cold ([`super::park`]), hand it to the engine with the head replayed, and when the
//! engine gives the connection back (keep-alive), start over. Bytes read past a request (a
//! pipelined next request) are kept and parsed first next time, so pipelined requests are
//! answered in order.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_core::server::ShutdownWatch;
use std::os::fd::AsRawFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::park::{self, Parked};
use super::stream::FrontStream;
use super::{Engine, Limits};
use crate::event_gateway::GatewaySlot;
use crate::forward::respond::error_body;
use crate::reason::Reason;
use crate::state::ProxyState;
use rouse_core::http1::{self as head, Body, Head, Parsed, Refusal};

/// Read size while waiting for a head: most heads fit, and an idle connection keeps no more.
const READ_CHUNK: usize = 1024;
/// After refusing a request, how long (and how much) the client's unread bytes are drained so
/// the close does not turn into a reset that destroys the answer in flight.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// Everything a connection needs, moved into its task.
pub struct Conn {
    pub engine: Arc<Engine>,
    pub state: Arc<ProxyState>,
    pub events: Arc<GatewaySlot>,
    pub limits: Limits,
    pub shutdown: ShutdownWatch,
}

/// How reading the next head ended.
enum Next {
    Head(Head),
    H2c,
    /// Closed by the client, idle past the keep-alive timeout, or idle while draining.
    Gone,
    /// Bytes of a head arrived but not the whole head in time.
    TimedOut,
    Refused(Refusal),
}

impl Conn {
    /// The connection's stream, built before its task: what `serve` does not keep (the socket
    /// and its digest are moved into the stream) then takes no room in the connection's future.
    pub fn stream(tcp: TcpStream, peer: std::net::SocketAddr) -> Box<FrontStream> {
        let _ = tcp.set_nodelay(true);
        // The client's address, for forwarding headers and logs: recorded as pingora's own
        // listener does, so the engine finds it where it looks.
        let digest = SocketDigest::from_raw_fd(tcp.as_raw_fd());
        let _ = digest.peer_addr.set(Some(peer.into()));
        let mut stream = Box::new(FrontStream::new(L4Stream::from(tcp)));
        stream.set_socket_digest(digest);
        stream
    }

    /// Serves the connection until it closes; `_permit` counts it against the connection cap.
    pub async fn serve(mut self, mut stream: Box<FrontStream>, _permit: OwnedSemaphorePermit) {
        self.state.metrics.connections.inc();
        // Bytes read and not yet handed to the engine.
        let mut pending = BytesMut::new();
        let mut first = true;
        let mut persisted = None;
        loop {
            match self.next_head(&mut stream, &mut pending, first).await {
                Next::Gone => break,
                Next::TimedOut => {
                    // Boxed: refusals are rare, and inline their future would take its room in
                    // every connection's (parked ones included).
                    Box::pin(self.answer(&mut stream, Reason::HeadTimeout, None)).await;
                    break;
                }
                Next::Refused(r) => {
                    let (reason, detail) = match r {
                        Refusal::Bad(why) => (Reason::BadRequest, Some(why)),
                        Refusal::UriTooLong => (Reason::UriTooLong, None),
                        Refusal::TooLarge => (Reason::HeadTooLarge, None),
                    };
                    Box::pin(self.answer(&mut stream, reason, detail)).await;
                    break;
                }
                Next::H2c => {
                    stream.rewind(&pending);
                    // Pingora recognises the preface again and serves the h2 connection.
                    let _ = self.engine.process_new(stream, &self.shutdown).await;
                    break;
                }
                Next::Head(h) => {
                    // A cold target's request waits here, as little more than this socket
                    // and its head, and goes on with the outcome of its hold.
                    let handoff = match park::candidate(&self.state, &self.events, &pending, &h) {
                        None => None,
                        Some(c) => {
                            match park::park(&self.state, c, &mut stream, &mut pending).await {
                                Parked::Handoff(handoff) => Some(handoff),
                                Parked::Gone => break,
                            }
                        }
                    };
                    stream.set_handoff(handoff);
                    // Hand over the head and the body bytes already read; keep what follows
                    // (a pipelined request). A chunked body's end is known only by decoding it,
                    // and after an upgrade the bytes are the tunnel's: those go whole.
                    let give = match (h.body, h.upgrade) {
                        (_, true) | (Body::Chunked, _) => pending.len(),
                        (Body::None, false) => h.len,
                        (Body::Length(n), false) => {
                            h.len
                                + usize::try_from(n)
                                    .unwrap_or(usize::MAX)
                                    .min(pending.len() - h.len)
                        }
                    };
                    let handed = pending.split_to(give);
                    stream.rewind(&handed);
                    drop(handed);
                    let mut session = ServerSession::new_http1(stream);
                    match persisted.take() {
                        Some(settings) => {
                            pingora_core::apps::HttpPersistentSettings::apply_to_session(
                                settings,
                                &mut session,
                            )
                        }
                        None => {
                            session.set_keepalive(Some(self.limits.keepalive_timeout.as_secs()))
                        }
                    }
                    if *self.shutdown.borrow() {
                        session.set_keepalive(None);
                    }
                    let Some(reused) = self.engine.process_new_http(session, &self.shutdown).await
                    else {
                        break;
                    };
                    let (s, settings) = reused.consume();
                    stream = match s.into_any().downcast::<FrontStream>() {
                        Ok(s) => s,
                        Err(_) => break,
                    };
                    // Normally taken by the forwarder; never kept (with its slot) while idle.
                    stream.set_handoff(None);
                    persisted = settings;
                    first = false;
                }
            }
        }
        self.state.metrics.connections.dec();
    }

    /// Reads until `pending` starts with a complete head (or the connection must end). A new
    /// connection's head must be complete within the header timeout of the accept; after a
    /// request, the next head's first byte may take the keep-alive timeout, and the head must
    /// then be complete within the header timeout of that byte.
    async fn next_head(
        &mut self,
        stream: &mut FrontStream,
        pending: &mut BytesMut,
        first: bool,
    ) -> Next {
        let idle = if first {
            self.limits.header_timeout
        } else {
            self.limits.keepalive_timeout
        };
        // A new connection's clock starts at once; a kept-alive one's at the next head's first
        // byte (or now, when pipelined bytes are already here).
        let mut deadline =
            (first || !pending.is_empty()).then(|| Instant::now() + self.limits.header_timeout);
        if !first && pending.is_empty() && *self.shutdown.borrow() {
            return Next::Gone;
        }
        loop {
            if !pending.is_empty() {
                match head::parse(pending) {
                    Parsed::Head(h) => return Next::Head(h),
                    Parsed::H2c if first => return Next::H2c,
                    Parsed::H2c => {
                        return Next::Refused(Refusal::Bad(
                            "the h2 preface after an HTTP/1 request on the same connection",
                        ));
                    }
                    Parsed::Refused(r) => return Next::Refused(r),
                    Parsed::Partial => {}
                }
            }
            let until = deadline.unwrap_or_else(|| Instant::now() + idle);
            if pending.capacity() - pending.len() < READ_CHUNK / 2 {
                pending.reserve(READ_CHUNK.max(pending.len()));
            }
            let read = tokio::select! {
                r = tokio::time::timeout_at(until, stream.read_buf(pending)) => r,
                // Draining: a connection between requests is closed now; one in the middle of
                // a head gets its answer (with `Connection: close`).
                _ = self.shutdown.changed(), if pending.is_empty() => return Next::Gone,
            };
            match read {
                Err(_) if pending.is_empty() => return Next::Gone,
                Err(_) => return Next::TimedOut,
                Ok(Ok(0)) | Ok(Err(_)) => return Next::Gone,
                Ok(Ok(_)) => {
                    deadline.get_or_insert_with(|| Instant::now() + self.limits.header_timeout);
                }
            }
        }
    }

    /// Writes the proxy's own JSON answer for a head it refused, then closes gracefully.
    async fn answer(&self, stream: &mut FrontStream, reason: Reason, detail: Option<&str>) {
        let m = &self.state.metrics;
        m.requests
            .with_label_values(&["-", reason_code(reason)])
            .inc();
        m.rejections
            .with_label_values(&["-", reason.as_str()])
            .inc();
        tracing::debug!(reason = reason.as_str(), detail, "Request head refused.");
        let _ = write_and_close(stream, &response(reason, detail)).await;
    }
}

fn reason_code(reason: Reason) -> &'static str {
    match reason.status() {
        400 => "400",
        408 => "408",
        414 => "414",
        431 => "431",
        503 => "503",
        _ => "000",
    }
}

/// A complete `Connection: close` response with the proxy's JSON error body.
fn response(reason: Reason, detail: Option<&str>) -> Vec<u8> {
    let retry_after = reason.retry_after().then_some(1);
    let body = error_body(None, reason, None, retry_after, detail);
    let status =
        http::StatusCode::from_u16(reason.status()).unwrap_or(http::StatusCode::BAD_REQUEST);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if let Some(secs) = retry_after {
        out.push_str(&format!("retry-after: {secs}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out
}

async fn write_and_close(stream: &mut FrontStream, bytes: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(LINGER, async {
        stream.write_all(bytes).await?;
        stream.flush().await?;
        stream.shutdown().await?;
        // Drain what the client still sends, so closing does not reset the connection
        // before it has read the answer.
        // On the heap: an array here would take its 4 KiB in every connection's future
        // (idle and parked ones included), refused or not.
        let mut sink = vec![0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
        Ok(())
    })
    .await
    .unwrap_or(Ok(()))
}

/// Over the connection cap: a 503 written straight into the fresh socket's empty send buffer
/// (it cannot block), then closed. No task, no buffer: a flood costs the accept and this write.
pub fn refuse_at_capacity(tcp: TcpStream) {
    let bytes = response(Reason::ConnectionLimit, None);
    let _ = tcp.try_write(&bytes);
}
