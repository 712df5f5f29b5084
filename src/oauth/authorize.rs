//! The authorization endpoint (RFC 6749 §4.1, RFC 7636, RFC 9207, OpenID Connect Core §3.1.2): which
//! requests are trusted enough to redirect, what every other refusal says at the client's redirect URI,
//! when the browser must sign in, and the single-use code it takes back to the client.
//!
//! Every client is first-party: there is no consent step, and PKCE with S256 is required of all.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use url::Url;

use super::{
    grant::{password::grantable, resolve_scope},
    secret,
};
use crate::{
    error::Error,
    ports::{Clients, Clock, CodeGrant, Codes, NewCode, SignInSession, SignInSessions, later},
    value::{account::Client, account::User, grant_type::GrantType, scope::Scope},
};

/// The longest `state`, `nonce` or `login_hint` accepted.
pub const MAX_TEXT: usize = 1024;

/// An authorization request as it arrived: each parameter once at most, `repeated` naming any that came
/// more than once.
#[derive(Debug, Default, Clone)]
pub struct AuthorizationRequest {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub nonce: Option<String>,
    pub prompt: Option<String>,
    pub max_age: Option<String>,
    pub login_hint: Option<String>,
    pub repeated: Vec<String>,
}

impl AuthorizationRequest {
    /// Where the parameter `name` goes; `None` for one the endpoint does not know.
    pub fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "response_type" => &mut self.response_type,
            "client_id" => &mut self.client_id,
            "redirect_uri" => &mut self.redirect_uri,
            "scope" => &mut self.scope,
            "state" => &mut self.state,
            "code_challenge" => &mut self.code_challenge,
            "code_challenge_method" => &mut self.code_challenge_method,
            "nonce" => &mut self.nonce,
            "prompt" => &mut self.prompt,
            "max_age" => &mut self.max_age,
            "login_hint" => &mut self.login_hint,
            _ => return None,
        })
    }
}

/// A request the endpoint will not act on.
#[derive(Debug)]
pub enum Refused {
    /// The client or its redirect URI is not known: said on an error page, never by a redirect, so that
    /// this endpoint cannot be made an open redirector.
    Page(&'static str),
    /// Said to the client at its redirect URI (a `303` there).
    Redirect(String),
    /// Storage could not say whether the client is known: nowhere to redirect to yet.
    Failed(Error),
}

/// What `prompt` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// Sign in unless a usable sign-in session exists.
    Default,
    /// Sign in again whatever the session.
    Login,
    /// Never show a page: a usable session, or `login_required`.
    None,
}

/// A request that passed every check: the client is known, and where to answer it is settled.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub client: Client,
    /// Where the answer goes.
    pub redirect_to: String,
    /// As the request named it, if it did.
    pub redirect_uri: Option<String>,
    /// As the request asked it, within the client's scopes; `None` for all the user may be granted.
    pub scope: Option<Scope>,
    pub state: Option<String>,
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub prompt: Prompt,
    pub max_age: Option<u64>,
    pub login_hint: Option<String>,
}

pub struct Authorizer {
    pub clients: Arc<dyn Clients>,
    pub codes: Arc<dyn Codes>,
    pub sign_ins: Arc<dyn SignInSessions>,
    pub clock: Arc<dyn Clock>,
    /// `iss` of every answer (RFC 9207).
    pub issuer: String,
    pub code_ttl: Duration,
    pub sign_in_ttl: Duration,
}

