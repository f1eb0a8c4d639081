//! Finding the login form in an HTML page, as a scripted browser must.
//!
//! Deliberately small: it reads `<form>` and `<input>` tags with quoted or
//! bare attributes and decodes the common entities, which is what the lab's
//! identity provider (and most login pages) use.

/// An HTML form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HtmlForm {
    /// `action` attribute (may be relative; empty means the page itself).
    pub action: String,
    /// `method`, lowercased (`get` by default).
    pub method: String,
    /// Inputs as (name, value, type).
    pub inputs: Vec<(String, String, String)>,
}

impl HtmlForm {
    /// Whether the form has an input named `name`.
    pub fn has_input(&self, name: &str) -> bool {
        self.inputs.iter().any(|(n, _, _)| n == name)
    }

    /// The value of input `name`, if the form has one.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.inputs.iter().find(|(n, _, _)| n == name).map(|(_, v, _)| v.as_str())
    }

    /// The fields to submit, with `overrides` replacing or adding values.
    pub fn fields_with(&self, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut fields: Vec<(String, String)> = self
            .inputs
            .iter()
            .filter(|(_, _, ty)| ty != "submit" || overrides.is_empty())
            .map(|(n, v, _)| (n.clone(), v.clone()))
            .collect();
        for (name, value) in overrides {
            match fields.iter_mut().find(|(n, _)| n == name) {
                Some(f) => f.1 = value.to_string(),
                None => fields.push((name.to_string(), value.to_string())),
            }
        }
        fields
    }
}

/// The forms of a page, in document order.
pub fn forms(html: &str) -> Vec<HtmlForm> {
    let mut out: Vec<HtmlForm> = Vec::new();
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        rest = &rest[lt + 1..];
        let Some(gt) = rest.find('>') else { break };
        let tag = &rest[..gt];
        rest = &rest[gt + 1..];
        let (name, attrs) = match tag.find(|c: char| c.is_whitespace()) {
            Some(i) => (&tag[..i], &tag[i..]),
            None => (tag.trim_end_matches('/'), ""),
        };
        let attrs = attributes(attrs);
        let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match name.to_ascii_lowercase().as_str() {
            "form" => out.push(HtmlForm {
                action: get("action").unwrap_or_default(),
                method: get("method").unwrap_or_else(|| "get".into()).to_ascii_lowercase(),
                inputs: Vec::new(),
            }),
            "input" => {
                if let (Some(form), Some(n)) = (out.last_mut(), get("name")) {
                    let ty = get("type").unwrap_or_else(|| "text".into()).to_ascii_lowercase();
                    form.inputs.push((n, get("value").unwrap_or_default(), ty));
                }
            }
            _ => {}
        }
    }
    out
}

/// A named `<button>` of a page: pressing it submits its name and value
/// with the form it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HtmlButton {
    /// `name` attribute.
    pub name: String,
    /// `value` attribute (empty when absent).
    pub value: String,
    /// `form` attribute: the id of the form it submits when it sits
    /// outside it.
    pub form: Option<String>,
    /// The index (in [`forms`]) of the last form opened before it, which
    /// holds it when `form` is absent (as [`forms`] attaches inputs).
    pub in_form: Option<usize>,
}

