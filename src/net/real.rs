//! The real side of the seam: tokio sockets and the system clock.
//!
//! Used when components face real peers or users (`lab serve`, real-mode
//! tests). Never used inside a simulation.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::{BoxFuture, BoxListener, BoxStream, Clock, Listener, Net, Network, UnixMillis, millis};

/// tokio's TCP, as a [`Network`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioNet;

impl TokioNet {
    /// A shared handle.
    pub fn shared() -> Net {
        Arc::new(TokioNet)
    }
}

/// A tokio listener that was bound before the component started (so that a
/// caller can learn an ephemeral port first).
pub struct TokioListener(pub tokio::net::TcpListener);

impl Listener for TokioListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            stream.set_nodelay(true)?;
            Ok((Box::pin(stream) as BoxStream, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Network for TokioNet {
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxStream>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::pin(stream) as BoxStream)
        })
    }

    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxListener>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            Ok(Box::new(TokioListener(listener)) as BoxListener)
        })
    }
}

/// The operating system's clock. Real mode only: simulated components get a
/// `SimClock`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        // Real mode only (see module docs).
        let now = SystemTime::now();
        UnixMillis(now.duration_since(SystemTime::UNIX_EPOCH).map(millis).unwrap_or(0))
    }
}
