//! The interfaces the domain ([`crate::oauth`], [`crate::accounts`]) owns and storage implements: what
//! it needs to read and write, in its own values, and nothing of tables, SQL or Redis. Each is as narrow
//! as its callers; `store` has the implementations, and tests may bring others.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    error::Error,
    value::{
        account::{Client, Session, User},
        claims::AccessClaims,
        grant_type::GrantType,
        redirect_uri::RedirectUri,
        revocation::Revocation,
        scope::Scope,
        username::Username,
    },
};

/// What time it is. Injected wherever time is the subject (login throttling, token and session
/// lifetimes), so that tests move it instead of sleeping.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// `now` plus `ttl`, saturating: a client's `max_age` may be any number of seconds.
pub fn later(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub struct NewUser<'a> {
    pub username: &'a Username,
    pub email: Option<&'a str>,
    /// The operator vouches for the address (`portcullis users create --email`).
    pub email_verified: bool,
    pub password_hash: String,
    pub is_admin: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("the username is taken")]
    UsernameTaken,
    #[error("the email is taken")]
    EmailTaken,
    #[error(transparent)]
    Failed(#[from] Error),
}

#[async_trait]
pub trait Users: Send + Sync {
    async fn find(&self, id: Uuid) -> Result<Option<User>, Error>;
    /// Whether the user exists and is enabled: what a token's every use asks, read without the rest
    /// of the row.
    async fn is_active(&self, id: Uuid) -> Result<bool, Error>;
    /// By username, compared as [`Username::key`] does.
    async fn find_by_username(&self, name: &str) -> Result<Option<User>, Error>;
    /// By email address, regardless of case.
    async fn find_by_email(&self, email: &str) -> Result<Option<User>, Error>;
    /// Gives the user a new, unverified address; the unique index decides whether it is taken. `None`
    /// when there is no such user.
    async fn set_email(&self, id: Uuid, email: &str) -> Result<Option<User>, CreateUserError>;
    /// Marks the user's address verified, if it is still `email`; whether it was.
    async fn verify_email(&self, id: Uuid, email: &str) -> Result<bool, Error>;
    /// Oldest first; every user when `limit` is `None`.
    async fn list(&self, limit: Option<u64>, offset: u64) -> Result<Vec<User>, Error>;
    /// The unique indexes, not a prior read, decide what is taken.
    async fn create(&self, new: NewUser<'_>) -> Result<User, CreateUserError>;
    /// Stores a new hash of the same password, unless the password was changed since `verified` (its
    /// `password_changed_at` when it was checked).
    async fn update_hash(
        &self,
        id: Uuid,
        verified: DateTime<Utc>,
        password_hash: String,
    ) -> Result<(), Error>;
    /// Sets a new password and, in the same transaction, revokes everything issued before it (each
    /// revocation listed until `until`) and records that in the revocation log. With `reset_link` (the
    /// hash of a password-reset link's token) the link is spent in that transaction too, and nothing
    /// changes unless it was this user's, unspent and unexpired (`InvalidLinkToken`): a link is used up
    /// exactly when the password it set is stored.
    async fn change_password(
        &self,
        id: Uuid,
        password_hash: String,
        until: DateTime<Utc>,
        reset_link: Option<&[u8]>,
    ) -> Result<Vec<Revocation>, Error>;
    /// Enables or disables; disabling revokes and records as [`Users::change_password`] does. `None`
    /// when there is no such user.
    async fn set_active(
        &self,
        id: Uuid,
        active: bool,
        until: DateTime<Utc>,
    ) -> Result<Option<Vec<Revocation>>, Error>;
}

/// A session to start, bound to the user's state the password check saw.
pub struct NewSession<'a> {
    pub user: &'a User,
    pub client_id: &'a str,
    pub scope: &'a Scope,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The first refresh token's hash and its idle expiry, when the client may refresh.
    pub refresh: Option<(Vec<u8>, DateTime<Utc>)>,
}