impl Authorizer {
    /// Checks a request in the order that keeps the endpoint from redirecting anywhere it should not:
    /// the client and its redirect URI first (a page when either fails), then everything else (a
    /// redirect with the error).
    pub async fn check(&self, req: AuthorizationRequest) -> Result<Authorization, Refused> {
        let repeated = |name: &str| req.repeated.iter().any(|r| r == name);
        if repeated("client_id") {
            return Err(Refused::Page("client_id is repeated"));
        }
        let Some(client_id) = req.client_id.as_deref() else {
            return Err(Refused::Page("client_id is missing"));
        };
        // A row read in the last second will do when it accepts this request's redirect URI; otherwise
        // the database decides (a client re-registered with other URIs).
        let presented = req.redirect_uri.as_deref();
        let usable =
            |c: &Client| presented.is_none_or(|p| c.redirect_uris.iter().any(|r| r.matches(p)));
        let client = self
            .clients
            .find_recent(client_id, &usable)
            .await
            .map_err(Refused::Failed)?
            .ok_or(Refused::Page("unknown client_id"))?;
        if repeated("redirect_uri") {
            return Err(Refused::Page("redirect_uri is repeated"));
        }
        let redirect_to = match (&req.redirect_uri, client.redirect_uris.as_slice()) {
            (Some(presented), registered) => registered
                .iter()
                .any(|r| r.matches(presented))
                .then(|| presented.clone())
                .ok_or(Refused::Page(
                    "redirect_uri is not registered for this client",
                ))?,
            (None, [only]) => only.as_str().to_owned(),
            (None, []) => {
                return Err(Refused::Page("this client has no redirect URI"));
            }
            (None, _) => {
                return Err(Refused::Page(
                    "redirect_uri is required: this client has several",
                ));
            }
        };

        // From here on the client hears of every problem at its redirect URI.
        let state = req.state.clone().filter(|s| s.len() <= MAX_TEXT);
        let refuse = |error: &str, description: &str| {
            Refused::Redirect(self.answer(
                &redirect_to,
                &[("error", error), ("error_description", description)],
                state.as_deref(),
            ))
        };
        if let Some(name) = req.repeated.first() {
            return Err(refuse("invalid_request", &format!("{name} is repeated")));
        }
        for (name, value) in [
            ("state", &req.state),
            ("nonce", &req.nonce),
            ("login_hint", &req.login_hint),
        ] {
            if value.as_ref().is_some_and(|v| v.len() > MAX_TEXT) {
                return Err(refuse(
                    "invalid_request",
                    &format!("{name} is longer than {MAX_TEXT} characters"),
                ));
            }
        }
        match req.response_type.as_deref() {
            None => return Err(refuse("invalid_request", "response_type is missing")),
            Some("code") => {}
            Some(_) => {
                return Err(refuse(
                    "unsupported_response_type",
                    "response_type must be code",
                ));
            }
        }
        if !client.grant_types.contains(&GrantType::AuthorizationCode) {
            return Err(refuse(
                "unauthorized_client",
                "this client may not use the authorization code grant",
            ));
        }
        let Some(code_challenge) = req.code_challenge.clone() else {
            return Err(refuse(
                "invalid_request",
                "code_challenge is required (PKCE, S256)",
            ));
        };
        if req.code_challenge_method.as_deref() != Some("S256") {
            return Err(refuse(
                "invalid_request",
                "code_challenge_method must be S256",
            ));
        }
        // The base64url SHA-256 of a verifier: 43 characters of its alphabet.
        if code_challenge.len() != 43
            || !code_challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(refuse(
                "invalid_request",
                "code_challenge is not a base64url SHA-256",
            ));
        }
        let scope = match req.scope.as_deref().map(Scope::parse) {
            None => None,
            Some(Ok(scope)) if scope.is_subset(&client.scopes) => Some(scope),
            Some(_) => {
                return Err(refuse(
                    "invalid_scope",
                    "the requested scope is invalid or not allowed",
                ));
            }
        };
        let prompt = match req.prompt.as_deref() {
            None => Prompt::Default,
            Some("login") => Prompt::Login,
            Some("none") => Prompt::None,
            Some(_) => return Err(refuse("invalid_request", "prompt must be login or none")),
        };
        let max_age = match req.max_age.as_deref().map(str::parse::<u64>) {
            None => None,
            Some(Ok(seconds)) => Some(seconds),
            Some(Err(_)) => {
                return Err(refuse(
                    "invalid_request",
                    "max_age must be a number of seconds",
                ));
            }
        };
        Ok(Authorization {
            client,
            redirect_uri: req.redirect_uri,
            redirect_to,
            scope,
            state,
            code_challenge,
            nonce: req.nonce,
            prompt,
            max_age,
            login_hint: req.login_hint,
        })
    }

    /// The browser's sign-in session behind `cookie`, if it is live and its user still may sign in.
    pub async fn session(&self, cookie: Option<&str>) -> Result<Option<SignInSession>, Error> {
        let Some(cookie) = cookie.filter(|c| c.len() <= 128) else {
            return Ok(None);
        };
        self.sign_ins
            .find(&secret::hash(cookie), self.clock.now())
            .await
    }

    /// Whether `session` may answer `authorization` without signing in again; `login_required` when it
    /// may not and the request said `prompt=none`.
    pub fn usable<'a>(
        &self,
        authorization: &Authorization,
        session: Option<&'a SignInSession>,
    ) -> Result<Option<&'a SignInSession>, Refused> {
        let now = self.clock.now();
        let usable = session.filter(|s| {
            authorization.prompt != Prompt::Login
                && authorization
                    .max_age
                    .is_none_or(|max| now <= later(s.auth_time, Duration::from_secs(max)))
        });
        if usable.is_none() && authorization.prompt == Prompt::None {
            return Err(Refused::Redirect(self.refusal(
                authorization,
                "login_required",
                "the user must sign in",
            )));
        }
        Ok(usable)
    }

    /// Starts a sign-in session for `user`, who has just proven their password; returns the cookie's
    /// value, which is stored only as its hash. `invalid_grant` when the user changed their password or
    /// was disabled since their row was read: a sign-in that completes after that does not survive it.
    pub async fn sign_in(&self, user: &User) -> Result<(String, SignInSession), Error> {
        let cookie = secret::generate();
        let now = self.clock.now();
        let id = self
            .sign_ins
            .create(
                secret::hash(&cookie),
                user,
                now,
                later(now, self.sign_in_ttl),
            )
            .await?
            .ok_or(Error::InvalidGrant("the user changed while signing in"))?;
        let session = SignInSession {
            id,
            user: user.clone(),
            auth_time: now,
        };
        Ok((cookie, session))
    }

    /// Issues a code for the signed-in user and answers where the browser goes with it.
    pub async fn code(
        &self,
        authorization: &Authorization,
        session: &SignInSession,
    ) -> Result<String, Refused> {
        let user = &session.user;
        // As at the token endpoint: asking for `admin` without being an admin is `invalid_scope`.
        let grantable = grantable(&authorization.client.scopes, user);
        let Ok(scope) = resolve_scope(authorization.scope.clone(), &grantable) else {
            return Err(Refused::Redirect(self.refusal(
                authorization,
                "invalid_scope",
                "the admin scope is for admin users only",
            )));
        };
        let code = secret::generate();
        let grant = CodeGrant {
            client_id: authorization.client.id.clone(),
            user_id: user.id,
            sign_in_session: Some(session.id),
            redirect_uri: authorization.redirect_uri.clone(),
            code_challenge: authorization.code_challenge.clone(),
            scope,
            nonce: authorization.nonce.clone(),
            auth_time: session.auth_time,
        };
        let created = self
            .codes
            .create(NewCode {
                hash: secret::hash(&code),
                grant: &grant,
                expires_at: later(self.clock.now(), self.code_ttl),
            })
            .await;
        match created {
            Ok(true) => {}
            // Deleted since it was read: nowhere trusted to redirect to any more.
            Ok(false) => return Err(Refused::Page("unknown client_id")),
            Err(e) => {
                tracing::error!(error = %e, "could not store an authorization code");
                return Err(Refused::Redirect(self.refusal(
                    authorization,
                    "server_error",
                    "the code could not be issued; try again",
                )));
            }
        }
        tracing::info!(user = %user.id, client = %authorization.client.id, "authorization code issued");
        Ok(self.answer(
            &authorization.redirect_to,
            &[("code", &code)],
            authorization.state.as_deref(),
        ))
    }

    /// An error said at the client's redirect URI.
    pub fn refusal(&self, authorization: &Authorization, error: &str, description: &str) -> String {
        self.answer(
            &authorization.redirect_to,
            &[("error", error), ("error_description", description)],
            authorization.state.as_deref(),
        )
    }

    /// `to` with `pairs`, then `state` when there is one and `iss` (RFC 9207), added to its query.
    fn answer(&self, to: &str, pairs: &[(&str, &str)], state: Option<&str>) -> String {
        let Ok(mut url) = Url::parse(to) else {
            // Only registered URIs, which parsed when they were registered, get here.
            return to.to_owned();
        };
        {
            let mut query = url.query_pairs_mut();
            query.extend_pairs(pairs);
            if let Some(state) = state {
                query.append_pair("state", state);
            }
            query.append_pair("iss", &self.issuer);
        }
        url.into()
    }
}

