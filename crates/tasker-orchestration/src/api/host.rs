//! Only known `Host` values are served. A DNS-rebinding page (its own name, re-pointed at
//! 127.0.0.1 after it loaded) reaches the server from the victim's browser as same-origin,
//! so neither CORS nor the same-origin checks stop it; the name in its `Host` header does.
//! Loopback names and IP literals cannot be rebound and are always accepted; any other
//! name must be listed in `[orchestration] allowed_hosts`.

use super::ApiError;
use crate::OrchestrationCore;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::net::{IpAddr, Ipv6Addr};

pub async fn require_known_host(
    State(core): State<OrchestrationCore>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let given = request
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("(not text)").to_string())
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    // A request without any Host comes from no browser, so it cannot be a rebinding page.
    match given {
        Some(host) if !allowed(&host, &core.config.orchestration.allowed_hosts) => {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                format!(
                    "Host '{host}' is not served here: add it to [orchestration] allowed_hosts \
                     (loopback names and IP addresses are always accepted)"
                ),
            ))
        }
        _ => Ok(next.run(request).await),
    }
}

/// Whether a `Host` header value (name or IP literal, optional port) may be served.
pub(crate) fn allowed(host: &str, configured: &[String]) -> bool {
    if let Some(rest) = host.strip_prefix('[') {
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<Ipv6Addr>().is_ok());
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.is_empty() {
        return false;
    }
    name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || configured
            .iter()
            .any(|c| c.strip_suffix('.').unwrap_or(c).eq_ignore_ascii_case(&name))
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn loopback_names_ip_literals_and_listed_names_only() {
        let listed = vec!["tasker.example.com".to_string()];
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "app.localhost:3000",
            "127.0.0.1",
            "10.0.0.7:8080",
            "[::1]:8080",
            "[fe80::1]",
            "tasker.example.com",
            "Tasker.Example.Com.:443",
        ] {
            assert!(allowed(ok, &listed), "{ok}");
        }
        for refused in [
            "evil.example",
            "localhost.evil.example",
            "tasker.example.com.evil.example",
            "127.0.0.1.nip.io",
            "[not-an-ip]:80",
            "",
            ":8080",
        ] {
            assert!(!allowed(refused, &listed), "{refused}");
        }
    }
}
