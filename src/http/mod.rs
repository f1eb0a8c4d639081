//! HTTP over the seam: the same server and client code on simulated and real
//! sockets.

pub mod browser;
pub mod client;
pub mod cookies;
pub mod form;
pub mod keys;
pub mod server;

pub use browser::{Browser, Credentials, FactorHandle, FactorResponder, Landing, Navigation};
pub use client::{Fetch, FetchError, HttpClient, HttpResponse};
pub use keys::RemoteKeys;
pub use server::{PeerAddr, bearer_token, redirect, relay, serve, with_cookie};
