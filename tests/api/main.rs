//! Integration tests: the real server on an ephemeral port, on SQLite files and on PostgreSQL.

#[macro_use]
mod helpers;

mod authorization_code;
mod bad_input;
mod bearer;
mod browser;
mod browser_sign_in;
mod cli;
mod client_auth;
mod client_credentials;
mod discovery;
mod docs;
mod durable_revocation;
mod hostile_input;
mod housekeeping;
mod introspection;
mod jwks;
mod keys;
mod login_protection;
mod logout;
mod migrations;
mod openapi_conformance;
mod openid_connect;
mod operations;
mod recovery;
mod redis_failure;
mod refresh;
mod resource_server;
mod revocation_feed;
mod sessions;
mod slow_clients;
mod token_password;
mod users;
mod writes_in_flight;
