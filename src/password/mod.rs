//! Passwords: the policy a new password must meet (`policy`) and argon2id hashing on a bounded pool of
//! idle-priority threads (`hashing`).

mod hashing;
mod policy;

pub use hashing::{Hasher, Verified};
pub use policy::{MAX_LENGTH, check_policy};
