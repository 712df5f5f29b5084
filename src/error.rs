//! The one error type. Every failure the server answers with is a variant here, and this is the only
//! place that decides its status, its headers and its body: RFC 6749 §5.2 for the token endpoint,
//! RFC 6750 §3 for Bearer routes, and the same `{"error","error_description"}` envelope everywhere else.
//!
//! The public text is short and fixed; what a client must not learn (which check failed) is logged.

use std::{borrow::Cow, marker::PhantomData};

use poem::{
    Response,
    http::{HeaderValue, StatusCode, header},
};
use poem_openapi::{
    ApiResponse, Object,
    registry::{MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::Type,
};

/// The body of every error response.
#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// A machine-readable code: an RFC 6749/6750 code where one applies.
    pub error: String,
    /// A short human-readable explanation.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

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
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidToken(_) | Self::MissingToken => "invalid_token",
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

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidClient { .. } | Self::InvalidToken(_) | Self::MissingToken => {
                StatusCode::UNAUTHORIZED
            }
            Self::InsufficientScope | Self::RegistrationDisabled => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Policy { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The public description: fixed per kind, or built from values the client itself sent.
    fn description(&self) -> Option<Cow<'static, str>> {
        let fixed = |s: &'static str| Some(Cow::Borrowed(s));
        match self {
            Self::InvalidRequest(d) => Some(d.clone()),
            Self::InvalidClient { .. } => fixed("client authentication failed"),
            Self::InvalidGrant(_) => fixed("the provided authorization grant is invalid"),
            Self::UnauthorizedClient => fixed("this client may not use this grant type"),
            Self::UnsupportedGrantType => fixed("unsupported grant_type"),
            Self::InvalidScope => fixed("the requested scope is invalid or not allowed"),
            Self::InvalidToken(_) => fixed("the access token is invalid"),
            Self::MissingToken => fixed("a bearer access token is required"),
            Self::InsufficientScope => fixed("the access token lacks the scope this needs"),
            Self::NotFound => fixed("no such resource"),
            Self::Conflict(_) => fixed("that value is already taken"),
            Self::Policy { description, .. } => Some(description.clone()),
            Self::InvalidCurrentPassword => fixed("current_password is not the user's password"),
            Self::RegistrationDisabled => fixed("registration is switched off"),
            Self::PayloadTooLarge => fixed("the request body is larger than 64 KiB"),
            Self::RequestTimeout => fixed("the request body took too long to arrive"),
            Self::RateLimited { .. } => fixed("too many requests; retry later"),
            Self::Unavailable { what, .. } => Some(Cow::Owned(format!("{what} is unavailable"))),
            Self::Internal(_) => fixed("internal error"),
        }
    }

    fn challenge(&self) -> Option<&'static str> {
        match self {
            Self::InvalidClient { basic: true, .. } => Some(r#"Basic realm="portcullis""#),
            Self::InvalidToken(_) => Some(r#"Bearer error="invalid_token""#),
            Self::MissingToken => Some("Bearer"),
            Self::InsufficientScope => Some(r#"Bearer error="insufficient_scope""#),
            _ => None,
        }
    }
}

impl poem::error::ResponseError for Error {
    fn status(&self) -> StatusCode {
        Error::status(self)
    }

    fn as_response(&self) -> Response {
        match self {
            Self::Internal(e) => tracing::error!(error = format!("{e:#}"), "internal error"),
            other => tracing::debug!(error = %other, "request refused"),
        }
        let body = ErrorBody {
            error: self.code().to_owned(),
            error_description: self.description().map(Cow::into_owned),
        };
        let mut resp = Response::builder()
            .status(self.status())
            .content_type("application/json")
            .body(serde_json::to_vec(&body).expect("an error body serialises"));
        let headers = resp.headers_mut();
        if let Some(challenge) = self.challenge() {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Self::RateLimited { retry_after } | Self::Unavailable { retry_after, .. } = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        // RFC 9110 §15.5.9: the rest of the body may never come, so the connection cannot be reused.
        if let Self::RequestTimeout = self {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

impl From<sea_orm::DbErr> for Error {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Internal(e.into())
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error responses one group of operations can give, for the OpenAPI document.
pub trait ErrorSet: Send + Sync + 'static {
    const RESPONSES: &'static [(u16, &'static str)];
}

macro_rules! error_sets {
    ($($(#[$doc:meta])* $name:ident { $($status:literal => $what:literal),+ $(,)? })+) => {$(
        $(#[$doc])*
        pub enum $name {}
        impl ErrorSet for $name {
            const RESPONSES: &'static [(u16, &'static str)] = &[$(($status, $what)),+];
        }
    )+};
}

error_sets! {
    /// `/oauth/token`.
    TokenErrors {
        400 => "RFC 6749 §5.2: invalid_request, invalid_grant, unauthorized_client, unsupported_grant_type, invalid_scope",
        401 => "invalid_client, with `WWW-Authenticate: Basic` when HTTP Basic was used",
        408 => "the body did not arrive within `server.read_timeout`; the connection is closed",
        413 => "the body is larger than 64 KiB",
        429 => "rate_limited, with `Retry-After` in seconds",
        503 => "temporarily_unavailable (the password-hashing pool is saturated), with `Retry-After`",
    }
    /// Routes that take a Bearer access token.
    BearerErrors {
        401 => "RFC 6750 invalid_token, with `WWW-Authenticate: Bearer`",
        403 => "RFC 6750 insufficient_scope",
        503 => "the deny list cannot be read, so the token cannot be checked",
    }
    /// Bearer routes with query parameters.
    BearerQueryErrors {
        400 => "invalid_request: a malformed parameter",
        401 => "RFC 6750 invalid_token, with `WWW-Authenticate: Bearer`",
        403 => "RFC 6750 insufficient_scope",
        503 => "the deny list cannot be read, so the token cannot be checked",
    }
    /// `POST /oauth/revoke` and `POST /oauth/introspect`.
    ClientEndpointErrors {
        400 => "invalid_request: a missing, repeated or malformed parameter",
        401 => "invalid_client (introspection also refuses public clients), with `WWW-Authenticate: Basic` when HTTP Basic was used",
        408 => "the body did not arrive within `server.read_timeout`; the connection is closed",
        413 => "the body is larger than 64 KiB",
        503 => "the deny list (Redis) cannot be read or written now",
    }
    /// `GET /oauth/revocations`.
    FeedErrors {
        401 => "invalid_client: HTTP Basic authentication of a confidential client is required",
    }
    /// Bearer routes that name one resource.
    BearerItemErrors {
        400 => "invalid_request: the id is not a UUID",
        401 => "RFC 6750 invalid_token, with `WWW-Authenticate: Bearer`",
        403 => "RFC 6750 insufficient_scope",
        404 => "no such resource (or not yours)",
        503 => "the deny list cannot be read, so the token cannot be checked",
    }
    /// `POST /users/me/password`.
    PasswordChangeErrors {
        400 => "invalid_request (a malformed body) or invalid_current_password",
        401 => "RFC 6750 invalid_token, with `WWW-Authenticate: Bearer`",
        403 => "RFC 6750 insufficient_scope",
        408 => "the body did not arrive within `server.read_timeout`; the connection is closed",
        413 => "the body is larger than 64 KiB",
        422 => "the new password breaks a rule; `error` names it",
        429 => "rate_limited: too many password attempts; `Retry-After` says when to try again",
        503 => "the deny list or the hashing pool is unavailable",
    }
    /// `POST /users`.
    RegisterErrors {
        400 => "invalid_request: a malformed body",
        403 => "registration_disabled",
        409 => "username_taken or email_taken",
        408 => "the body did not arrive within `server.read_timeout`; the connection is closed",
        413 => "the body is larger than 64 KiB",
        422 => "a username or password rule failed; `error` names the rule",
        429 => "rate_limited, with `Retry-After` in seconds",
        503 => "temporarily_unavailable (the password-hashing pool is saturated), with `Retry-After`",
    }
}

/// An [`Error`] as the response of an operation whose possible failures are the set `S`.
pub struct Failure<S>(pub Error, PhantomData<S>);

impl<S> From<Error> for Failure<S> {
    fn from(e: Error) -> Self {
        Self(e, PhantomData)
    }
}

impl<S> From<sea_orm::DbErr> for Failure<S> {
    fn from(e: sea_orm::DbErr) -> Self {
        Error::from(e).into()
    }
}

impl<S> From<Failure<S>> for poem::Error {
    fn from(f: Failure<S>) -> Self {
        poem::Error::from(f.0)
    }
}

impl<S> poem::IntoResponse for Failure<S>
where
    S: Send,
{
    fn into_response(self) -> Response {
        poem::error::ResponseError::as_response(&self.0)
    }
}

impl<S: ErrorSet + Send> ApiResponse for Failure<S> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: S::RESPONSES
                .iter()
                .map(|&(status, description)| MetaResponse {
                    description,
                    status: Some(status),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: "application/json",
                        schema: ErrorBody::schema_ref(),
                    }],
                    headers: vec![],
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        ErrorBody::register(registry);
    }
}
