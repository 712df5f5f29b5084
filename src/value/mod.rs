//! Leaf value types shared by the domain, storage and the edge, so that none of them imports another for
//! a value: scopes, usernames, grant types, the claims of an access token, and the ETag of a prepared
//! document. They depend on nothing else in the crate.

pub mod account;
pub mod claims;
pub mod etag;
pub mod grant_type;
pub mod redirect_uri;
pub mod revocation;
pub mod scope;
pub mod username;
