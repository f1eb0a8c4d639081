//! The user's second factors, as the scripted browser uses them: virtual
//! FIDO2 authenticators (through the browser's WebAuthn client) and
//! authenticator apps (the user reads the code and types it).
//!
//! The factors are physical things the driver owns; a step hands some of
//! them to whoever acts (the user, or an attacker who relays or cloned one).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::future::BoxFuture;
use tokio::sync::Mutex;

use crate::authenticator::{AuthenticatorKind, VirtualAuthenticator, WebauthnClient};
use crate::http::form::HtmlForm;
use crate::http::{FactorHandle, FactorResponder};
use crate::net::SharedClock;
use crate::totp::TotpApp;

/// One second factor.
#[derive(Clone)]
pub enum Factor {
    /// A FIDO2 authenticator.
    Webauthn(Arc<Mutex<VirtualAuthenticator>>),
    /// An authenticator app.
    Totp(Arc<Mutex<TotpApp>>),
}

/// Every factor of a run, by name.
#[derive(Clone, Default)]
pub struct Factors {
    /// The factors.
    pub by_name: BTreeMap<String, Factor>,
}

/// A person answering MFA forms with the factors handed to them.
pub struct Responder {
    /// What they enrol, or answer with.
    pub factor: Option<Factor>,
    /// What they verify with before enrolling another factor.
    pub verify_with: Option<Factor>,
    /// The origin their browser shows, when a proxy relays the page.
    pub relay_origin: Option<String>,
    /// A browser that signs whatever RP id it is asked for.
    pub naive_client: bool,
    /// Type the last code the app showed instead of a fresh one.
    pub replay_last_code: bool,
    /// An enrollment code the user received from an administrator.
    pub enrollment_code: Option<String>,
    /// The true time (the TOTP app's clock is skewed from it).
    pub clock: SharedClock,
    /// Real mode over plain-http loopback: let WebAuthn run on http origins.
    pub treat_http_as_secure: bool,
}

impl Responder {
    /// The handle the browser takes.
    pub fn handle(self) -> FactorHandle {
        FactorHandle(Arc::new(self))
    }

    fn client(&self, page_origin: &str) -> WebauthnClient {
        let origin = self.relay_origin.clone().unwrap_or_else(|| page_origin.to_string());
        WebauthnClient { origin, enforce_rp_id: !self.naive_client, treat_http_as_secure: self.treat_http_as_secure }
    }

    fn with_code(&self, form: &HtmlForm, mut fields: Vec<(String, String)>) -> Vec<(String, String)> {
        if form.has_input("enrollment_code")
            && let Some(code) = &self.enrollment_code
        {
            fields.retain(|(n, _)| n != "enrollment_code");
            fields.push(("enrollment_code".into(), code.clone()));
        }
        fields
    }

    async fn webauthn(
        &self,
        factor: &Factor,
        form: &HtmlForm,
        page_origin: &str,
        create: bool,
    ) -> Option<Vec<(String, String)>> {
        let Factor::Webauthn(device) = factor else { return None };
        let mut device = device.lock().await;
        let wanted = form.value("kind").unwrap_or("");
        let kind = match device.profile().kind {
            AuthenticatorKind::Platform => "biometrics",
            AuthenticatorKind::SecurityKey | AuthenticatorKind::U2f => "security_key",
        };
        if wanted != kind {
            return None;
        }
        let options = URL_SAFE_NO_PAD.decode(form.value("options")?).ok()?;
        let options: serde_json::Value = serde_json::from_slice(&options).ok()?;
        let client = self.client(page_origin);
        let credential =
            if create { client.create(&mut device, &options).await } else { client.get(&mut device, &options).await };
        let credential = credential.ok()?;
        let fields = self.with_code(form, form.fields_with(&[("credential", &credential.to_string())]));
        Some(padded(fields))
    }

    async fn totp(&self, factor: &Factor, form: &HtmlForm, enroll: bool) -> Option<Vec<(String, String)>> {
        let Factor::Totp(app) = factor else { return None };
        let mut app = app.lock().await;
        if enroll {
            app.scan(form.value("otpauth")?).ok()?;
        }
        let code =
            if self.replay_last_code { app.last_shown().map(str::to_string)? } else { app.code(self.clock.now())? };
        Some(self.with_code(form, form.fields_with(&[("code", &code)])))
    }
}

/// Pads a WebAuthn form post to a multiple of 64 bytes.
///
/// webauthn-rs draws each challenge from OS randomness, so the DER length of
/// the signature over it (70 to 72 bytes) varies from run to run; padding
/// the post keeps the bytes the device's firewall model counts, and so the
/// trace, identical for a seed. The MFA service ignores the `pad` field.
fn padded(mut fields: Vec<(String, String)>) -> Vec<(String, String)> {
    const BLOCK: usize = 64;
    let encoded = |fields: &[(String, String)]| {
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter()).finish().len()
    };
    fields.push(("pad".into(), String::new()));
    let len = encoded(&fields);
    let missing = (BLOCK - len % BLOCK) % BLOCK;
    if let Some(last) = fields.last_mut() {
        last.1 = "0".repeat(missing);
    }
    fields
}

impl FactorResponder for Responder {
    fn answer<'a>(&'a self, form: &'a HtmlForm, page_origin: &'a str) -> BoxFuture<'a, Option<Vec<(String, String)>>> {
        Box::pin(async move {
            let verify = self.verify_with.as_ref().or(self.factor.as_ref());
            match form.value("mfa")? {
                "webauthn-get" => self.webauthn(verify?, form, page_origin, false).await,
                "webauthn-create" => self.webauthn(self.factor.as_ref()?, form, page_origin, true).await,
                "totp" => self.totp(verify?, form, false).await,
                "totp-enroll" => self.totp(self.factor.as_ref()?, form, true).await,
                _ => None,
            }
        })
    }
}