/// The named submit buttons of a page, in document order (a button of
/// `type="button"` or `type="reset"` submits nothing and is left out).
/// Separate from [`forms`], whose inputs stay what the lab's pages post.
pub fn buttons(html: &str) -> Vec<HtmlButton> {
    let mut out = Vec::new();
    let mut rest = html;
    let mut forms_seen: usize = 0;
    while let Some(lt) = rest.find('<') {
        rest = &rest[lt + 1..];
        let Some(gt) = rest.find('>') else { break };
        let tag = &rest[..gt];
        rest = &rest[gt + 1..];
        let name = tag.split(|c: char| c.is_whitespace()).next().unwrap_or("").trim_end_matches('/');
        if name.eq_ignore_ascii_case("form") {
            forms_seen += 1;
            continue;
        }
        let Some((name, attrs)) = tag.split_once(|c: char| c.is_whitespace()) else { continue };
        if !name.eq_ignore_ascii_case("button") {
            continue;
        }
        let attrs = attributes(attrs);
        let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let ty = get("type").unwrap_or_else(|| "submit".into()).to_ascii_lowercase();
        if let (Some(n), "submit") = (get("name"), ty.as_str()) {
            out.push(HtmlButton {
                name: n,
                value: get("value").unwrap_or_default(),
                form: get("form"),
                in_form: forms_seen.checked_sub(1),
            });
        }
    }
    out
}

/// The `id` attribute of each `<form>` of a page, in the order of [`forms`].
pub fn form_ids(html: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        rest = &rest[lt + 1..];
        let Some(gt) = rest.find('>') else { break };
        let tag = &rest[..gt];
        rest = &rest[gt + 1..];
        let (name, attrs) = match tag.find(|c: char| c.is_whitespace()) {
            Some(i) => (&tag[..i], &tag[i..]),
            None => (tag.trim_end_matches('/'), ""),
        };
        if name.eq_ignore_ascii_case("form") {
            out.push(attributes(attrs).into_iter().find(|(n, _)| n == "id").map(|(_, v)| v));
        }
    }
    out
}

fn attributes(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'/' {
            i += 1;
        }
        if start == i {
            i += 1;
            continue;
        }
        let name = s[start..i].to_ascii_lowercase();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let q = b[i];
                let vs = i + 1;
                i = vs;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                value = decode_entities(&s[vs..i.min(b.len())]);
                i += 1;
            } else {
                let vs = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = decode_entities(&s[vs..i]);
            }
        }
        out.push((name, value));
    }
    out
}

fn decode_entities(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// Escapes text for an HTML attribute or element.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('\'', "&#39;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_login_form() {
        let html = r#"<html><body><form method="POST" action="/login?x=1&amp;y=2">
            <input type="hidden" name="req" value="abc">
            <input name=username>
            <input type="password" name="password"/>
            <input type="submit" value="Sign in"></form></body></html>"#;
        let f = &forms(html)[0];
        assert_eq!(f.action, "/login?x=1&y=2");
        assert_eq!(f.method, "post");
        assert!(f.has_input("username") && f.has_input("password"));
        let fields = f.fields_with(&[("username", "alice"), ("password", "pw")]);
        assert_eq!(
            fields,
            vec![
                ("req".to_string(), "abc".to_string()),
                ("username".to_string(), "alice".to_string()),
                ("password".to_string(), "pw".to_string())
            ]
        );
    }

    #[test]
    fn finds_named_buttons_inside_and_outside_their_form() {
        let html = r#"<form id="op.logoutForm" method="post" action="/end"><input type="hidden" name="xsrf" value="s"/></form>
            <button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes</button>
            <button type="submit" form="op.logoutForm">No</button><button type="button" name="js">x</button>
            <form><button name=go>Go</button></form>"#;
        assert_eq!(form_ids(html), vec![Some("op.logoutForm".to_string()), None]);
        assert_eq!(
            buttons(html),
            vec![
                HtmlButton {
                    name: "logout".into(),
                    value: "yes".into(),
                    form: Some("op.logoutForm".into()),
                    in_form: Some(0)
                },
                HtmlButton { name: "go".into(), value: String::new(), form: None, in_form: Some(1) },
            ]
        );
        assert_eq!(forms(html).len(), 2, "buttons are not inputs");
    }

    #[test]
    fn escape_round_trips_through_the_parser() {
        let v = "a\"b<c>&'d";
        let html = format!("<form><input name=\"n\" value=\"{}\"></form>", escape(v));
        assert_eq!(forms(&html)[0].inputs[0].1, v);
    }
}
