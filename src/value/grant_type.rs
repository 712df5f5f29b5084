//! The grant types of RFC 6749 this server knows, as clients are allowed them and requests name them.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantType {
    Password,
    RefreshToken,
    ClientCredentials,
    AuthorizationCode,
}

impl GrantType {
    pub const ALL: [GrantType; 4] = [
        Self::Password,
        Self::RefreshToken,
        Self::ClientCredentials,
        Self::AuthorizationCode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
            Self::AuthorizationCode => "authorization_code",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == s)
    }
}