/// The S256 challenge of `verifier` when it is a PKCE verifier (RFC 7636 §4.1: 43 to 128 unreserved
/// characters).
pub fn challenge_of(verifier: &str) -> Option<String> {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    well_formed.then(|| URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())))
}

/// Whether `verifier` is the PKCE verifier whose S256 challenge is `challenge`; compared in constant
/// time.
pub fn verifies(verifier: &str, challenge: &str) -> bool {
    use subtle::ConstantTimeEq;
    challenge_of(verifier).is_some_and(|c| bool::from(c.as_bytes().ct_eq(challenge.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_as_rfc_7636_appendix_b_computes_it() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(verifies(verifier, challenge));
        assert!(!verifies(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
            challenge
        ));
        // Too short, too long, or outside the alphabet: refused whatever it hashes to.
        assert!(!verifies(
            "short",
            &URL_SAFE_NO_PAD.encode(Sha256::digest(b"short"))
        ));
        let long = "a".repeat(129);
        assert!(!verifies(
            &long,
            &URL_SAFE_NO_PAD.encode(Sha256::digest(long.as_bytes()))
        ));
        let odd = format!("{}+", "a".repeat(42));
        assert!(!verifies(
            &odd,
            &URL_SAFE_NO_PAD.encode(Sha256::digest(odd.as_bytes()))
        ));
    }
}
