//! Account flows, the same for the HTTP API and the command line, so that a rule holds however an account
//! or a client is made or changed: registration, the user a token speaks for, password change, disable
//! and enable, client creation and deletion. What these changes revoke is the [`Revoker`]'s to record.

use std::{net::IpAddr, sync::Arc};

use uuid::Uuid;

use crate::{
    error::Error,
    oauth::{client, grant::password::ADMIN_SCOPE, login::LoginGuard, revocation::Revoker, secret},
    password::{self, Hasher, Verified},
    ports::{Clients, Clock, CreateClientError, CreateUserError, NewClient, NewUser, Users},
    value::{
        account::{Client, User},
        claims::AccessClaims,
        grant_type::GrantType,
        redirect_uri::RedirectUri,
        scope::Scope,
        username::Username,
    },
};

pub struct Accounts {
    pub users: Arc<dyn Users>,
    pub clients: Arc<dyn Clients>,
    pub hasher: Arc<Hasher>,
    pub login: Arc<LoginGuard>,
    pub revoker: Arc<Revoker>,
    pub clock: Arc<dyn Clock>,
    /// `password.min_length`.
    pub min_password_length: usize,
}

/// What registration asks for.
pub struct NewAccount<'a> {
    pub username: &'a str,
    pub password: String,
    /// Empty counts as none.
    pub email: Option<&'a str>,
    /// The operator vouches for the address (the command line); over HTTP a mailed link proves it.
    pub email_verified: bool,
    pub is_admin: bool,
}

/// What creating a client asks for.
pub struct ClientRequest<'a> {
    pub id: &'a str,
    pub grant_types: Vec<GrantType>,
    pub scopes: &'a Scope,
    pub secret: ClientSecret,
    /// As the operator gave them; checked here against the registration rules.
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
}

pub enum ClientSecret {
    /// A public client: none.
    Public,
    /// One the operator chose; at least 32 characters.
    Given(String),
    /// 256 random bits, generated here and shown once.
    Generate,
}

/// The shortest client secret accepted.
const MIN_SECRET_LENGTH: usize = 32;

impl Accounts {
    /// Creates an account under the contract's rules: a valid username, a plausible email, a password
    /// the policy accepts, hashed; a taken username or email is a `409`.
    pub async fn register(&self, new: NewAccount<'_>) -> Result<User, Error> {
        let username = Username::parse(new.username)?;
        let email = new.email.filter(|e| !e.is_empty());
        if let Some(email) = email {
            check_email(email)?;
        }
        password::check_policy(&new.password, username.as_str(), self.min_password_length)?;
        let password_hash = self.hasher.hash(new.password).await?;
        let created = self
            .users
            .create(NewUser {
                username: &username,
                email,
                email_verified: new.email_verified && email.is_some(),
                password_hash,
                is_admin: new.is_admin,
            })
            .await
            .map_err(|e| match e {
                CreateUserError::UsernameTaken => Error::Conflict("username_taken"),
                CreateUserError::EmailTaken => Error::Conflict("email_taken"),
                CreateUserError::Failed(e) => e,
            })?;
        tracing::info!(user = %created.id, admin = created.is_admin, "registered");
        Ok(created)
    }

    /// The live user a token speaks for. A client's own token (no user) lacks the scope of a user
    /// route; a user disabled or gone since the token was issued makes it invalid.
    pub async fn user_for(&self, claims: &AccessClaims) -> Result<User, Error> {
        if claims.username.is_none() {
            return Err(Error::InsufficientScope);
        }
        let id: Uuid = claims
            .sub
            .parse()
            .map_err(|_| Error::InvalidToken("sub is not a user id"))?;
        match self.users.find(id).await? {
            Some(user) if user.is_active => Ok(user),
            _ => Err(Error::InvalidToken("user is gone or disabled")),
        }
    }

    /// The live admin a token speaks for. RFC 6750 §3.1: a valid token without the scope is
    /// `insufficient_scope`; the scope is not enough, the user must be an active admin now, so that a
    /// disabled or demoted admin's token stops at once.
    pub async fn admin_for(&self, claims: &AccessClaims) -> Result<User, Error> {
        if !claims.has_scope(ADMIN_SCOPE) {
            return Err(Error::InsufficientScope);
        }
        let user = self.user_for(claims).await?;
        if user.is_admin {
            Ok(user)
        } else {
            Err(Error::InsufficientScope)
        }
    }

