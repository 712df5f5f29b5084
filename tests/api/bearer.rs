//! Bearer verification at `/users/me`: RS256 pinned, `kid`, signature, `typ`, and every claim checked;
//! each failure is `401` with the RFC 6750 challenge.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use rsa::{
    RsaPrivateKey,
    pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding},
};
use serde_json::Value;

use crate::helpers::{assert_error, spawn_app, test_signing_pem};

fn parts(token: &str) -> (Value, Value, String) {
    let mut it = token.split('.');
    let header =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap();
    let claims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap();
    (header, claims, it.next().unwrap().to_owned())
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// Signs `claims` with the server's real key under a header we choose.
fn sign(claims: &Value, kid: &str, typ: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    header.typ = Some(typ.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(&test_signing_pem()).unwrap(),
    )
    .unwrap()
}

on_both_databases! {
    async fn tokens_that_are_not_exactly_right_are_refused_with_invalid_token(backend: Backend) {
        // Arrange
        let app = spawn_app(backend).await;
        let user = app.seed_user().await;
        let token = app.login(&user).await.access_token;
        let (header, claims, signature) = parts(&token);
        let kid = header["kid"].as_str().unwrap().to_owned();
        let now = chrono::Utc::now().timestamp();
        let with = |key: &str, value: Value| {
            let mut c = claims.clone();
            c[key] = value;
            c
        };
        // The control: a token forged here with the real key and the real claims is accepted, so each
        // refusal below is for the one thing changed.
        let control = sign(&claims, &kid, "at+jwt");
        assert_eq!(app.me(&control).await.status(), StatusCode::OK);

        let public_pem = RsaPrivateKey::from_pkcs8_pem(std::str::from_utf8(&test_signing_pem()).unwrap())
            .unwrap().to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
        let mut hs_header = Header::new(Algorithm::HS256);
        hs_header.kid = Some(kid.clone());
        hs_header.typ = Some("at+jwt".into());
        let mut tampered_signature = signature.clone().into_bytes();
        tampered_signature[10] = if tampered_signature[10] == b'A' { b'B' } else { b'A' };

        let cases: Vec<(&str, String)> = vec![
            ("a tampered payload", format!("{}.{}.{signature}", b64(&header), b64(&with("scope", "admin profile".into())))),
            ("a tampered signature", format!("{}.{}.{}", b64(&header), b64(&claims), String::from_utf8(tampered_signature).unwrap())),
            ("alg none", format!("{}.{}.", b64(&serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": kid})), b64(&claims))),
            ("HS256 signed with the public key", jsonwebtoken::encode(&hs_header, &claims, &EncodingKey::from_secret(public_pem.as_bytes())).unwrap()),
            ("an unknown kid", sign(&claims, "not-a-kid-we-know", "at+jwt")),
            ("typ JWT instead of at+jwt", sign(&claims, &kid, "JWT")),
            ("expired", sign(&with("exp", (now - 5).into()), &kid, "at+jwt")),
            ("not yet valid", sign(&with("nbf", (now + 60).into()), &kid, "at+jwt")),
            ("a wrong aud", sign(&with("aud", "someone-else".into()), &kid, "at+jwt")),
            ("a wrong iss", sign(&with("iss", "https://evil.example".into()), &kid, "at+jwt")),
            ("no exp", sign(&{ let mut c = claims.clone(); c.as_object_mut().unwrap().remove("exp"); c }, &kid, "at+jwt")),
            ("a string nbf", sign(&with("nbf", "0".into()), &kid, "at+jwt")),
            ("garbage", "not.a.jwt".into()),
            ("a 20,000-character token", "x".repeat(20_000)),
        ];

        for (case, forged) in cases {
            // Act
            let resp = app.me(&forged).await;
            // Assert
            let challenge = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
            assert_error(resp, 401, "invalid_token").await;
            assert_eq!(challenge.as_deref(), Some(r#"Bearer error="invalid_token""#), "{case}");
        }
    }

    async fn a_request_without_a_token_gets_a_bare_bearer_challenge(backend: Backend) {
        let app = spawn_app(backend).await;
        for auth in [None, Some("Basic dXNlcjpwYXNz")] {
            let mut request = app.http.get(app.url("/users/me"));
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let resp = request.send().await.unwrap();
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            assert_error(resp, 401, "invalid_token").await;
        }
    }

    async fn a_disabled_users_token_stops_working_at_users_me(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.seed_user().await;
        let token = app.login(&user).await.access_token;
        assert_eq!(app.me(&token).await.status(), StatusCode::OK);

        app.disable_in_database(&user).await;

        assert_error(app.me(&token).await, 401, "invalid_token").await;
    }
}