/// The redemption of an authorization code as the token request presents it. The code's session starts
/// only while the code is unused and unexpired, was issued to this client, with this redirect URI (if
/// it named one) and this challenge, and while its user, its client and its browser sign-in are as
/// they were when it was issued; the code is claimed as the session starts, so of concurrent
/// redemptions exactly one starts a session, and a failed one leaves the code unused.
pub struct CodeStart<'a> {
    pub hash: &'a [u8],
    pub client_id: &'a str,
    pub redirect_uri: Option<&'a str>,
    /// The S256 challenge of the presented verifier.
    pub code_challenge: &'a str,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The first refresh token's hash and its idle expiry, when the client may refresh.
    pub refresh: Option<(Vec<u8>, DateTime<Utc>)>,
}

/// A session started by the redemption of a code: what the code stood for, and its user as the
/// redemption found them.
pub struct CodeStarted {
    pub session: Session,
    pub grant: CodeGrant,
    pub user: User,
}

/// A refresh token to spend: presented by hash, replaced by the successor whose hash is given.
pub struct Spend<'a> {
    pub presented: &'a [u8],
    pub successor: &'a [u8],
    pub client_id: &'a str,
    pub now: DateTime<Utc>,
    /// The successor's idle expiry, before the session's end caps it.
    pub expires_at: DateTime<Utc>,
}

/// A token spent: what the access token issued with its successor says.
pub struct Spent {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    /// The token's own scope, which the successor keeps.
    pub scope: Scope,
}

/// What storage knows of a refresh token, for the domain to judge a rotation that did not go through.
pub struct RefreshToken {
    pub scope: Scope,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub session: Session,
    /// The session's user; `None` when they are gone.
    pub user: Option<User>,
}

