//! A third-party relying party, the `openidconnect` crate, signs a user in against the running server:
//! its discovery, its authorize URL (PKCE S256 and a nonce), its code exchange and its ID token checks.

use openidconnect::{
    AccessTokenHash, AuthenticationFlow, AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
    core::{CoreClient, CoreProviderMetadata, CoreResponseType},
};
use reqwest::StatusCode;

use crate::helpers::{Browser, claims_of, listen_at_issuer, spawn_app_with};

on_both_databases! {
    async fn the_openidconnect_crate_discovers_signs_in_and_verifies_the_id_token(backend: Backend) {
        // Arrange
        let app = spawn_app_with(backend, listen_at_issuer).await;
        let client_id = app.seed_code_client("native", "openid profile", &["http://127.0.0.1/callback"]).await;
        let user = app.seed_user().await;
        let http = openidconnect::reqwest::Client::builder()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .build()
            .unwrap();

        // Act: discovery, the authorize URL, the sign-in form, the code exchange.
        let issuer = IssuerUrl::new(app.settings.issuer()).unwrap();
        let metadata = CoreProviderMetadata::discover_async(issuer, &http).await.expect("discovery");
        let client = CoreClient::from_provider_metadata(metadata, ClientId::new(client_id.clone()), None)
            .set_redirect_uri(RedirectUrl::new("http://127.0.0.1:49152/callback".into()).unwrap());
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(AuthenticationFlow::<CoreResponseType>::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        assert_eq!(url.as_str().split('?').next(), Some(app.url("/oauth/authorize").as_str()));
        let params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let answer = Browser::new(&app).sign_in(&params, &user, &user.password).await;
        assert_eq!(answer.status(), StatusCode::SEE_OTHER);
        let location = url::Url::parse(answer.headers()["location"].to_str().unwrap()).unwrap();
        assert!(location.as_str().starts_with("http://127.0.0.1:49152/callback?"), "{location}");
        let query = |name: &str| location.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        assert_eq!(query("state").as_deref(), Some(state.secret().as_str()));
        let code = AuthorizationCode::new(query("code").expect("a code"));
        let tokens = client
            .exchange_code(code)
            .unwrap()
            .set_pkce_verifier(verifier)
            .request_async(&http)
            .await
            .expect("code exchange");

        // Assert: the ID token passes the crate's checks (signature by the JWKS, issuer, audience,
        // expiry, nonce, at_hash) and names the user who signed in.
        let id_token = tokens.id_token().expect("an ID token");
        let verifier = client.id_token_verifier();
        let claims = id_token.claims(&verifier, &nonce).expect("a valid ID token");
        let at_hash = AccessTokenHash::from_token(
            tokens.access_token(),
            id_token.signing_alg().unwrap(),
            id_token.signing_key(&verifier).unwrap(),
        )
        .unwrap();
        assert_eq!(claims.access_token_hash(), Some(&at_hash));
        assert_eq!(claims.preferred_username().map(|u| u.as_str()), Some(user.username.as_str()));
        let access = claims_of(tokens.access_token().secret());
        assert_eq!(claims.subject().as_str(), access["sub"]);
        assert!(claims.auth_time().is_some());
        assert!(
            id_token.claims(&verifier, &Nonce::new("another request's nonce".into())).is_err(),
            "the nonce is checked"
        );

        // Userinfo, found by discovery, says who the ID token says.
        let info: openidconnect::core::CoreUserInfoClaims = client
            .user_info(tokens.access_token().clone(), Some(claims.subject().clone()))
            .expect("a userinfo endpoint")
            .request_async(&http)
            .await
            .expect("userinfo");
        assert_eq!(info.preferred_username().map(|u| u.as_str()), Some(user.username.as_str()));
    }
}
