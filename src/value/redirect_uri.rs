//! A client's registered redirect URI (RFC 6749 §3.1.2, RFC 8252, RFC 9700 §4.1.3): compared character
//! for character with what a request presents, except that a loopback URI matches any port (RFC 8252
//! §7.3), because a native app listens on whatever port it could get.

use std::fmt;

use url::Url;

/// The longest redirect URI accepted.
pub const MAX_LENGTH: usize = 2048;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectUri(String);

/// Why a URI cannot be registered.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not an absolute URI")]
    NotAbsolute,
    #[error("a redirect URI has no fragment")]
    Fragment,
    #[error("a redirect URI has no user name or password")]
    UserInfo,
    #[error("a wildcard is not a redirect URI")]
    Wildcard,
    #[error("an http redirect URI must be a loopback address or localhost; use https")]
    PlainHttp,
    #[error("a private-use scheme must look like a reversed domain name (com.example.app)")]
    Scheme,
    #[error("a redirect URI has at most 2048 characters")]
    TooLong,
    #[error("a redirect URI has no spaces or control characters")]
    Whitespace,
}

impl RedirectUri {
    /// A URI a client may register: `https`, loopback or `localhost` `http`, or a private-use scheme
    /// with a dot in it; no fragment, no user information, no wildcard.
    pub fn parse(raw: &str) -> Result<Self, Refused> {
        if raw.len() > MAX_LENGTH {
            return Err(Refused::TooLong);
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Refused::Whitespace);
        }
        if raw.contains('*') {
            return Err(Refused::Wildcard);
        }
        let url = Url::parse(raw).map_err(|_| Refused::NotAbsolute)?;
        if url.fragment().is_some() || raw.contains('#') {
            return Err(Refused::Fragment);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::UserInfo);
        }
        match url.scheme() {
            "https" if url.host().is_some() => {}
            "http" if is_loopback(&url) || url.host_str() == Some("localhost") => {}
            "http" | "https" => return Err(Refused::PlainHttp),
            scheme if scheme.contains('.') => {}
            _ => return Err(Refused::Scheme),
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this URI: the same characters, or for a loopback URI the same but for
    /// the port.
    pub fn matches(&self, presented: &str) -> bool {
        self.0 == presented
            || loopback_without_port(&self.0)
                .is_some_and(|registered| loopback_without_port(presented) == Some(registered))
    }
}

/// `http://127.0.0.1` or `http://[::1]`, the loopback addresses RFC 8252 §7.3 names.
fn is_loopback(url: &Url) -> bool {
    url.scheme() == "http"
        && match url.host() {
            Some(url::Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            _ => false,
        }
}

/// A loopback URI as written, with its port taken out; `None` for any other URI.
fn loopback_without_port(raw: &str) -> Option<String> {
    ["http://127.0.0.1", "http://[::1]"]
        .iter()
        .find_map(|host| {
            let rest = raw.strip_prefix(host)?;
            let rest = match rest.strip_prefix(':') {
                Some(after) => {
                    let digits =
                        after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                    after[..digits].parse::<u16>().ok()?;
                    &after[digits..]
                }
                None => rest,
            };
            (rest.is_empty() || rest.starts_with(['/', '?'])).then(|| format!("{host}{rest}"))
        })
}

impl fmt::Display for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_may_be_registered() {
        for ok in [
            "https://app.example.com/callback",
            "http://127.0.0.1/cb",
            "http://127.0.0.1:8400/cb",
            "http://[::1]:8400/cb",
            "http://localhost:3000/cb",
            "com.example.app:/oauth2redirect",
        ] {
            assert!(RedirectUri::parse(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("https://app.example.com/cb#frag", Refused::Fragment),
            ("https://app.example.com/cb#", Refused::Fragment),
            ("https://user:pw@app.example.com/cb", Refused::UserInfo),
            ("https://*.example.com/cb", Refused::Wildcard),
            ("http://app.example.com/cb", Refused::PlainHttp),
            ("http://10.0.0.1/cb", Refused::PlainHttp),
            ("myapp:/cb", Refused::Scheme),
            ("javascript:alert(1)", Refused::Scheme),
            ("/relative/cb", Refused::NotAbsolute),
            ("https://app.example.com/a b", Refused::Whitespace),
            (" https://app.example.com/cb", Refused::Whitespace),
        ] {
            assert_eq!(RedirectUri::parse(bad), Err(why), "{bad}");
        }
        let long = format!("https://app.example.com/{}", "a".repeat(MAX_LENGTH));
        assert_eq!(RedirectUri::parse(&long), Err(Refused::TooLong));
    }

    #[test]
    fn matching_is_exact_except_a_loopback_port() {
        let https = RedirectUri::parse("https://app.example.com/cb").unwrap();
        assert!(https.matches("https://app.example.com/cb"));
        for other in [
            "https://app.example.com/cb/",
            "https://APP.example.com/cb",
            "https://app.example.com/CB",
            "https://app.example.com:443/cb",
            "https://app.example.com:8443/cb",
            "https://app.example.com/cb#x",
            "https://app.example.com/cb?x=1",
            "http://app.example.com/cb",
            "https://user@app.example.com/cb",
            "https://app.example.com.evil.example/cb",
        ] {
            assert!(!https.matches(other), "{other}");
        }
        let loopback = RedirectUri::parse("http://127.0.0.1/cb").unwrap();
        for same in ["http://127.0.0.1/cb", "http://127.0.0.1:51234/cb"] {
            assert!(loopback.matches(same), "{same}");
        }
        for other in [
            "http://127.0.0.1:51234/cb/",
            "http://127.0.0.1:99999/cb",
            "http://127.0.0.1:/cb",
            "http://127.0.0.1:5x/cb",
            "http://127.0.0.1.evil.example/cb",
            "http://localhost:51234/cb",
            "http://[::1]:51234/cb",
            "http://127.0.0.1:51234/other",
        ] {
            assert!(!loopback.matches(other), "{other}");
        }
        let v6 = RedirectUri::parse("http://[::1]:8400/cb").unwrap();
        assert!(v6.matches("http://[::1]:1234/cb"));
        // localhost is not a loopback address for this rule: its port is compared.
        let localhost = RedirectUri::parse("http://localhost:3000/cb").unwrap();
        assert!(!localhost.matches("http://localhost:3001/cb"));
    }
}