/// A successor that exists: the presented token was spent when it was created.
pub struct SuccessorToken {
    pub session_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait Sessions: Send + Sync {
    /// Inserts the session and its first refresh token, all or nothing; `None`, writing nothing, when
    /// the user was disabled or changed their password since they were verified, or the client was
    /// deleted.
    async fn start(&self, new: NewSession<'_>) -> Result<Option<Session>, Error>;
    /// Redeems a code: claims it, and inserts its session and first refresh token, all or nothing, in
    /// one round trip. `None`, writing nothing, when any condition of [`CodeStart`] fails; then
    /// [`Codes::redeem`] tells which.
    async fn start_from_code(&self, code: CodeStart<'_>) -> Result<Option<CodeStarted>, Error>;
    /// Spends a live token by inserting its successor, only if the token, its session (of this client)
    /// and its user are all live; of concurrent spends of one token exactly one succeeds. `None` when
    /// nothing was spent, whatever the reason.
    async fn spend(&self, spend: Spend<'_>) -> Result<Option<Spent>, Error>;
    /// A refresh token with its session and user, spent or not.
    async fn refresh_token(&self, hash: &[u8]) -> Result<Option<RefreshToken>, Error>;
    /// The token that replaced a spent one, by its hash.
    async fn successor(&self, hash: &[u8]) -> Result<Option<SuccessorToken>, Error>;
    async fn find(&self, id: Uuid) -> Result<Option<Session>, Error>;
    /// The user's sessions neither revoked nor past their end at `now`, newest first.
    async fn list_live(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<Vec<Session>, Error>;
    /// Revokes one session and records it; nothing is recorded when it was revoked already.
    async fn revoke(
        &self,
        id: Uuid,
        reason: &str,
        until: DateTime<Utc>,
    ) -> Result<Vec<Revocation>, Error>;
    /// Ends a browser's sign-in session and revokes every session started through it, and records it.
    async fn revoke_sign_in(
        &self,
        id: Uuid,
        reason: &str,
        until: DateTime<Utc>,
    ) -> Result<Vec<Revocation>, Error>;
    /// Revokes every session of a user and every token issued to them before now, and records it.
    async fn revoke_all_of_user(
        &self,
        user_id: Uuid,
        reason: &str,
        until: DateTime<Utc>,
    ) -> Result<Vec<Revocation>, Error>;
}

pub struct NewClient<'a> {
    pub id: &'a str,
    pub secret_hash: Option<Vec<u8>>,
    pub grant_types: &'a [GrantType],
    pub scopes: &'a Scope,
    pub redirect_uris: &'a [RedirectUri],
    pub post_logout_redirect_uris: &'a [RedirectUri],
}

#[derive(Debug, thiserror::Error)]
pub enum CreateClientError {
    #[error("a client with this id exists")]
    Exists,
    #[error(transparent)]
    Failed(#[from] Error),
}

#[async_trait]
pub trait Clients: Send + Sync {
    async fn find(&self, id: &str) -> Result<Option<Client>, Error>;
    /// A client read at most a second ago when `usable` accepts it, else read now.
    async fn find_recent(
        &self,
        id: &str,
        usable: &(dyn for<'c> Fn(&'c Client) -> bool + Send + Sync),
    ) -> Result<Option<Client>, Error>;
    async fn list(&self) -> Result<Vec<Client>, Error>;
    async fn create(&self, new: NewClient<'_>) -> Result<Client, CreateClientError>;
    /// Deletes a client with its sessions and records the revocation of every token it was issued.
    /// `None` when there is no such client.
    async fn delete(
        &self,
        id: &str,
        until: DateTime<Utc>,
    ) -> Result<Option<Vec<Revocation>>, Error>;
}

/// The durable revocation log: the truth the deny list copies.
#[async_trait]
pub trait RevocationLog: Send + Sync {
    async fn record(&self, revocations: &[Revocation]) -> Result<(), Error>;
    /// Entries live at `now` after log number `since` (all when `None`), and the newest number they
    /// reach.
    async fn since(
        &self,
        since: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Revocation>, i64), Error>;
    /// Whether a live entry denies a token with these claims.
    async fn denies(&self, claims: &AccessClaims) -> Result<bool, Error>;
}

/// The deny list the verifier reads: a copy of the [`RevocationLog`] that answers in one round trip.
/// A copy that may have lost entries does not answer (it is `Unavailable`) until it is rebuilt.
#[async_trait]
pub trait DenyList: Send + Sync {
    async fn add(&self, revocations: &[Revocation]) -> Result<(), Error>;
    async fn is_denied(&self, claims: &AccessClaims) -> Result<bool, Error>;
    /// A ticket to pass to [`DenyList::mark_copied`] after a rebuild that starts now.
    async fn begin_rebuild(&self) -> Result<u64, Error>;
    /// Whether the copy may lack entries (a failed write, a Redis that restarted empty).
    async fn incomplete(&self) -> Result<bool, Error>;
    /// Records that the copy holds the log up to `upto`, and, after a rebuild, that it is complete
    /// unless a write failed since the ticket `rebuilt` was taken.
    async fn mark_copied(&self, upto: i64, rebuilt: Option<u64>) -> Result<(), Error>;
    /// Resolves when a reader found the copy incomplete.
    async fn rebuild_wanted(&self);
}

/// An authorization code to store, bound to everything its redemption must match.
pub struct NewCode<'a> {
    pub hash: Vec<u8>,
    pub grant: &'a CodeGrant,
    pub expires_at: DateTime<Utc>,
}

/// What an authorization code stands for (RFC 6749 §4.1.2, RFC 7636 §4.4, OpenID Connect Core §3.1.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeGrant {
    pub client_id: String,
    pub user_id: Uuid,
    pub sign_in_session: Option<Uuid>,
    /// As the authorization request named it, if it did: then the token request must repeat it.
    pub redirect_uri: Option<String>,
    /// The S256 `code_challenge`.
    pub code_challenge: String,
    pub scope: Scope,
    pub nonce: Option<String>,
    pub auth_time: DateTime<Utc>,
}

/// What redeeming a code found.
pub enum Redeemed {
    /// Not used yet; with its user as they are now, `None` when they are gone.
    Fresh {
        grant: Box<CodeGrant>,
        user: Option<User>,
    },
    /// Used before: the session its first redemption started.
    Again { session: Option<Uuid> },
}

#[async_trait]
pub trait Codes: Send + Sync {
    /// Stores the code; `false`, storing nothing, when its client is gone (deleted since it was read).
    async fn create(&self, new: NewCode<'_>) -> Result<bool, Error>;
    /// What the code is at `now`, changing nothing; `None` when there is no such code or it has
    /// expired unused. [`Sessions::start_from_code`] claims it.
    async fn redeem(&self, hash: &[u8], now: DateTime<Utc>) -> Result<Option<Redeemed>, Error>;
}

/// A browser's sign-in session, behind the authorize endpoint's cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignInSession {
    pub id: Uuid,
    pub user: User,
    pub auth_time: DateTime<Utc>,
}

#[async_trait]
pub trait SignInSessions: Send + Sync {
    /// Stores a sign-in session by the hash of its cookie's value, for `user` as their row was read
    /// when they proved their password; `None`, storing nothing, when it is no longer so (a password
    /// change or a disable landed while the password was being checked).
    async fn create(
        &self,
        hash: Vec<u8>,
        user: &User,
        auth_time: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<Uuid>, Error>;
    /// The session whose cookie hashes to `hash`, if it is live at `now` and its user is active and
    /// has not changed their password since it began.
    async fn find(&self, hash: &[u8], now: DateTime<Utc>) -> Result<Option<SignInSession>, Error>;
}

/// What a mailed link's token is for; a token of one purpose is nothing to the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkPurpose {
    PasswordReset,
    EmailVerification,
}

impl LinkPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
        }
    }
}

