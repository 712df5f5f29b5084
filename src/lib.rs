//! Portcullis, an OAuth 2.0 authorization server.
//!
//! Requests flow one way, edge → domain → ports ← storage, and back as values:
//!
//! - [`http`]: the edge, and the only module that knows poem and poem-openapi. It parses forms,
//!   headers and bodies into domain values, calls the domain, and renders results and errors
//!   ([`http::error`]: RFC 6749 / RFC 6750 answers).
//! - The domain: [`oauth`] (client authentication, one module per grant, the access-token format,
//!   revocation, login protection), [`accounts`] (registration, password change, disable and
//!   enable, clients), shared by the API and the command line, and [`recovery`] (password reset and
//!   verified addresses by mailed links). It returns [`error::Error`], reads the
//!   time from a [`ports::Clock`], and reaches storage only through the traits of [`ports`], which it
//!   owns; it never sees HTTP, sea-orm, the configuration or [`state::AppState`].
//! - [`value`]: leaf value types (scopes, usernames, grant types, claims, the user, session and client
//!   records, revocations) that every layer uses, so that none imports another for a value.
//! - [`store`]: the ports' implementations, sea-orm and Redis inside ([`entity`] holds the tables;
//!   `migration/` their history), domain values out.
//! - [`state`]: the wiring, the only place that plugs stores into ports; [`startup`] runs the server,
//!   [`cli`] the commands.
//! - [`keys`]: the signing keys in `keys.dir`, each kept parsed for aws-lc-rs, and their JWKS.
//!   [`password`]: the password policy and argon2id on a bounded pool. [`throttle`], [`ratelimit`]:
//!   login protection's counters and the per-address limits. [`mail`]: the outbox, over SMTP or into a
//!   folder. [`config`], [`metrics`], [`telemetry`]: settings, Prometheus metrics, logs.

pub mod accounts;
pub mod cli;
pub mod config;
pub mod entity;
pub mod error;
pub mod http;
pub mod keys;
pub mod mail;
pub mod metrics;
pub mod oauth;
pub mod password;
pub mod ports;
pub mod ratelimit;
pub mod recovery;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod value;

/// The layers hold: the domain's imports name no web framework, no ORM, no configuration and no
/// wiring, and storage imports nothing from the domain but its ports and errors.
#[cfg(test)]
mod layers {
    use std::path::Path;

    /// The files of a module: `src/NAME.rs`, or every file under `src/NAME/`.
    fn sources(module: &str) -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![root.join(module), root.join(format!("{module}.rs"))];
        let mut files = Vec::new();
        while let Some(p) = stack.pop() {
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            } else if p.extension().is_some_and(|e| e == "rs") && p.is_file() {
                let text = std::fs::read_to_string(&p).unwrap();
                files.push((p.display().to_string(), text));
            }
        }
        assert!(!files.is_empty(), "no module {module}");
        files
    }

    fn assert_no_use_of(dir: &str, forbidden: &[&str]) {
        for (file, text) in sources(dir) {
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for f in forbidden {
                    assert!(
                        !code.contains(f),
                        "{file}:{}: the {dir} layer must not use {f}: {line}",
                        n + 1
                    );
                }
            }
        }
    }

    const WEB_AND_WIRING: [&str; 5] = ["poem", "sea_orm", "crate::state", "AppState", "Settings"];

    #[test]
    fn the_domain_knows_no_web_no_orm_no_wiring_and_no_storage() {
        for domain in ["oauth", "accounts", "recovery", "ports", "value", "error"] {
            assert_no_use_of(domain, &WEB_AND_WIRING);
            assert_no_use_of(
                domain,
                &["crate::store", "store::", "crate::entity", "crate::http"],
            );
        }
    }

    #[test]
    fn storage_knows_no_web_and_no_domain_service() {
        assert_no_use_of(
            "store",
            &["poem", "crate::http", "crate::oauth", "crate::accounts"],
        );
    }
}
