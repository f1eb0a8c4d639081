//! An origin application behind the gateway.
//!
//! It trusts nothing but the app token: every request must carry one, signed
//! by the gateway's key (fetched from the gateway's certs endpoint), for this
//! app's audience, unexpired by the origin's own clock. Otherwise 403.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::http::{HttpClient, PeerAddr, RemoteKeys};
use crate::jose::Expect;
use crate::net::{BoxListener, Net, SharedClock};
use crate::protocol::{APP_TOKEN_HEADER, AppTokenClaims, CERTS_PATH};
use crate::trace::{EventBody, Recorder};

/// An origin application.
pub struct Origin {
    app: String,
    issuer: String,
    recorder: Recorder,
    http: HttpClient,
    keys: RemoteKeys,
}

impl Origin {
    /// The origin of `app`, trusting app tokens issued by the gateway at `gateway_url`.
    pub fn new(app: &str, gateway_url: &str, clock: SharedClock, recorder: Recorder, http: HttpClient) -> Self {
        // The key cache checks a token's expiry against this clock at the
        // instant of the check, after any fetch of the gateway's keys.
        let keys = RemoteKeys::new(format!("{}{CERTS_PATH}", gateway_url.trim_end_matches('/')), clock);
        Origin { app: app.to_string(), issuer: gateway_url.to_string(), recorder, http, keys }
    }

    /// Serves the app on `addr` until the host stops.
    pub async fn run(self: Arc<Self>, net: Net, addr: SocketAddr) -> io::Result<()> {
        let listener = net.bind(addr).await?;
        self.serve(listener).await
    }

    /// Serves the app on an already bound listener.
    pub async fn serve(self: Arc<Self>, listener: BoxListener) -> io::Result<()> {
        crate::http::serve(listener, Router::new().fallback(handle).with_state(self)).await
    }

    async fn check(&self, token: &str) -> Result<AppTokenClaims, String> {
        let expect = Expect { issuer: &self.issuer, audience: &self.app, leeway_s: 0, danger_ignore_expiry: false };
        self.keys.verify(&self.http, token, &expect).await.map_err(|e| e.to_string())
    }
}

async fn handle(State(origin): State<Arc<Origin>>, ConnectInfo(peer): ConnectInfo<PeerAddr>, req: Request) -> Response {
    let token = req.headers().get(APP_TOKEN_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let result = match token {
        Some(t) => origin.check(&t).await,
        None => Err("no app token".to_string()),
    };
    let (status, body, claims, reason) = match result {
        Ok(c) => (
            StatusCode::OK,
            format!("{}: hello {} ({} {})\n", origin.app, c.sub, req.method(), req.uri().path()),
            Some(c),
            "app token valid".to_string(),
        ),
        Err(reason) => (StatusCode::FORBIDDEN, format!("{}: forbidden\n", origin.app), None, reason),
    };
    origin.recorder.record(EventBody::OriginRequest {
        app: origin.app.clone(),
        peer: peer.0.ip(),
        status: status.as_u16(),
        sid: claims.as_ref().map(|c| c.sid.clone()),
        user: claims.as_ref().map(|c| c.sub.clone()),
        reason,
        mfa: claims.as_ref().and_then(|c| c.mfa.as_ref()).map(|m| m.factor),
    });
    (status, body).into_response()
}
