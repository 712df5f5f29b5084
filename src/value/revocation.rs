//! Revocations as the domain records them: what a revocation denies and until when it matters. The
//! revocation log stores them, the deny list copies them, the feed publishes them.

use chrono::{DateTime, Utc};

/// What a revocation denies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Entry {
    /// One access token.
    Jti(String),
    /// Every access token of a session.
    Session(String),
    /// Every token of a subject issued before `not_before` (seconds since the epoch).
    SubjectBefore { sub: String, not_before: i64 },
}

impl Entry {
    /// The feed's `kind`, its `value` and its `not_before`.
    pub fn parts(&self) -> (&'static str, &str, Option<i64>) {
        match self {
            Self::Jti(jti) => ("jti", jti, None),
            Self::Session(sid) => ("sid", sid, None),
            Self::SubjectBefore { sub, not_before } => ("sub", sub, Some(*not_before)),
        }
    }

    /// The inverse of [`Entry::parts`]; `None` for a kind this version does not know.
    pub fn from_parts(kind: &str, value: String, not_before: Option<i64>) -> Option<Self> {
        match (kind, not_before) {
            ("jti", _) => Some(Self::Jti(value)),
            ("sid", _) => Some(Self::Session(value)),
            ("sub", Some(not_before)) => Some(Self::SubjectBefore {
                sub: value,
                not_before,
            }),
            _ => None,
        }
    }
}

/// One recorded revocation: what it denies, and until when it matters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub entry: Entry,
    /// When every token it concerns has expired; it may be forgotten then.
    pub expires_at: DateTime<Utc>,
}

impl Revocation {
    /// Every token of `sub` issued before `not_before` (seconds since the epoch), and every token of these
    /// sessions, each listed until `until`.
    pub fn subject_and_sessions(
        sub: String,
        not_before: i64,
        sessions: Vec<uuid::Uuid>,
        until: DateTime<Utc>,
    ) -> Vec<Self> {
        let subject = Self {
            entry: Entry::SubjectBefore { sub, not_before },
            expires_at: until,
        };
        std::iter::once(subject)
            .chain(Self::sessions(sessions, until))
            .collect()
    }

    /// Every token of these sessions, each listed until `until`.
    pub fn sessions(sessions: Vec<uuid::Uuid>, until: DateTime<Utc>) -> Vec<Self> {
        sessions
            .iter()
            .map(|id| Self {
                entry: Entry::Session(id.to_string()),
                expires_at: until,
            })
            .collect()
    }
}
