//! Protection of the dashboard's POSTs against cross-site request forgery, twice over: every
//! form carries a token only this process can make (an HMAC of its issue time under a secret
//! drawn at start-up), and a request the browser marks as coming from another site
//! (`Sec-Fetch-Site`, `Origin`) is refused whatever it carries.

use super::UiError;
use axum::http::{header, HeaderMap};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::sync::OnceLock;

/// How long a page's forms stay usable.
const TOKEN_LIFETIME_SECS: i64 = 12 * 3600;
/// Tokens are issued per hour, not per request, so a page re-rendered by the live refresh
/// is byte for byte the same unless something on it changed (and nothing is swapped).
const ISSUE_GRANULARITY_SECS: i64 = 3600;

fn secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        key
    })
}

fn mac(issued: i64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret()).expect("HMAC takes any key length");
    mac.update(b"tasker-ui-csrf:");
    mac.update(issued.to_string().as_bytes());
    mac
}

/// A token for a page's forms: `<issued unix seconds>.<hex HMAC>`.
pub fn issue() -> String {
    let now = chrono::Utc::now().timestamp();
    let issued = now - now.rem_euclid(ISSUE_GRANULARITY_SECS);
    format!(
        "{issued}.{}",
        hex::encode(mac(issued).finalize().into_bytes())
    )
}

/// Accepts a token this process issued within the last [`TOKEN_LIFETIME_SECS`].
pub fn verify(token: &str) -> Result<(), UiError> {
    let refused = |why: &str| UiError::Forbidden(format!("CSRF token {why}; reload the page"));
    let (issued, tag) = token.split_once('.').ok_or_else(|| refused("missing"))?;
    let issued: i64 = issued.parse().map_err(|_| refused("malformed"))?;
    let tag = hex::decode(tag).map_err(|_| refused("malformed"))?;
    mac(issued)
        .verify_slice(&tag)
        .map_err(|_| refused("not issued by this server"))?;
    let age = chrono::Utc::now().timestamp() - issued;
    if !(0..=TOKEN_LIFETIME_SECS).contains(&age) {
        return Err(refused("expired"));
    }
    Ok(())
}

/// Refuses a request a browser says comes from another site. Requests without these headers
/// (curl, older browsers) still need the token.
pub fn check_origin(headers: &HeaderMap) -> Result<(), UiError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("invalid");
        if !matches!(site, "same-origin" | "none") {
            return Err(UiError::Forbidden(format!(
                "a form posted from another site (Sec-Fetch-Site: {site})"
            )));
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("invalid");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    // A reverse proxy may rewrite Host; it then says what the browser used in
    // X-Forwarded-Host, which a cross-site form cannot set.
    let same = ["x-forwarded-host", header::HOST.as_str()]
        .iter()
        .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .any(|host| origin_host == Some(host));
    if same {
        Ok(())
    } else {
        Err(UiError::Forbidden(format!(
            "a form posted from another origin ({origin})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_forged_ones_do_not() {
        let token = issue();
        verify(&token).unwrap();
        let (issued, _) = token.split_once('.').unwrap();
        assert!(verify(&format!("{issued}.{}", "0".repeat(64))).is_err());
        assert!(verify("").is_err());
        assert!(verify("12.zz").is_err());
        let old = chrono::Utc::now().timestamp() - TOKEN_LIFETIME_SECS - 10;
        let expired = format!("{old}.{}", hex::encode(mac(old).finalize().into_bytes()));
        assert!(verify(&expired).is_err());
    }

    #[test]
    fn cross_site_requests_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:3000".parse().unwrap());
        check_origin(&h).unwrap();
        h.insert(header::ORIGIN, "http://127.0.0.1:3000".parse().unwrap());
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        check_origin(&h).unwrap();
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(check_origin(&h).is_err());
        h.insert(header::ORIGIN, "http://127.0.0.1:3000".parse().unwrap());
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(check_origin(&h).is_err());
    }
}
