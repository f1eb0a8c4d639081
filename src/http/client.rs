//! An HTTP/1.1 client over the seam, with one kept-alive connection per
//! destination.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::sync::{Mutex, PoisonError};
use url::Url;

use crate::net::{Directory, Net};

/// Why a request got no response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The local firewall refused the connection.
    #[error("blocked by the firewall: {0}")]
    Blocked(String),
    /// An established connection was torn down (e.g. by re-authorization).
    #[error("connection cut: {0}")]
    Cut(String),
    /// Nothing listens there.
    #[error("connection refused: {0}")]
    Refused(String),
    /// The URL cannot be fetched.
    #[error("bad URL: {0}")]
    BadUrl(String),
    /// Any other transport or protocol failure.
    #[error("{0}")]
    Failed(String),
    /// A redirect loop or an overlong chain.
    #[error("too many redirects")]
    TooManyRedirects,
}

impl FetchError {
    /// Classifies an I/O error from the seam.
    pub fn from_io(e: &io::Error) -> FetchError {
        match e.kind() {
            io::ErrorKind::PermissionDenied => FetchError::Blocked(e.to_string()),
            io::ErrorKind::ConnectionAborted => FetchError::Cut(e.to_string()),
            io::ErrorKind::ConnectionRefused => FetchError::Refused(e.to_string()),
            _ => FetchError::Failed(e.to_string()),
        }
    }

    /// Classifies a hyper error, looking through it for the I/O cause.
    fn from_hyper(e: &hyper::Error) -> FetchError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<io::Error>() {
                return FetchError::from_io(io);
            }
            source = s.source();
        }
        FetchError::Failed(e.to_string())
    }
}

/// A complete response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// The URL that was requested.
    pub url: Url,
}

impl HttpResponse {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `Location` header resolved against the request URL.
    pub fn location(&self) -> Option<Url> {
        let loc = self.header("location")?;
        self.url.join(loc).ok()
    }

    /// Whether this is a redirect.
    pub fn is_redirect(&self) -> bool {
        matches!(self.status, 301 | 302 | 303 | 307 | 308)
    }
}

/// A request to send.
#[derive(Clone, Debug)]
pub struct Fetch {
    /// Method.
    pub method: Method,
    /// Absolute URL.
    pub url: Url,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body and its content type.
    pub body: Option<(String, Bytes)>,
}

impl Fetch {
    /// An incoming request forwarded to `url` by a reverse proxy: its
    /// method, its headers less the hop-by-hop ones and those named in
    /// `drop` (lowercase), and its body with its content type.
    pub fn forwarded(method: Method, url: Url, headers: &http::HeaderMap, body: Bytes, drop: &[&str]) -> Fetch {
        let mut fetch = Fetch { method, url, headers: Vec::new(), body: None };
        for (name, value) in headers {
            let hop = matches!(
                name.as_str(),
                "host" | "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "te" | "upgrade"
            );
            if !hop
                && !drop.contains(&name.as_str())
                && let Ok(v) = value.to_str()
            {
                fetch.headers.push((name.to_string(), v.to_string()));
            }
        }
        if !body.is_empty() {
            let content_type = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_string();
            fetch.body = Some((content_type, body));
        }
        fetch
    }

    /// A GET of `url`.
    pub fn get(url: Url) -> Self {
        Fetch { method: Method::GET, url, headers: Vec::new(), body: None }
    }

