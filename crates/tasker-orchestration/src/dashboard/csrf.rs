//! Protection of the dashboard's POSTs against cross-site request forgery, twice over: every
//! form carries a token only a server holding the session secret can make (an HMAC of its
//! issue time and of the session it was rendered for), and a request the browser marks as
//! coming from another site (`Sec-Fetch-Site`, `Origin`) is refused whatever it carries.

use super::session::{Principal, Sessions};
use super::UiError;
use axum::http::{header, HeaderMap};

/// Tokens are issued per hour (a quarter of the lifetime when that is shorter), not per
/// request, so a page re-rendered by the live refresh is byte for byte the same unless
/// something on it changed (and nothing is swapped).
fn granularity(sessions: &Sessions) -> i64 {
    (sessions.lifetime_secs() / 4).clamp(1, 3600)
}

/// A token for a page's forms, valid for the session it was rendered for:
/// `<issued unix seconds>.<hex HMAC>`.
pub fn issue(sessions: &Sessions, principal: &Principal) -> String {
    issue_at(sessions, principal, chrono::Utc::now().timestamp())
}

fn issue_at(sessions: &Sessions, principal: &Principal, now: i64) -> String {
    let issued = now - now.rem_euclid(granularity(sessions));
    format!(
        "{issued}.{}",
        hex::encode(sessions.csrf_tag(&principal.subject(), issued))
    )
}

/// Accepts a token issued for this session within the last `session_lifetime_seconds`
/// (plus the issue granularity, so a token is good for at least the lifetime).
pub fn verify(sessions: &Sessions, principal: &Principal, token: &str) -> Result<(), UiError> {
    verify_at(sessions, principal, token, chrono::Utc::now().timestamp())
}

fn verify_at(
    sessions: &Sessions,
    principal: &Principal,
    token: &str,
    now: i64,
) -> Result<(), UiError> {
    let refused = |why: &str| UiError::Forbidden(format!("CSRF token {why}; reload the page"));
    let (issued, tag) = token.split_once('.').ok_or_else(|| refused("missing"))?;
    let issued: i64 = issued.parse().map_err(|_| refused("malformed"))?;
    let tag = hex::decode(tag).map_err(|_| refused("malformed"))?;
    if !sessions.csrf_tag_matches(&principal.subject(), issued, &tag) {
        return Err(refused("not issued for this session"));
    }
    if !(0..=sessions.lifetime_secs() + granularity(sessions)).contains(&(now - issued)) {
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
    use tasker_shared::config::ConfigLoader;

    fn sessions(secret: &str) -> Sessions {
        let mut config = ConfigLoader::isolated(None, "test")
            .load()
            .unwrap()
            .orchestration;
        config.session_secret = secret.into();
        config.session_lifetime_seconds = 600;
        Sessions::new(&config)
    }

    #[test]
    fn tokens_verify_only_for_their_session_within_the_lifetime() {
        let s = sessions("0123456789abcdef0123456789abcdef");
        let alice = Principal::session("a1", i64::MAX);
        let bob = Principal::session("b2", i64::MAX);
        let token = issue(&s, &alice);
        verify(&s, &alice, &token).unwrap();
        assert!(verify(&s, &bob, &token).is_err(), "another session");
        assert!(verify(&s, &Principal::Open, &token).is_err());
        let other = sessions("fedcba9876543210fedcba9876543210");
        assert!(verify(&other, &alice, &token).is_err(), "another secret");
        let (issued, _) = token.split_once('.').unwrap();
        assert!(verify(&s, &alice, &format!("{issued}.{}", "0".repeat(64))).is_err());
        assert!(verify(&s, &alice, "").is_err());
        assert!(verify(&s, &alice, "12.zz").is_err());
        let now = chrono::Utc::now().timestamp();
        let old = issue_at(&s, &alice, now - 3 * 3600);
        assert!(
            verify_at(&s, &alice, &old, now).is_err(),
            "older than the 600 s lifetime"
        );
        let recent = issue_at(&s, &alice, now);
        verify_at(&s, &alice, &recent, now + 500).unwrap();
        assert!(verify_at(&s, &alice, &recent, now + 4000).is_err());
        assert!(verify(&s, &alice, &format!("{}", now + 7200)).is_err());
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
