//! The client's address, as the throttles count it: the peer's, unless the peer is a trusted
//! proxy (`LARDER_TRUSTED_PROXIES`); then the nearest address of `Forwarded` (RFC 7239) or,
//! without it, `X-Forwarded-For` that is not itself a trusted proxy. Every proxy appends the
//! address it received from, so only the entries right of the nearest untrusted one were
//! written by proxies we trust; anything left of it may be made up by the client.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::config::TrustedProxies;
use crate::http::state::AppState;
use crate::limits::key::ClientKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

impl ClientAddress {
    /// The throttles' key for this address. An IPv6 client is counted by its /64, the block
    /// one subscriber gets: anyone can pick a new address inside it for every request.
    pub fn key(&self) -> ClientKey {
        match self.0 {
            IpAddr::V4(v4) => ClientKey::of(&v4.to_string()),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) >> 64;
                ClientKey::of(&format!("{prefix:x}::/64"))
            }
        }
    }

    /// The key of `account` tried from this address.
    pub fn key_with(&self, account: &str) -> ClientKey {
        ClientKey::of(&format!("{}\n{account}", self.key().to_hex()))
    }
}

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            tracing::error!("the accept loop did not attach the peer address to a request");
            return Err(ApiError::internal());
        };
        Ok(ClientAddress(client_address(
            peer.ip().to_canonical(),
            &parts.headers,
            &state.settings.trusted_proxies,
        )))
    }
}

/// The client's address: see the module's description.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let hops = if headers.contains_key("forwarded") {
        forwarded_hops(headers)
    } else {
        x_forwarded_for_hops(headers)
    };
    let mut client = peer;
    // Nearest first. A hop that is not an address (`unknown`, an obfuscated name, garbage)
    // ends the walk: what lies beyond it cannot be attributed to anyone we trust.
    for hop in hops.into_iter().rev() {
        let Some(address) = hop else { break };
        client = address.to_canonical();
        if !trusted.contains(&client) {
            break;
        }
    }
    client
}

/// The `for=` of every element of every `Forwarded` line, in order; `None` for one that
/// names no address or does not parse.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("forwarded")
        .iter()
        .flat_map(|line| match line.to_str() {
            Ok(line) => rfc7239::parse(line)
                .map(|element| {
                    element
                        .ok()
                        .and_then(|e| e.forwarded_for)
                        .and_then(|node| node.ip().copied())
                })
                .collect(),
            Err(_) => vec![None],
        })
        .collect()
}

/// Every entry of every `X-Forwarded-For` line, in order: an address, with or without a port.
fn x_forwarded_for_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|line| match line.to_str() {
            Ok(line) => line
                .split(',')
                .map(|entry| {
                    let entry = entry.trim();
                    entry
                        .parse::<IpAddr>()
                        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
                        .ok()
                })
                .collect(),
            Err(_) => vec![None],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(value: &str) -> IpAddr {
        value.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let spoofed = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
        ]);
        assert_eq!(
            client_address(ip("198.51.100.1"), &spoofed, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_address(ip("198.51.100.1"), &spoofed, &TrustedProxies::default()),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let peer = ip("10.0.0.1");
        // The client wrote 1.1.1.1 itself; 203.0.113.9 is what our proxies saw.
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.2")]);
        assert_eq!(client_address(peer, &chain, &trusted), ip("203.0.113.9"));
        let split = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9:4711"),
        ]);
        assert_eq!(client_address(peer, &split, &trusted), ip("203.0.113.9"));
        // Forwarded wins over X-Forwarded-For, and brackets and ports are understood.
        let both = headers(&[
            (
                "forwarded",
                r#"for=1.1.1.1, for="[2001:db8::1]:4711";proto=https"#,
            ),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(client_address(peer, &both, &trusted), ip("2001:db8::1"));
        // Without any header, or with only trusted hops, the farthest known address counts.
        assert_eq!(client_address(peer, &HeaderMap::new(), &trusted), peer);
        let inside = headers(&[("x-forwarded-for", "10.9.9.9")]);
        assert_eq!(client_address(peer, &inside, &trusted), ip("10.9.9.9"));
        // Garbage ends the walk at the last trusted hop.
        let garbage = headers(&[("x-forwarded-for", "1.1.1.1, nonsense")]);
        assert_eq!(client_address(peer, &garbage, &trusted), peer);
        let unknown = headers(&[("forwarded", "for=1.1.1.1, for=unknown")]);
        assert_eq!(client_address(peer, &unknown, &trusted), peer);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a = ClientAddress(ip("2001:db8:1:2::1"));
        let b = ClientAddress(ip("2001:db8:1:2:ffff::9"));
        let c = ClientAddress(ip("2001:db8:1:3::1"));
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), c.key());
        assert_ne!(a.key_with("ann@example.com"), a.key_with("bob@example.com"));
    }
}
