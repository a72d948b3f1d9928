//! The connection as the engine sees it: pingora's L4 stream plus a small write buffer, so a
//! response head and a small body leave in one segment and one syscall. pingora's own listener
//! gives its streams this buffer (one MSS) through a crate-private setter; a stream built from a
//! `TcpStream` has none, and every response would cost two writes.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::park::Handoff;

/// Writes smaller than this are gathered until a flush (pingora's default: one Ethernet MSS).
const WRITE_BUFFER: usize = 1460;

#[derive(Debug)]
pub struct FrontStream {
    inner: L4Stream,
    /// Gathered writes; `written` of them are already sent. Freed once sent, so an idle or held
    /// connection keeps no buffer.
    buf: Vec<u8>,
    written: usize,
    /// A parked request's hold outcome, for the engine's forwarder to take with the request
    /// ([`super::park`]). The engine lends the stream out only by shared reference.
    handoff: Mutex<Option<Box<Handoff>>>,
}

impl FrontStream {
    pub fn new(inner: L4Stream) -> Self {
        FrontStream {
            inner,
            buf: Vec::new(),
            written: 0,
            handoff: Mutex::new(None),
        }
    }

    /// Attaches the outcome of the hold of the request about to be handed to the engine
    /// (`None`: it was not parked), replacing any left over.
    pub fn set_handoff(&mut self, handoff: Option<Box<Handoff>>) {
        *self.handoff.get_mut().unwrap_or_else(|p| p.into_inner()) = handoff;
    }

    /// Takes the outcome attached by [`FrontStream::set_handoff`], if any.
    pub fn take_handoff(&self) -> Option<Box<Handoff>> {
        self.handoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Puts `data` back in front of what the socket will return next.
    pub fn rewind(&mut self, data: &[u8]) {
        self.inner.rewind(data);
    }

    /// Sends the gathered writes.
    fn poll_send_buffer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for FrontStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FrontStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buf.len() + data.len() > WRITE_BUFFER {
            ready!(this.poll_send_buffer(cx))?;
        }
        if data.len() >= WRITE_BUFFER {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        if this.buf.capacity() == 0 {
            this.buf.reserve_exact(WRITE_BUFFER);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_buffer(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_buffer(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for FrontStream {
    async fn shutdown(&mut self) {
        let _ = self.flush().await;
        Shutdown::shutdown(&mut self.inner).await;
    }
}

impl UniqueID for FrontStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for FrontStream {}

impl GetTimingDigest for FrontStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for FrontStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for FrontStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for FrontStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A head and a small body written separately reach the peer in one read after one flush;
    /// nothing is sent before the flush; a large write goes straight through.
    #[tokio::test]
    async fn small_writes_are_gathered_until_a_flush() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move { tokio::net::TcpStream::connect(addr).await });
        let (server, _) = listener.accept().await.expect("accept");
        let mut peer = client.await.expect("join").expect("connect");
        let mut s = FrontStream::new(L4Stream::from(server));
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
            .await
            .expect("head");
        s.write_all(b"ok").await.expect("body");
        let mut b = [0u8; 4096];
        assert!(
            tokio::time::timeout(Duration::from_millis(100), peer.read(&mut b))
                .await
                .is_err(),
            "nothing leaves before the flush"
        );
        s.flush().await.expect("flush");
        let n = peer.read(&mut b).await.expect("read");
        assert!(b[..n].ends_with(b"\r\n\r\nok"), "one segment: {n} bytes");
        let big = vec![b'x'; 64 * 1024];
        s.write_all(&big).await.expect("big");
        let mut got = 0;
        while got < big.len() {
            got += peer.read(&mut b).await.expect("read");
        }
        assert_eq!(got, big.len(), "a large write is not held back");
    }
}
