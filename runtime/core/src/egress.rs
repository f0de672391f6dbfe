//! Outbound HTTP rules: a pack's `allowed_hosts` patterns, and the address
//! ranges no guest reaches unless the server says so.

use std::net::IpAddr;

/// One entry of a pack's `allowed_hosts`: `scheme://host[:port]` where host
/// may start with `*.` (any subdomain), or `*` alone (any host — only when
/// the server allows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Any,
    Host {
        scheme: String,
        /// Lowercase; `*.example.com` keeps its `*.`.
        host: String,
        /// `None`: the scheme's default port.
        port: Option<u16>,
    },
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self::Any);
        }
        let (scheme, rest) = s.split_once("://").ok_or_else(|| {
            format!("'{s}' is not scheme://host[:port] (e.g. https://api.example.com)")
        })?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("'{s}': scheme '{scheme}' is not http or https"));
        }
        if rest.contains('/') {
            return Err(format!(
                "'{s}': give only scheme://host[:port], without a path"
            ));
        }
        // `[v6]`, `[v6]:port`, `host`, `host:port`.
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (h, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("'{s}': unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(
                    p.parse::<u16>()
                        .map_err(|_| format!("'{s}': '{p}' is not a port"))?,
                ),
                None if after.is_empty() => None,
                None => return Err(format!("'{s}': unexpected '{after}'")),
            };
            (h, port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => {
                    let port = p
                        .parse::<u16>()
                        .map_err(|_| format!("'{s}': '{p}' is not a port"))?;
                    (h, Some(port))
                }
                None => (rest, None),
            }
        };
        let host = host.to_ascii_lowercase();
        let label_ok =
            |l: &str| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let plain = host.strip_prefix("*.").unwrap_or(&host);
        let valid = plain.parse::<IpAddr>().is_ok() || plain.split('.').all(label_ok);
        if !valid {
            return Err(format!("'{s}': '{host}' is not a host name"));
        }
        Ok(Self::Host { scheme, host, port })
    }

    /// Whether a request to `scheme://host:port` is allowed by this pattern.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let Self::Host {
            scheme: s,
            host: h,
            port: p,
        } = self
        else {
            return true;
        };
        let default = if s == "https" { 443 } else { 80 };
        let host = host.to_ascii_lowercase();
        let host_ok = match h.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => match (h.parse::<IpAddr>(), host.parse::<IpAddr>()) {
                (Ok(a), Ok(b)) => a == b,
                _ => *h == host,
            },
        };
        s.eq_ignore_ascii_case(scheme) && host_ok && p.unwrap_or(default) == port
    }
}

/// Why an address is off limits, or `None` when a guest may reach it.
pub fn denied_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_unspecified() || o[0] == 0 {
                Some("unspecified")
            } else if o[0] == 169 && o[1] == 254 {
                Some("link-local (cloud metadata)")
            } else if v4.is_private() {
                Some("private (RFC 1918)")
            } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
                Some("shared (RFC 6598)")
            } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
                Some("IETF protocol assignments")
            } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
                Some("benchmarking (RFC 2544)")
            } else if o[0] >= 240 {
                Some("reserved")
            } else if v4.is_broadcast() || v4.is_multicast() {
                Some("broadcast or multicast")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return denied_range(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // Addresses that embed an IPv4 one: NAT64 (64:ff9b::/96,
            // 64:ff9b:1::/48), IPv4-compatible (::a.b.c.d), 6to4 (2002::/16).
            let embedded = |hi: u16, lo: u16| {
                std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            if s[0] == 0x64 && s[1] == 0xff9b {
                // NAT64: judged by the IPv4 address it reaches.
                return denied_range(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
                return denied_range(IpAddr::V4(embedded(s[6], s[7])))
                    .or(Some("IPv4-compatible (deprecated)"));
            }
            if s[0] == 0x2002 {
                return denied_range(IpAddr::V4(embedded(s[1], s[2])));
            }
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("unique local")
            } else if (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_scheme_host_and_port() {
        let p = HostPattern::parse("https://api.example.com").expect("valid");
        assert!(p.allows("https", "API.example.com", 443));
        assert!(!p.allows("http", "api.example.com", 80));
        assert!(!p.allows("https", "api.example.com", 8443));
        assert!(!p.allows("https", "evil.api.example.com", 443));
        let w = HostPattern::parse("https://*.example.com").expect("valid");
        assert!(w.allows("https", "a.b.example.com", 443));
        assert!(!w.allows("https", "example.com", 443));
        assert!(!w.allows("https", "badexample.com", 443));
        let l = HostPattern::parse("http://127.0.0.1:9200").expect("valid");
        assert!(l.allows("http", "127.0.0.1", 9200));
        assert!(!l.allows("http", "127.0.0.1", 80));
        assert_eq!(HostPattern::parse("*"), Ok(HostPattern::Any));
        let v6 = HostPattern::parse("https://[2001:db8::1]:8443").expect("valid");
        assert!(v6.allows("https", "2001:db8:0::1", 8443));
        for bad in [
            "example.com",
            "ftp://x",
            "https://x/y",
            "https://x:99999",
            "https://a b",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn private_and_metadata_ranges_are_denied() {
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private (RFC 1918)"),
            ("172.16.0.1", "private (RFC 1918)"),
            ("192.168.1.1", "private (RFC 1918)"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("fd00::1", "unique local"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("64:ff9b::a00:5", "private (RFC 1918)"),
            ("::a00:5", "private (RFC 1918)"),
            ("2002:a9fe:a9fe::1", "link-local (cloud metadata)"),
            ("192.0.0.170", "IETF protocol assignments"),
            ("198.18.0.1", "benchmarking (RFC 2544)"),
            ("fec0::1", "link-local"),
        ] {
            assert_eq!(denied_range(ip.parse().expect("ip")), Some(why), "{ip}");
        }
        assert_eq!(denied_range("93.184.216.34".parse().expect("ip")), None);
        assert_eq!(
            denied_range("2606:2800:220:1::1".parse().expect("ip")),
            None
        );
    }
}
