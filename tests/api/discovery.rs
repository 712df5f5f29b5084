//! Discovery (RFC 8414): the authorization-server metadata and its OpenID Connect alias, every URL in
//! them derived from the issuer and answering.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, listen_at_issuer, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_has_the_rfc_8414_fields_and_every_url_resolves() {
    let app = spawn_app_with(Backend::Sqlite, listen_at_issuer).await;
    let issuer = app.settings.issuer();

    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(
            resp.headers()["cache-control"]
                .to_str()
                .unwrap()
                .starts_with("public")
        );
        let meta: Value = resp.json().await.unwrap();
        assert_eq!(meta["issuer"], issuer.as_str());
        let strings = |field: &str| -> Vec<String> {
            meta[field]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            strings("grant_types_supported"),
            [
                "authorization_code",
                "password",
                "refresh_token",
                "client_credentials",
            ]
        );
        // Browser sign-in (RFC 6749 §4.1, RFC 7636, RFC 9207) and OpenID Connect discovery.
        assert_eq!(strings("response_types_supported"), ["code"]);
        assert_eq!(strings("response_modes_supported"), ["query"]);
        assert_eq!(strings("code_challenge_methods_supported"), ["S256"]);
        assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
        for scope in ["openid", "profile", "email"] {
            assert!(
                strings("scopes_supported").contains(&scope.to_owned()),
                "{scope}"
            );
        }
        for claim in [
            "sub",
            "auth_time",
            "nonce",
            "sid",
            "at_hash",
            "preferred_username",
            "email",
        ] {
            assert!(
                strings("claims_supported").contains(&claim.to_owned()),
                "{claim}"
            );
        }
        for field in [
            "token_endpoint_auth_methods_supported",
            "revocation_endpoint_auth_methods_supported",
        ] {
            assert_eq!(
                strings(field),
                ["client_secret_basic", "client_secret_post", "none"],
                "{field}"
            );
        }
        assert_eq!(
            strings("introspection_endpoint_auth_methods_supported"),
            ["client_secret_basic", "client_secret_post"]
        );
        assert_eq!(strings("subject_types_supported"), ["public"]);
        assert_eq!(strings("id_token_signing_alg_values_supported"), ["RS256"]);
        // Every URL is derived from the issuer and answers here (no 404).
        for (field, method) in [
            ("authorization_endpoint", "GET"),
            ("token_endpoint", "POST"),
            ("jwks_uri", "GET"),
            ("revocation_endpoint", "POST"),
            ("introspection_endpoint", "POST"),
            ("service_documentation", "GET"),
            ("userinfo_endpoint", "GET"),
            ("end_session_endpoint", "GET"),
            ("revocation_feed_endpoint", "GET"),
        ] {
            let url = meta[field].as_str().unwrap();
            assert!(url.starts_with(&issuer), "{field}: {url}");
            let resp = app
                .http
                .request(method.parse().unwrap(), url)
                .send()
                .await
                .unwrap();
            assert_ne!(resp.status(), StatusCode::NOT_FOUND, "{field}");
            assert!(resp.status().as_u16() < 500, "{field}");
        }
    }
}