/// A mailed link's token, by what storage knows of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkToken {
    pub user_id: Uuid,
    /// The address a verification link proves.
    pub email: Option<String>,
}

/// The single-use tokens of mailed links, stored by hash.
#[async_trait]
pub trait LinkTokens: Send + Sync {
    /// Stores a new token and voids the user's earlier unused ones of the same purpose.
    async fn issue(
        &self,
        hash: Vec<u8>,
        purpose: LinkPurpose,
        token: &LinkToken,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), Error>;
    /// The token, if it is unused and unexpired at `now`; nothing is changed.
    async fn find(
        &self,
        hash: &[u8],
        purpose: LinkPurpose,
        now: DateTime<Utc>,
    ) -> Result<Option<LinkToken>, Error>;
    /// Uses the token, once: of concurrent uses exactly one gets it.
    async fn spend(
        &self,
        hash: &[u8],
        purpose: LinkPurpose,
        now: DateTime<Utc>,
    ) -> Result<Option<LinkToken>, Error>;
    /// Voids every unused token of the user of that purpose.
    async fn void(
        &self,
        user_id: Uuid,
        purpose: LinkPurpose,
        now: DateTime<Utc>,
    ) -> Result<(), Error>;
    /// Counts one message about the user, unless `per_hour` were sent in the hour before `now`; whether
    /// it may be sent.
    async fn allow_message(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
        per_hour: u32,
    ) -> Result<bool, Error>;
}

/// A message to a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The address it goes to.
    pub to: String,
    pub username: String,
    pub kind: MessageKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// A link to choose a new password, working for `minutes`.
    PasswordReset { link: String, minutes: u64 },
    /// A link that proves the address, working for `minutes`.
    VerifyEmail { link: String, minutes: u64 },
    /// To the old address: the account's address is now `new_email`.
    EmailChanged { new_email: String },
}

/// Where messages go. Sending never waits for delivery: the message is queued, and delivered (with
/// retries) after the request that caused it has been answered.
pub trait Outbox: Send + Sync {
    fn send(&self, message: Message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_saturates_instead_of_overflowing() {
        let now = Utc::now();
        assert_eq!(
            later(now, Duration::from_secs(60)),
            now + chrono::Duration::seconds(60)
        );
        // Past chrono's range, and past what `TimeDelta` holds: the latest time, not a panic.
        assert_eq!(
            later(now, Duration::from_secs(100_000_000_000_000)),
            DateTime::<Utc>::MAX_UTC
        );
        assert_eq!(later(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
    }
}