    /// Changes a user's password, given the current one. A wrong current password is a failed login
    /// (throttled alike), so that a stolen access token is no faster a way to guess it than the token
    /// endpoint; the change revokes every session and access token of the user.
    pub async fn change_password(
        &self,
        user: &User,
        current: String,
        new: String,
        ip: IpAddr,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        self.login.check(&user.username, ip, now).await?;
        let verified = if current.chars().count() <= password::MAX_LENGTH {
            self.hasher
                .verify(current, Some(user.password_hash.clone()))
                .await
        } else {
            Ok(Verified::Mismatch)
        };
        let matches = match verified {
            Ok(verified) => verified != Verified::Mismatch,
            Err(e) => {
                self.login.unchecked(&user.username, ip).await;
                return Err(e);
            }
        };
        self.login.record(&user.username, ip, matches).await;
        if !matches {
            return Err(Error::InvalidCurrentPassword);
        }
        password::check_policy(&new, &user.username, self.min_password_length)?;
        let hash = self.hasher.hash(new).await?;
        self.revoker.change_password(user.id, hash, None).await?;
        tracing::info!(user = %user.id, "password changed; sessions revoked");
        Ok(())
    }

    /// Enables or disables a user; disabling revokes everything issued to them. `false` when there is
    /// no such user.
    pub async fn set_active(&self, id: Uuid, active: bool) -> Result<bool, Error> {
        self.revoker.set_active(id, active).await
    }

    /// Creates a client; returns it with the secret to show once when one was generated.
    pub async fn create_client(
        &self,
        new: ClientRequest<'_>,
    ) -> Result<(Client, Option<String>), Error> {
        let invalid = |why: &'static str| Error::Policy {
            code: "invalid_client_metadata",
            description: why.into(),
        };
        let id = new.id;
        if id.is_empty()
            || id.len() > client::MAX_ID
            || id.chars().any(|c| c.is_control() || c == ':')
        {
            return Err(invalid(
                "a client id has 1 to 128 characters, without ':' or control characters",
            ));
        }
        let public = matches!(new.secret, ClientSecret::Public);
        if public && new.grant_types.contains(&GrantType::ClientCredentials) {
            return Err(invalid("a public client cannot use client_credentials"));
        }
        let (redirect_uris, post_logout_redirect_uris) = check_redirect_uris(
            &new.grant_types,
            &new.redirect_uris,
            &new.post_logout_redirect_uris,
        )?;
        let (secret, shown) = match new.secret {
            ClientSecret::Public => (None, None),
            ClientSecret::Given(s) if s.len() < MIN_SECRET_LENGTH => {
                return Err(invalid("a client secret must have at least 32 characters"));
            }
            // The token endpoint refuses anything longer, so such a client could never authenticate.
            ClientSecret::Given(s) if s.len() > client::MAX_SECRET => {
                return Err(invalid("a client secret must have at most 256 bytes"));
            }
            ClientSecret::Given(s) => (Some(s), None),
            ClientSecret::Generate => {
                let s = secret::generate();
                (Some(s.clone()), Some(s))
            }
        };
        let created = self
            .clients
            .create(NewClient {
                id,
                secret_hash: secret.as_deref().map(secret::hash),
                grant_types: &new.grant_types,
                scopes: new.scopes,
                redirect_uris: &redirect_uris,
                post_logout_redirect_uris: &post_logout_redirect_uris,
            })
            .await
            .map_err(|e| match e {
                CreateClientError::Exists => Error::Conflict("client_exists"),
                CreateClientError::Failed(e) => e,
            })?;
        tracing::info!(client = %created.id, public, "client created");
        Ok((created, shown))
    }

    /// Deletes a client and revokes every token it was issued. `false` when there is no such client.
    pub async fn delete_client(&self, id: &str) -> Result<bool, Error> {
        self.revoker.delete_client(id).await
    }
}

