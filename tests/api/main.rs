//! Integration tests: the real server on an ephemeral port, on SQLite files and on PostgreSQL.

#[macro_use]
mod helpers;

mod bad_input;
mod bearer;
mod cli;
mod discovery;
mod docs;
mod hostile_input;
mod introspection;
mod jwks;
mod login_protection;
mod migrations;
mod openapi_conformance;
mod operations;
mod redis_failure;
mod refresh;
mod resource_server;
mod sessions;
mod token_password;
mod users;
