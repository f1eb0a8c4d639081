//! The MFA service's pages. Every form carries a hidden `mfa` field naming
//! what it asks for, so a scripted browser (and a person) can tell them
//! apart:
//!
//! * `webauthn-get` / `webauthn-create`: hidden `options` (base64url JSON of
//!   the WebAuthn options); the browser posts `credential` (JSON);
//! * `totp`: the browser posts `code`;
//! * `totp-enroll`: hidden `otpauth` (the URI to scan); the browser posts
//!   the first `code`.
//!
//! All forms carry a hidden `ceremony` id; enrollment forms for a first
//! factor under `first_enrollment = "enrollment_code"` also ask for
//! `enrollment_code`.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::http::form::escape;
use crate::policy::FactorKind;

/// One form on a page.
pub enum FormSpec {
    /// A WebAuthn assertion for one of these factor types.
    WebauthnGet {
        /// Ceremony id.
        ceremony: String,
        /// `security_key` or `biometrics`.
        kind: FactorKind,
        /// The options JSON.
        options: serde_json::Value,
    },
    /// A WebAuthn registration.
    WebauthnCreate {
        /// Ceremony id.
        ceremony: String,
        /// Factor type enrolled.
        kind: FactorKind,
        /// The options JSON.
        options: serde_json::Value,
        /// Ask for an enrollment code.
        code_required: bool,
    },
    /// A TOTP code.
    Totp {
        /// Ceremony id.
        ceremony: String,
    },
    /// A TOTP enrollment.
    TotpEnroll {
        /// Ceremony id.
        ceremony: String,
        /// The `otpauth://` URI.
        otpauth: String,
        /// Ask for an enrollment code.
        code_required: bool,
    },
}

fn hidden(name: &str, value: &str) -> String {
    format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">", escape(value))
}

fn enrollment_code(required: bool) -> &'static str {
    if required { "<label>Enrollment code <input name=\"enrollment_code\"></label>" } else { "" }
}

fn render_form(form: &FormSpec) -> String {
    let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    match form {
        FormSpec::WebauthnGet { ceremony, kind, options } => format!(
            "<form method=\"post\" action=\"/verify/webauthn\">{}{}{}{}\
             <input type=\"hidden\" name=\"credential\" value=\"\">\
             <input type=\"submit\" value=\"Use your {}\"></form>",
            hidden("mfa", "webauthn-get"),
            hidden("kind", kind.as_str()),
            hidden("ceremony", ceremony),
            hidden("options", &b64(options)),
            kind
        ),
        FormSpec::WebauthnCreate { ceremony, kind, options, code_required } => format!(
            "<form method=\"post\" action=\"/enroll/webauthn\">{}{}{}{}{}\
             <input type=\"hidden\" name=\"credential\" value=\"\">\
             <input type=\"submit\" value=\"Register your {}\"></form>",
            hidden("mfa", "webauthn-create"),
            hidden("kind", kind.as_str()),
            hidden("ceremony", ceremony),
            hidden("options", &b64(options)),
            enrollment_code(*code_required),
            kind
        ),
        FormSpec::Totp { ceremony } => format!(
            "<form method=\"post\" action=\"/verify/totp\">{}{}\
             <label>Code from your authenticator app <input name=\"code\" inputmode=\"numeric\"></label>\
             <input type=\"submit\" value=\"Verify\"></form>",
            hidden("mfa", "totp"),
            hidden("ceremony", ceremony)
        ),
        FormSpec::TotpEnroll { ceremony, otpauth, code_required } => format!(
            "<form method=\"post\" action=\"/enroll/totp\">{}{}{}\
             <p>Scan <code>{}</code> with your authenticator app, then type its code.</p>{}\
             <label>Code <input name=\"code\" inputmode=\"numeric\"></label>\
             <input type=\"submit\" value=\"Enroll\"></form>",
            hidden("mfa", "totp-enroll"),
            hidden("ceremony", ceremony),
            hidden("otpauth", otpauth),
            escape(otpauth),
            enrollment_code(*code_required)
        ),
    }
}

/// A page: a title, a message and forms, with a status.
pub fn page(status: StatusCode, title: &str, message: &str, forms: &[FormSpec]) -> Response {
    let forms: String = forms.iter().map(render_form).collect();
    let html = format!(
        "<!doctype html><html><head><title>{t}</title></head><body><h1>{t}</h1><p>{m}</p>{forms}</body></html>",
        t = escape(title),
        m = escape(message)
    );
    (status, Html(html)).into_response()
}