    /// A POST of a URL-encoded form.
    pub fn post_form(url: Url, fields: &[(String, String)]) -> Self {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        Fetch {
            method: Method::POST,
            url,
            headers: Vec::new(),
            body: Some(("application/x-www-form-urlencoded".into(), Bytes::from(body))),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// An HTTP client on one host's network. Cheap to clone; clones share
/// connections.
#[derive(Clone)]
pub struct HttpClient {
    net: Net,
    directory: Directory,
    pool: Arc<Mutex<Pool>>,
}

/// Idle kept-alive connections per server address, the most recently used
/// last (reused first), at most [`MAX_IDLE_PER_ADDR`] each.
type Pool = BTreeMap<SocketAddr, Vec<SendRequest<Full<Bytes>>>>;

/// How many idle connections a client keeps per server address: enough for
/// a gateway forwarding many concurrent requests to one origin without
/// opening a connection per request.
pub const MAX_IDLE_PER_ADDR: usize = 64;

/// How long a request may go unanswered (connection, request and whole
/// response); its connection is dropped with it.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl HttpClient {
    /// A client using `net`, resolving names with `directory`.
    pub fn new(net: Net, directory: Directory) -> Self {
        HttpClient { net, directory, pool: Arc::new(Mutex::new(Pool::new())) }
    }

    /// The name service this client uses.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Sends one request (no redirects followed) and reads the whole
    /// response, within [`REQUEST_TIMEOUT`]: like a browser, a request that
    /// gets no answer (a connection black-holed by a partition) fails
    /// instead of holding its caller for ever.
    pub async fn send(&self, fetch: Fetch) -> Result<HttpResponse, FetchError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.send_unbounded(fetch)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Failed(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))),
        }
    }

    async fn send_unbounded(&self, fetch: Fetch) -> Result<HttpResponse, FetchError> {
        let addr = self.directory.socket_addr_of_url(&fetch.url).map_err(FetchError::BadUrl)?;
        let pooled = self.idle(addr);
        let reused = match pooled {
            Some(mut s) => match Self::exchange(&mut s, build_request(&fetch)?).await {
                Ok(r) => Some((s, r)),
                // A kept-alive connection the server dropped while it sat
                // idle (a restarted server resets it) fails before any
                // answer: like browsers, try once more on a new connection.
                // Cuts and blocks by the local firewall are not retried:
                // they are the answer.
                Err(FetchError::Failed(_)) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        let (sender, response) = match reused {
            Some(pair) => pair,
            None => {
                let mut fresh = self.connect(addr).await?;
                let r = Self::exchange(&mut fresh, build_request(&fetch)?).await?;
                (fresh, r)
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| FetchError::from_hyper(&e))?.to_bytes();
        if !sender.is_closed() {
            let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
            let idle = pool.entry(addr).or_default();
            if idle.len() < MAX_IDLE_PER_ADDR {
                idle.push(sender);
            }
        }
        Ok(HttpResponse { status: parts.status.as_u16(), headers: parts.headers, body, url: fetch.url })
    }

    /// The most recently used idle connection to `addr` that is still open.
    fn idle(&self, addr: SocketAddr) -> Option<SendRequest<Full<Bytes>>> {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = pool.get_mut(&addr)?;
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Sends `request` on `sender` and waits for the response head.
    async fn exchange(
        sender: &mut SendRequest<Full<Bytes>>,
        request: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, FetchError> {
        sender.ready().await.map_err(|e| FetchError::from_hyper(&e))?;
        sender.send_request(request).await.map_err(|e| FetchError::from_hyper(&e))
    }

    /// Drops every kept-alive connection.
    pub fn close_all(&self) {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, FetchError> {
        let stream = self.net.connect(addr).await.map_err(|e| FetchError::from_io(&e))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| FetchError::from_hyper(&e))?;
        // The connection task lives as long as the connection: it ends when
        // either side closes it, or with the host.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

fn build_request(fetch: &Fetch) -> Result<Request<Full<Bytes>>, FetchError> {
    let host = fetch.url.host_str().ok_or_else(|| FetchError::BadUrl(format!("{} has no host", fetch.url)))?;
    let host_header = match fetch.url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let mut path = fetch.url.path().to_string();
    if let Some(q) = fetch.url.query() {
        path.push('?');
        path.push_str(q);
    }
    let mut builder = Request::builder().method(fetch.method.clone()).uri(path);
    let headers = builder.headers_mut().ok_or_else(|| FetchError::BadUrl(fetch.url.to_string()))?;
    headers.insert(header::HOST, HeaderValue::from_str(&host_header).map_err(|e| FetchError::BadUrl(e.to_string()))?);
    for (name, value) in &fetch.headers {
        let name = header::HeaderName::from_bytes(name.as_bytes()).map_err(|e| FetchError::BadUrl(e.to_string()))?;
        let value = HeaderValue::from_str(value).map_err(|e| FetchError::BadUrl(e.to_string()))?;
        headers.append(name, value);
    }
    let body = match &fetch.body {
        Some((content_type, bytes)) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(content_type).map_err(|e| FetchError::BadUrl(e.to_string()))?,
            );
            Full::new(bytes.clone())
        }
        None => Full::new(Bytes::new()),
    };
    builder.body(body).map_err(|e| FetchError::BadUrl(e.to_string()))
}
