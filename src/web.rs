//! A public web site standing for "the internet": an HTTP server and a
//! long-lived stream (line echo) service.

use std::io;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::net::{BoxListener, Net};

/// Serves HTTP on `http` and the echo stream on `stream` until the host stops.
pub async fn run(net: Net, http: SocketAddr, stream: SocketAddr) -> io::Result<()> {
    let http_listener = net.bind(http).await?;
    let stream_listener = net.bind(stream).await?;
    serve(http_listener, stream_listener).await
}

/// Serves on already bound listeners until either stops.
pub async fn serve(http: BoxListener, stream: BoxListener) -> io::Result<()> {
    let router = Router::new().fallback(get(|| async { "example site\n" }));
    tokio::select! {
        biased;
        served = crate::http::serve(http, router) => served,
        echoed = echo(stream) => echoed,
    }
}

async fn echo(mut listener: BoxListener) -> io::Result<()> {
    loop {
        let (conn, _) = listener.accept().await?;
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
