//! Applications on the device (a browser, an updater, a chat client, ...):
//! each runs as a process that carries out the actions the scenario asks of
//! it, over its own, filtered, network.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use url::Url;

use crate::http::{Browser, FetchError, Landing, Navigation};
use crate::net::{BoxStream, Net};

/// Something an application is asked to do.
#[derive(Debug)]
pub enum AppAction {
    /// Load a URL in the application's browser profile.
    Navigate {
        /// Where.
        url: Url,
        /// How.
        nav: Navigation,
    },
    /// Open a long-lived stream (a line echo service) and keep it.
    StreamOpen {
        /// Destination.
        to: SocketAddr,
        /// Name to refer to it by.
        name: String,
    },
    /// Send a line on an open stream and wait for the echo.
    StreamSend {
        /// Stream name.
        name: String,
        /// Line to send.
        line: String,
    },
    /// The cookies of this profile that apply to `url`, expired included.
    ExportCookies,
    /// Ask the agent's service for its state over its loopback channel.
    AskAgent {
        /// The agent's loopback address.
        to: SocketAddr,
    },
}

/// What came of an [`AppAction`].
#[derive(Debug)]
pub enum AppResult {
    /// A navigation's end.
    Landing(Result<Landing, FetchError>),
    /// A stream operation's reply line.
    Stream(Result<String, FetchError>),
    /// Exported cookies.
    Cookies(crate::http::cookies::CookieJar),
    /// The application is not running.
    NotRunning(String),
}

type StreamLines = Lines<BufReader<ReadHalf<BoxStream>>>;

/// An application's main loop.
pub async fn run(
    net: Net,
    browser: Browser,
    mut inbox: mpsc::UnboundedReceiver<(AppAction, oneshot::Sender<AppResult>)>,
) {
    let mut streams: BTreeMap<String, (StreamLines, WriteHalf<BoxStream>)> = BTreeMap::new();
    while let Some((action, reply)) = inbox.recv().await {
        let result = match action {
            AppAction::Navigate { url, nav } => AppResult::Landing(browser.navigate(url, &nav).await),
            AppAction::ExportCookies => AppResult::Cookies(browser.export_cookies()),
            AppAction::StreamOpen { to, name } => AppResult::Stream(match net.connect(to).await {
                Ok(stream) => {
                    let (read, write) = tokio::io::split(stream);
                    streams.insert(name, (BufReader::new(read).lines(), write));
                    Ok("open".to_string())
                }
                Err(e) => Err(FetchError::from_io(&e)),
            }),
            AppAction::AskAgent { to } => AppResult::Stream(match net.connect(to).await {
                Ok(stream) => {
                    let (read, write) = tokio::io::split(stream);
                    let mut lines = BufReader::new(read).lines();
                    let mut write = write;
                    exchange(&mut lines, &mut write, "status").await
                }
                Err(e) => Err(FetchError::from_io(&e)),
            }),
            AppAction::StreamSend { name, line } => AppResult::Stream(match streams.get_mut(&name) {
                Some((lines, write)) => exchange(lines, write, &line).await,
                None => Err(FetchError::Failed(format!("no open stream `{name}`"))),
            }),
        };
        let _ = reply.send(result);
    }
}

async fn exchange(lines: &mut StreamLines, write: &mut WriteHalf<BoxStream>, line: &str) -> Result<String, FetchError> {
    write.write_all(format!("{line}\n").as_bytes()).await.map_err(|e| FetchError::from_io(&e))?;
    match lines.next_line().await {
        Ok(Some(reply)) => Ok(reply),
        Ok(None) => Err(FetchError::Failed("stream closed by the peer".into())),
        Err(e) => Err(FetchError::from_io(&e)),
    }
}
