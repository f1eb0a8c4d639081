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

/// A 302 to `location` (500 if it cannot be a header value).
pub fn redirect(location: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    match http::HeaderValue::from_str(location) {
        Ok(v) => (http::StatusCode::FOUND, [(http::header::LOCATION, v)]).into_response(),
        Err(_) => (http::StatusCode::INTERNAL_SERVER_ERROR, "bad redirect").into_response(),
    }
}

/// Adds a `Set-Cookie` header (dropped if it cannot be a header value).
pub fn with_cookie(mut response: axum::response::Response, cookie: &str) -> axum::response::Response {
    if let Ok(v) = http::HeaderValue::from_str(cookie) {
        response.headers_mut().append(http::header::SET_COOKIE, v);
    }
    response
}

/// An upstream answer relayed to the client as it came, less the
/// hop-by-hop headers (what a reverse proxy sends back).
pub fn relay(upstream: crate::http::HttpResponse) -> axum::response::Response {
    let mut response = axum::response::Response::new(axum::body::Body::from(upstream.body));
    *response.status_mut() =
        axum::http::StatusCode::from_u16(upstream.status).unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    for (name, value) in &upstream.headers {
        if !matches!(name.as_str(), "connection" | "keep-alive" | "transfer-encoding" | "content-length") {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}
