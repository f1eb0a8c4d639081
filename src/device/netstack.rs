//! The device's network stack as processes see it: every outbound connect
//! is classified at ALE_AUTH_CONNECT and every inbound accept at
//! ALE_AUTH_RECV_ACCEPT, with the process's identity; every packet of an
//! established flow is re-authorized after a filter change at its layer.
//!
//! A "packet" here is one read or write on the stream that moves bytes.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Windows;
use crate::net::{BoxFuture, BoxListener, BoxStream, Listener, Network};
use crate::trace::Direction;
use crate::wfp::FlowId;

/// A process's view of the network: the device's network, filtered.
pub struct ProcessNet {
    pub(super) os: Windows,
    pub(super) pid: u32,
}

impl Network for ProcessNet {
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxStream>> {
        Box::pin(async move {
            let local = SocketAddr::new(self.os.local_ip_for(addr.ip()), 0);
            let flow =
                self.os.authorize(self.pid, crate::wfp::Direction::Outbound, crate::wfp::Protocol::Tcp, local, addr)?;
            match self.os.raw_net().connect(addr).await {
                Ok(stream) => {
                    Ok(Box::pin(FlowStream { inner: stream, os: self.os.clone(), flow, dead: false }) as BoxStream)
                }
                Err(e) => {
                    self.os.close_flow(flow, &format!("connect failed: {e}"));
                    Err(e)
                }
            }
        })
    }

    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxListener>> {
        Box::pin(async move {
            let inner = self.os.raw_net().bind(addr).await?;
            Ok(Box::new(ProcessListener { inner, os: self.os.clone(), pid: self.pid }) as BoxListener)
        })
    }
}

/// A listener whose accepted connections pass ALE_AUTH_RECV_ACCEPT.
struct ProcessListener {
    inner: BoxListener,
    os: Windows,
    pid: u32,
}

impl Listener for ProcessListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            loop {
                let (stream, peer) = self.inner.accept().await?;
                let local = self.inner.local_addr()?;
                let local = if local.ip().is_unspecified() {
                    SocketAddr::new(self.os.local_ip_for(peer.ip()), local.port())
                } else {
                    local
                };
                match self.os.authorize(
                    self.pid,
                    crate::wfp::Direction::Inbound,
                    crate::wfp::Protocol::Tcp,
                    local,
                    peer,
                ) {
                    Ok(flow) => {
                        let stream = FlowStream { inner: stream, os: self.os.clone(), flow, dead: false };
                        return Ok((Box::pin(stream) as BoxStream, peer));
                    }
                    // Blocked: the connection is dropped (a real stack would
                    // drop the SYN; the simulated peer sees a close).
                    Err(_) => drop(stream),
                }
            }
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection on an authorized flow.
struct FlowStream {
    inner: BoxStream,
    os: Windows,
    flow: FlowId,
    dead: bool,
}

fn aborted(flow: FlowId) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, format!("flow {} torn down by the firewall", flow.0))
}

impl AsyncWrite for FlowStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.dead {
            return Poll::Ready(Err(aborted(self.flow)));
        }
        if !buf.is_empty() && self.os.packet(self.flow).is_err() {
            self.dead = true;
            return Poll::Ready(Err(aborted(self.flow)));
        }
        let result = self.inner.as_mut().poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result
            && *n > 0
        {
            self.os.data(self.flow, Direction::Out, *n);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.as_mut().poll_shutdown(cx)
    }
}

impl AsyncRead for FlowStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.dead {
            return Poll::Ready(Err(aborted(self.flow)));
        }
        let before = buf.filled().len();
        let result = self.inner.as_mut().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            let n = buf.filled().len() - before;
            if n > 0 {
                if self.os.packet(self.flow).is_err() {
                    // The packet is dropped and the flow torn down.
                    buf.set_filled(before);
                    self.dead = true;
                    return Poll::Ready(Err(aborted(self.flow)));
                }
                self.os.data(self.flow, Direction::In, n);
            }
        }
        result
    }
}

impl Drop for FlowStream {
    fn drop(&mut self) {
        if !self.dead {
            self.os.close_flow(self.flow, "closed");
        }
    }
}