/// A client's redirect URIs and post-logout redirect URIs under the contract's rules: each one a URI
/// [`RedirectUri::parse`] accepts, and at least one redirect URI for the authorization code grant.
fn check_redirect_uris(
    grant_types: &[GrantType],
    redirect_uris: &[String],
    post_logout_redirect_uris: &[String],
) -> Result<(Vec<RedirectUri>, Vec<RedirectUri>), Error> {
    let refused = |description: String| Error::Policy {
        code: "invalid_redirect_uri",
        description: description.into(),
    };
    let parse_all = |kind: &str, raw: &[String]| {
        raw.iter()
            .map(|uri| {
                RedirectUri::parse(uri).map_err(|why| refused(format!("{kind} {uri}: {why}")))
            })
            .collect::<Result<Vec<_>, Error>>()
    };
    let redirect = parse_all("redirect URI", redirect_uris)?;
    let post_logout = parse_all("post-logout redirect URI", post_logout_redirect_uris)?;
    if redirect.is_empty() && grant_types.contains(&GrantType::AuthorizationCode) {
        return Err(refused(
            "a client with the authorization_code grant needs at least one redirect URI".into(),
        ));
    }
    Ok((redirect, post_logout))
}

/// A plausibility check only; an address is proven by mail, which this server does not send yet.
/// A plausible address: one `@`, a dotted domain, no space or control character, at most 254 bytes.
pub fn check_email(email: &str) -> Result<(), Error> {
    let plausible = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if plausible {
        Ok(())
    } else {
        Err(Error::Policy {
            code: "invalid_email",
            description: "the email address is not valid".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_must_look_like_one() {
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@localhost",
            "a b@example.com",
            "a\r\n@x.io",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
        assert!(check_email(&format!("{}@example.com", "a".repeat(250))).is_err());
        assert!(check_email("alice@example.com").is_ok());
    }

    fn uris(raw: &[&str]) -> Vec<String> {
        raw.iter().map(|u| u.to_string()).collect()
    }

    /// The description of the `invalid_redirect_uri` refusal of these lists.
    fn refusal(grants: &[GrantType], redirect: &[&str], post_logout: &[&str]) -> String {
        match check_redirect_uris(grants, &uris(redirect), &uris(post_logout)) {
            Err(Error::Policy {
                code: "invalid_redirect_uri",
                description,
            }) => description.into_owned(),
            Err(other) => panic!("{redirect:?} {post_logout:?}: {other}"),
            Ok(_) => panic!("{redirect:?} {post_logout:?} accepted"),
        }
    }

    #[test]
    fn redirect_uris_follow_the_registration_rules_and_the_refusal_names_the_uri() {
        let code = [GrantType::AuthorizationCode, GrantType::RefreshToken];
        let (redirect, post_logout) = check_redirect_uris(
            &code,
            &uris(&["https://app.example.com/cb", "http://127.0.0.1/cb"]),
            &uris(&["https://app.example.com/bye"]),
        )
        .unwrap();
        let strs = |list: &[RedirectUri]| {
            list.iter()
                .map(|u| u.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            strs(&redirect),
            ["https://app.example.com/cb", "http://127.0.0.1/cb"]
        );
        assert_eq!(strs(&post_logout), ["https://app.example.com/bye"]);

        for (bad, why) in [
            ("http://app.example.com/cb", "use https"),
            ("https://app.example.com/cb#x", "fragment"),
            ("https://*.example.com/cb", "wildcard"),
            ("https://app.example.com/a b", "no spaces"),
            (" https://app.example.com/cb", "no spaces"),
        ] {
            let ok = "https://app.example.com/cb";
            let message = refusal(&code, &[ok, bad], &[]);
            assert!(
                message.contains(bad.trim()) && message.contains(why),
                "{bad:?}: {message}"
            );
            let message = refusal(&code, &[ok], &[bad]);
            assert!(
                message.contains("post-logout")
                    && message.contains(bad.trim())
                    && message.contains(why),
                "{bad:?}: {message}"
            );
        }
    }

    #[test]
    fn the_authorization_code_grant_needs_a_redirect_uri_and_other_grants_none() {
        let message = refusal(
            &[GrantType::AuthorizationCode],
            &[],
            &["https://app.example.com/bye"],
        );
        assert!(
            message.contains("authorization_code") && message.contains("redirect URI"),
            "{message}"
        );
        for grants in [
            &[GrantType::Password, GrantType::RefreshToken][..],
            &[GrantType::ClientCredentials],
        ] {
            assert!(check_redirect_uris(grants, &[], &[]).is_ok(), "{grants:?}");
        }
    }
}
