//! sea-orm entities, one module per table. Only `store` uses them.

pub mod account_mail;
pub mod account_token;
pub mod authorization_code;
pub mod client;
pub mod refresh_token;
pub mod revocation;
pub mod server_secret;
pub mod session;
pub mod sign_in_session;
pub mod user;
