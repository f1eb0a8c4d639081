//! A public web site standing for "the internet": an HTTP server and a
//! long-lived stream (line echo) service.

use std::io;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::net::Net;

/// Serves HTTP on `http` and the echo stream on `stream` until the host stops.
pub async fn run(net: Net, http: SocketAddr, stream: SocketAddr) -> io::Result<()> {
    let router = Router::new().fallback(get(|| async { "example site\n" }));
    let http_listener = net.bind(http).await?;
    let mut stream_listener = net.bind(stream).await?;
    tokio::spawn(async move { crate::http::serve(http_listener, router).await });
    loop {
        let (conn, _) = stream_listener.accept().await?;
        tokio::spawn(async move {
            let (read, mut write) = tokio::io::split(conn);
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if write.write_all(format!("echo {line}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}
