//! Serving an axum router on a seam listener.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;

use crate::net::{BoxListener, BoxStream};

/// The peer of a request, available to handlers as
/// `ConnectInfo<PeerAddr>`.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// Adapts a seam listener to axum.
pub struct SeamListener(BoxListener);

impl axum::serve::Listener for SeamListener {
    type Io = BoxStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(conn) => return conn,
                // A failed accept (e.g. a connection reset before it was
                // accepted) is not fatal; back off briefly and go on.
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, SeamListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, SeamListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    headers.get(http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// Serves `router` on `listener` until the host stops.
pub async fn serve(listener: BoxListener, router: Router) -> io::Result<()> {
    axum::serve(SeamListener(listener), router.into_make_service_with_connect_info::<PeerAddr>()).await
}
