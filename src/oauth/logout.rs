//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): which requests may sign the browser out
//! without asking, where the browser may go afterwards, and what signing out ends.
//!
//! The only place the browser is sent afterwards is a post-logout redirect URI registered for the
//! client; a request that names another, or a hint this server cannot vouch for, still signs the browser
//! out (after asking, without a valid hint) and then shows the signed-out page. Only a malformed request
//! is refused.

use std::sync::Arc;

use url::Url;

use super::{authorize::MAX_TEXT, revocation::Revoker, verifier::Verifier};
use crate::{
    error::Error,
    ports::{Clients, SignInSession},
};

/// A logout request as it arrived: each parameter once at most, `repeated` naming any that came more
/// than once.
#[derive(Debug, Default, Clone)]
pub struct LogoutRequest {
    pub id_token_hint: Option<String>,
    pub client_id: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
    pub repeated: Vec<String>,
}

impl LogoutRequest {
    /// Where the parameter `name` goes; `None` for one the endpoint does not know.
    pub fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "id_token_hint" => &mut self.id_token_hint,
            "client_id" => &mut self.client_id,
            "post_logout_redirect_uri" => &mut self.post_logout_redirect_uri,
            "state" => &mut self.state,
            _ => return None,
        })
    }
}

/// A logout request that passed its checks.
#[derive(Debug, PartialEq, Eq)]
pub struct Logout {
    /// Sign out without asking: the hint is of the signed-in user, or nobody is signed in.
    pub at_once: bool,
    /// Where the browser goes afterwards, `state` included; `None` for the signed-out page.
    pub then: Option<String>,
}

/// Why a logout request is not acted on.
#[derive(Debug)]
pub enum Refused {
    /// Said on an error page.
    Page(&'static str),
    /// Storage could not answer.
    Failed(Error),
}

pub struct SignOut {
    pub clients: Arc<dyn Clients>,
    pub verifier: Arc<Verifier>,
    pub revoker: Arc<Revoker>,
}

impl SignOut {
    /// Checks `req` for the browser whose sign-in session is `session`.
    pub async fn check(
        &self,
        req: &LogoutRequest,
        session: Option<&SignInSession>,
    ) -> Result<Logout, Refused> {
        if let Some(name) = req.repeated.first() {
            return Err(Refused::Page(match name.as_str() {
                "id_token_hint" => "id_token_hint is repeated",
                "client_id" => "client_id is repeated",
                "post_logout_redirect_uri" => "post_logout_redirect_uri is repeated",
                _ => "state is repeated",
            }));
        }
        if req.state.as_ref().is_some_and(|s| s.len() > MAX_TEXT) {
            return Err(Refused::Page("state is too long"));
        }
        // A hint that is not an ID token of this server vouches for nothing: the user is asked.
        let hint = req
            .id_token_hint
            .as_deref()
            .and_then(|token| self.verifier.id_token_hint(token).ok());
        // The client is the one named, or the hint's audience. When both are given and differ, the
        // browser is still signed out but sent nowhere: neither can vouch for the other's URI.
        let disagree = matches!((req.client_id.as_deref(), &hint), (Some(named), Some(hint)) if named != hint.aud);
        let client_id = match (req.client_id.as_deref(), &hint) {
            (Some(named), _) => Some(named),
            (None, Some(hint)) => Some(hint.aud.as_str()),
            (None, None) => None,
        };
        let client = match client_id {
            None => None,
            Some(id) => self.clients.find(id).await.map_err(Refused::Failed)?,
        };
        let then = req
            .post_logout_redirect_uri
            .as_deref()
            .filter(|presented| {
                !disagree
                    && client.as_ref().is_some_and(|c| {
                        c.post_logout_redirect_uris
                            .iter()
                            .any(|r| r.matches(presented))
                    })
            })
            .map(|registered| with_state(registered, req.state.as_deref()));
        let at_once = match (session, &hint) {
            (None, _) => true,
            (Some(session), Some(hint)) => hint.sub == session.user.id.to_string(),
            (Some(_), None) => false,
        };
        Ok(Logout { at_once, then })
    }

    /// Ends the browser's sign-in session and every session (refresh family) started through it.
    pub async fn end(&self, session: &SignInSession) -> Result<(), Error> {
        self.revoker.sign_in(session.id).await?;
        tracing::info!(user = %session.user.id, "signed out");
        Ok(())
    }
}

/// `to` with `state` added to its query, when there is one.
fn with_state(to: &str, state: Option<&str>) -> String {
    match (Url::parse(to), state) {
        (Ok(mut url), Some(state)) => {
            url.query_pairs_mut().append_pair("state", state);
            url.into()
        }
        _ => to.to_owned(),
    }
}
