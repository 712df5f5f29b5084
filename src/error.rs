//! The one error type of the domain: every failure the server answers with is a variant here, named by
//! its RFC 6749 / RFC 6750 code where one applies. How each is answered over HTTP (status, headers,
//! body) is decided in one place at the edge, `http::error`.
//!
//! The public text is short and fixed; what a client must not learn (which check failed) is logged.

use std::borrow::Cow;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RFC 6749 `invalid_request`: a missing, repeated or malformed parameter.
    #[error("invalid_request: {0}")]
    InvalidRequest(Cow<'static, str>),
    /// RFC 6749 `invalid_client`; `basic` says whether the client tried HTTP Basic (then a challenge follows).
    #[error("invalid_client ({detail})")]
    InvalidClient { basic: bool, detail: &'static str },
    /// RFC 6749 `invalid_grant`. The detail is logged, never sent: the answer must not tell an unknown
    /// user from a wrong password.
    #[error("invalid_grant ({0})")]
    InvalidGrant(&'static str),
    #[error("unauthorized_client")]
    UnauthorizedClient,
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    #[error("invalid_scope")]
    InvalidScope,
    /// RFC 6750 `invalid_token`; the detail is logged only.
    #[error("invalid_token ({0})")]
    InvalidToken(&'static str),
    /// The token of a mailed link is unknown, expired, used or of the other purpose: `400 invalid_token`,
    /// with no challenge (it is not a Bearer token). The detail is logged only.
    #[error("invalid_token ({0})")]
    InvalidLinkToken(&'static str),
    /// The password was right, but `registration.require_verified_email` wants a verified address first.
    #[error("invalid_grant (email not verified)")]
    EmailNotVerified,
    /// RFC 6750 §3.1: a request with no credentials gets a bare challenge.
    #[error("missing bearer token")]
    MissingToken,
    #[error("insufficient_scope")]
    InsufficientScope,
    #[error("not_found")]
    NotFound,
    /// A unique value is taken (`username_taken`, `email_taken`).
    #[error("{0}")]
    Conflict(&'static str),
    /// A registration rule failed; the code names the rule.
    #[error("{code}: {description}")]
    Policy {
        code: &'static str,
        description: Cow<'static, str>,
    },
    /// The current password given to change it is wrong.
    #[error("invalid_current_password")]
    InvalidCurrentPassword,
    #[error("registration_disabled")]
    RegistrationDisabled,
    #[error("payload_too_large")]
    PayloadTooLarge,
    /// The body did not arrive within `server.read_timeout`; the connection is closed after the answer.
    #[error("request_timeout")]
    RequestTimeout,
    #[error("rate_limited (retry after {retry_after}s)")]
    RateLimited { retry_after: u64 },
    /// A dependency cannot answer now (a saturated hashing pool, Redis down).
    #[error("temporarily_unavailable: {what}")]
    Unavailable {
        what: &'static str,
        retry_after: u64,
    },
    #[error("server_error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::InvalidRequest(description.into())
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient { .. } => "invalid_client",
            Self::InvalidGrant(_) | Self::EmailNotVerified => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidToken(_) | Self::MissingToken | Self::InvalidLinkToken(_) => {
                "invalid_token"
            }
            Self::InsufficientScope => "insufficient_scope",
            Self::NotFound => "not_found",
            Self::Conflict(code) => code,
            Self::Policy { code, .. } => code,
            Self::InvalidCurrentPassword => "invalid_current_password",
            Self::RegistrationDisabled => "registration_disabled",
            Self::PayloadTooLarge | Self::RequestTimeout => "invalid_request",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable { .. } => "temporarily_unavailable",
            Self::Internal(_) => "server_error",
        }
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
