//! Evidence: the HTTP exchanges behind each verdict, with every secret
//! redacted before it is kept.
//!
//! Redacted: the `Authorization` header, form fields that carry secrets
//! (client secret, PKCE verifier, password, tokens), and tokens in JSON
//! responses. An ID token is kept as its decoded header and claims (its
//! signature dropped): the claims are what the verdicts are about.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::http::{Fetch, HttpResponse};

/// Longest body kept, in characters.
const MAX_BODY: usize = 4000;

/// Form fields and JSON members whose values are secrets.
const SECRET_FIELDS: &[&str] = &[
    "client_secret",
    "code_verifier",
    "password",
    "refresh_token",
    "access_token",
    "token",
    "client_assertion",
    "id_token_hint",
];

/// A request and what came back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Exchange {
    /// What this exchange was for.
    pub purpose: String,
    /// Method.
    pub method: String,
    /// URL (query secrets redacted).
    pub url: String,
    /// Request headers worth showing (redacted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers: Vec<(String, String)>,
    /// Request body (redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    /// Response status, or `None` when no response came.
    pub status: Option<u16>,
    /// Response headers worth showing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers: Vec<(String, String)>,
    /// Response body (redacted, truncated), or the transport error.
    pub response_body: String,
}

impl Exchange {
    /// Records `fetch` and its outcome.
    pub fn record(purpose: &str, fetch: &Fetch, outcome: &Result<HttpResponse, String>) -> Exchange {
        let request_headers = fetch
            .headers
            .iter()
            .map(|(n, v)| {
                let v = if n.eq_ignore_ascii_case("authorization") { redact_authorization(v) } else { v.clone() };
                (n.clone(), v)
            })
            .collect();
        let request_body = fetch.body.as_ref().map(|(ty, bytes)| {
            let text = String::from_utf8_lossy(bytes);
            if ty.starts_with("application/x-www-form-urlencoded") { redact_form(&text) } else { redact_text(&text) }
        });
        let (status, response_headers, response_body) = match outcome {
            Ok(r) => {
                let headers = ["content-type", "location", "cache-control", "www-authenticate"]
                    .iter()
                    .filter_map(|h| r.header(h).map(|v| (h.to_string(), redact_url_text(v))))
                    .collect();
                (Some(r.status), headers, redact_text(&r.text()))
            }
            Err(e) => (None, Vec::new(), format!("(no response: {e})")),
        };
        Exchange {
            purpose: purpose.to_string(),
            method: fetch.method.to_string(),
            url: redact_url_text(fetch.url.as_str()),
            request_headers,
            request_body,
            status,
            response_headers,
            response_body,
        }
    }

    /// A step that was not an HTTP exchange of the certifier (e.g. the
    /// login driver's final redirect).
    pub fn note(purpose: &str, text: &str) -> Exchange {
        Exchange {
            purpose: purpose.to_string(),
            method: "-".into(),
            url: redact_url_text(text),
            request_headers: Vec::new(),
            request_body: None,
            status: None,
            response_headers: Vec::new(),
            response_body: String::new(),
        }
    }
}

fn redact_authorization(value: &str) -> String {
    match value.split_once(' ') {
        Some((scheme, _)) => format!("{scheme} [redacted]"),
        None => "[redacted]".into(),
    }
}

/// A secret shown by its first characters only.
pub fn redact_secret(value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    let head: String = value.chars().take(4).collect();
    format!("{head}…[redacted]")
}

fn redact_pairs(text: &str) -> String {
    url::form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| {
            let v = if SECRET_FIELDS.contains(&k.as_ref()) { redact_secret(&v) } else { v.into_owned() };
            (k.into_owned(), v)
        })
        .fold(url::form_urlencoded::Serializer::new(String::new()), |mut s, (k, v)| {
            s.append_pair(&k, &v);
            s
        })
        .finish()
}

fn redact_form(text: &str) -> String {
    redact_pairs(text)
}

/// A URL (or a header holding one) with secret query fields redacted.
fn redact_url_text(text: &str) -> String {
    match text.split_once('?') {
        Some((base, query)) => format!("{base}?{}", redact_pairs(query)),
        None => text.to_string(),
    }
}

/// A response body: JSON with secrets redacted and ID tokens decoded;
/// anything else truncated.
fn redact_text(text: &str) -> String {
    let out = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(mut json) => {
            redact_json(&mut json);
            serde_json::to_string_pretty(&json).unwrap_or_default()
        }
        Err(_) => text.to_string(),
    };
    truncate(&out)
}

fn truncate(text: &str) -> String {
    if text.chars().count() <= MAX_BODY {
        return text.to_string();
    }
    let kept: String = text.chars().take(MAX_BODY).collect();
    format!("{kept}…[truncated]")
}

/// Redacts secrets in a JSON value in place; private JWK members are
/// redacted too (a finding in itself, never to be copied into a report).
pub fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "id_token"
                    && let Some(token) = v.as_str()
                {
                    *v = decode_jwt_for_report(token);
                } else if SECRET_FIELDS.contains(&k.as_str())
                    || ["d", "p", "q", "dp", "dq", "qi", "k"].contains(&k.as_str())
                {
                    if let Some(s) = v.as_str() {
                        *v = serde_json::Value::String(redact_secret(s));
                    }
                } else {
                    redact_json(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

/// A JWT as `{header, claims}` (the signature dropped), or a redacted
/// string when it does not decode.
pub fn decode_jwt_for_report(token: &str) -> serde_json::Value {
    let mut parts = token.split('.');
    let decode = |p: Option<&str>| {
        p.and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    };
    match (decode(parts.next()), decode(parts.next())) {
        (Some(header), Some(claims)) => serde_json::json!({ "header": header, "claims": claims }),
        _ => serde_json::Value::String(redact_secret(token)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    #[test]
    fn secrets_never_reach_the_evidence() {
        let fetch = Fetch::post_form(
            Url::parse("http://op.test/token").unwrap(),
            &[
                ("grant_type".into(), "authorization_code".into()),
                ("code_verifier".into(), "verifier-secret-value".into()),
                ("client_secret".into(), "s3cr3t-value".into()),
            ],
        )
        .header("authorization", "Basic bGFiOnNlY3JldA==");
        let body = r#"{"access_token":"at-very-secret","refresh_token":"rt-very-secret","id_token":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln","token_type":"Bearer"}"#;
        let response = HttpResponse {
            status: 200,
            headers: Default::default(),
            body: bytes::Bytes::from(body),
            url: fetch.url.clone(),
        };
        let ex = Exchange::record("token", &fetch, &Ok(response));
        let all = serde_json::to_string(&ex).unwrap();
        for secret in ["verifier-secret-value", "s3cr3t-value", "bGFiOnNlY3JldA", "at-very-secret", "rt-very-secret"] {
            assert!(!all.contains(secret), "{secret} leaked: {all}");
        }
        assert!(all.contains("authorization_code") && all.contains("Bearer"));
        assert!(all.contains("\\\"sub\\\": \\\"alice\\\""), "the ID token's claims are shown: {all}");
        assert!(!all.contains("c2ln"), "the signature is dropped");
    }

    #[test]
    fn private_jwk_members_are_redacted() {
        let mut jwks = serde_json::json!({"keys":[{"kty":"RSA","n":"abc","e":"AQAB","d":"private-exponent"}]});
        redact_json(&mut jwks);
        assert_eq!(jwks["keys"][0]["n"], "abc");
        assert_eq!(jwks["keys"][0]["d"], "priv…[redacted]");
    }
}
