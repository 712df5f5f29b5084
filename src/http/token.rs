//! `POST /oauth/token` (RFC 6749 §3.2, §5).

use std::sync::Arc;

use poem::{Request, web::Data};
use poem_openapi::{Object, OpenApi, payload::Json};
use serde::Deserialize;

use super::{Tag, client_auth, client_ip::client_ip, form::StrictForm};
use crate::{
    error::Error,
    http::error::{Failure, TokenErrors},
    metrics::Metrics,
    oauth::{
        client,
        grant::{GrantRequest, Issued, authorization_code::CodeRedemption},
        refresh,
    },
    password,
    state::AppState,
    value::{scope::Scope, username},
};

/// A token request. Which parameters apply depends on `grant_type`.
#[derive(Object, Deserialize)]
pub struct TokenForm {
    /// Required: `password`, `refresh_token`, `client_credentials` or `authorization_code`.
    grant_type: Option<String>,
    /// For `password`.
    username: Option<String>,
    /// For `password`.
    #[oai(write_only)]
    password: Option<String>,
    /// For `refresh_token`.
    #[oai(write_only)]
    refresh_token: Option<String>,
    /// For `authorization_code`: the code the authorization endpoint issued.
    #[oai(write_only)]
    code: Option<String>,
    /// For `authorization_code`: required when the authorization request carried one, and then equal
    /// to it.
    redirect_uri: Option<String>,
    /// For `authorization_code`: the PKCE verifier (RFC 7636) of the request's `code_challenge`.
    #[oai(write_only)]
    code_verifier: Option<String>,
    /// Space-separated scopes; without it, every scope the client may be granted.
    scope: Option<String>,
    /// A public client's id, or a confidential client's with `client_secret` (`client_secret_post`).
    client_id: Option<String>,
    #[oai(write_only)]
    client_secret: Option<String>,
}

/// RFC 6749 §5.1.
#[derive(Object)]
pub struct TokenResponse {
    /// An RFC 9068 JWT, signed RS256.
    access_token: String,
    /// Always `Bearer`.
    token_type: String,
    /// Seconds until the access token expires.
    expires_in: u64,
    #[oai(skip_serializing_if_is_none)]
    refresh_token: Option<String>,
    /// An OpenID Connect ID token, when the authorization code grant's scope holds `openid`.
    #[oai(skip_serializing_if_is_none)]
    id_token: Option<String>,
    scope: String,
}

#[derive(Default)]
pub struct TokenApi;

#[OpenApi]
impl TokenApi {
    /// Issue tokens
    ///
    /// Client authentication: HTTP Basic (`client_secret_basic`), `client_id` and `client_secret` in
    /// the body (`client_secret_post`), or a public client's `client_id` alone. A request with no
    /// client at all is taken as the default public client. Every response carries
    /// `Cache-Control: no-store`.
    #[oai(path = "/oauth/token", method = "post", tag = "Tag::OAuth")]
    async fn token(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        form: StrictForm<TokenForm>,
    ) -> Result<Json<TokenResponse>, Failure<TokenErrors>> {
        let mut form = form.0;
        let presented =
            client_auth::presented(req, form.client_id.take(), form.client_secret.take())?;
        let request = grant_request(form)?;
        let ip = client_ip(req, &state.settings.server.trusted_proxies);
        if let GrantRequest::Password { username, .. } = &request {
            state.limits.login(ip, username)?;
        }
        // The password grant writes a session naming the client, so it needs the client's row as it
        // is now. A code's redemption claims its code and a refresh spends its token, each of which
        // dies with its client (the foreign keys cascade), and client_credentials writes nothing: a
        // row read a second ago serves them.
        let lookup = match request {
            GrantRequest::Password { .. } => client::Lookup::Fresh,
            GrantRequest::AuthorizationCode(_)
            | GrantRequest::RefreshToken { .. }
            | GrantRequest::ClientCredentials { .. } => client::Lookup::Recent,
        };
        let client = client_auth::authenticate(&state, presented, lookup).await?;
        let grant_type = request.grant_type();
        let Issued {
            access,
            refresh_token,
            id_token,
            scope,
        } = state.grants.handle(&client, request, ip).await?;
        Metrics::count(&state.metrics.tokens_issued, grant_type.as_str());
        let span = tracing::Span::current();
        span.record("jti", access.claims.jti.as_str());
        if let Some(sid) = &access.claims.sid {
            span.record("sid", sid.as_str());
        }
        Ok(Json(TokenResponse {
            access_token: access.token,
            token_type: "Bearer".into(),
            expires_in: access.expires_in,
            refresh_token,
            id_token,
            scope: scope.to_string(),
        }))
    }
}

fn grant_request(form: TokenForm) -> Result<GrantRequest, Error> {
    let grant_type = need(form.grant_type, "grant_type")?;
    let scope = form.scope.as_deref().map(Scope::parse).transpose()?;
    match grant_type.as_str() {
        "password" => {
            let username = need(form.username, "username")?;
            let password = need(form.password, "password")?;
            // Nothing longer can exist, so refusing it early reveals nothing and spares argon2.
            if username.len() > username::MAX_LENGTH {
                return Err(Error::invalid_request("username is too long"));
            }
            if password.chars().count() > password::MAX_LENGTH {
                return Err(Error::invalid_request("password is too long"));
            }
            Ok(GrantRequest::Password {
                username,
                password,
                scope,
            })
        }
        "refresh_token" => {
            let token = need(form.refresh_token, "refresh_token")?;
            // No refresh token is that long: it is simply not one of ours.
            if token.len() > refresh::MAX_LENGTH {
                return Err(Error::InvalidGrant("refresh token too long"));
            }
            Ok(GrantRequest::RefreshToken { token, scope })
        }
        "client_credentials" => Ok(GrantRequest::ClientCredentials { scope }),
        "authorization_code" => {
            let code = need(form.code, "code")?;
            let code_verifier = need(form.code_verifier, "code_verifier")?;
            // Codes are 43 characters and verifiers at most 128: anything much longer is neither.
            if code.len() > 256 || code_verifier.len() > 256 {
                return Err(Error::InvalidGrant("code or code_verifier too long"));
            }
            Ok(GrantRequest::AuthorizationCode(CodeRedemption {
                code,
                redirect_uri: form.redirect_uri,
                code_verifier,
            }))
        }
        _ => Err(Error::UnsupportedGrantType),
    }
}

fn need(value: Option<String>, name: &str) -> Result<String, Error> {
    value.ok_or_else(|| Error::invalid_request(format!("missing parameter: {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::grant_type::GrantType;

    /// A form with exactly these parameters; deserialised, so that a field added to the form needs no
    /// change here.
    fn form(params: &[(&str, &str)]) -> TokenForm {
        let object: serde_json::Map<String, serde_json::Value> = params
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).into()))
            .collect();
        serde_json::from_value(object.into()).expect("a token form")
    }

    fn parsed(params: &[(&str, &str)]) -> GrantRequest {
        grant_request(form(params)).unwrap_or_else(|e| panic!("{params:?} refused: {e}"))
    }

    fn refused(params: &[(&str, &str)]) -> Error {
        match grant_request(form(params)) {
            Ok(request) => panic!("{params:?} parsed as {:?}", request.grant_type()),
            Err(e) => e,
        }
    }

    /// The description of an `invalid_request` refusal.
    fn invalid_request(params: &[(&str, &str)]) -> String {
        match refused(params) {
            Error::InvalidRequest(description) => description.into_owned(),
            other => panic!("{params:?}: {} instead of invalid_request", other.code()),
        }
    }

    fn scope(raw: &str) -> Option<Scope> {
        Some(Scope::parse(raw).unwrap())
    }

    #[test]
    fn each_grant_type_is_parsed_into_its_variant_with_its_fields() {
        let GrantRequest::Password {
            username,
            password,
            scope: asked,
        } = parsed(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "correct horse"),
            ("scope", "profile email"),
        ])
        else {
            panic!("not the password grant");
        };
        assert_eq!(
            (username.as_str(), password.as_str()),
            ("alice", "correct horse")
        );
        assert_eq!(asked, scope("email profile"));

        let GrantRequest::RefreshToken {
            token,
            scope: asked,
        } = parsed(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "abc"),
            ("scope", "profile"),
        ])
        else {
            panic!("not the refresh grant");
        };
        assert_eq!(token, "abc");
        assert_eq!(asked, scope("profile"));

        let GrantRequest::ClientCredentials { scope: asked } = parsed(&[
            ("grant_type", "client_credentials"),
            ("scope", "orders.read"),
        ]) else {
            panic!("not the client_credentials grant");
        };
        assert_eq!(asked, scope("orders.read"));
    }

    #[test]
    fn without_a_scope_parameter_the_request_names_none() {
        for params in [
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "x"),
            ][..],
            &[("grant_type", "refresh_token"), ("refresh_token", "abc")],
            &[("grant_type", "client_credentials")],
        ] {
            let asked = match parsed(params) {
                GrantRequest::Password { scope, .. }
                | GrantRequest::RefreshToken { scope, .. }
                | GrantRequest::ClientCredentials { scope } => scope,
                GrantRequest::AuthorizationCode(_) => unreachable!("not among the forms above"),
            };
            assert_eq!(asked, None, "{params:?}");
        }
    }

    #[test]
    fn a_missing_required_parameter_is_invalid_request_naming_it() {
        for (params, missing) in [
            (
                &[("username", "alice"), ("password", "x")][..],
                "grant_type",
            ),
            (&[("grant_type", "password"), ("password", "x")], "username"),
            (
                &[("grant_type", "password"), ("username", "alice")],
                "password",
            ),
            // Both missing: the first is named.
            (&[("grant_type", "password")], "username"),
            (&[("grant_type", "refresh_token")], "refresh_token"),
        ] {
            assert_eq!(
                invalid_request(params),
                format!("missing parameter: {missing}"),
                "{params:?}"
            );
        }
    }

    #[test]
    fn an_unknown_grant_type_is_unsupported_grant_type() {
        for grant_type in ["Password", "password ", "implicit", "authorization_code "] {
            let error = refused(&[
                ("grant_type", grant_type),
                ("username", "alice"),
                ("password", "x"),
            ]);
            assert!(
                matches!(error, Error::UnsupportedGrantType),
                "{grant_type:?}: {}",
                error.code()
            );
        }
    }

    #[test]
    fn a_malformed_scope_is_invalid_scope_and_an_overlong_one_invalid_request() {
        let complete: [&[(&str, &str)]; 3] = [
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "x"),
            ],
            &[("grant_type", "refresh_token"), ("refresh_token", "abc")],
            &[("grant_type", "client_credentials")],
        ];
        let overlong = "a".repeat(crate::value::scope::MAX_LENGTH + 1);
        for params in complete {
            let with_scope = |scope: &str| {
                let mut all = params.to_vec();
                all.push(("scope", scope));
                refused(&all)
            };
            for bad in ["a\"b", "a\\b", "caf\u{e9}"] {
                let error = with_scope(bad);
                assert!(
                    matches!(error, Error::InvalidScope),
                    "{params:?} scope {bad:?}: {}",
                    error.code()
                );
            }
            let Error::InvalidRequest(description) = with_scope(&overlong) else {
                panic!("{params:?}: an overlong scope is not invalid_request");
            };
            assert_eq!(description, "scope is too long");
        }
    }

    #[test]
    fn the_scope_is_checked_after_grant_type_is_present_and_before_the_grant_is_known() {
        // A missing grant_type is named before a bad scope.
        assert_eq!(
            invalid_request(&[("scope", "a\"b")]),
            "missing parameter: grant_type"
        );
        // A bad scope is refused before the grant type is looked at, or its parameters.
        for params in [
            &[("grant_type", "magic"), ("scope", "a\"b")][..],
            &[("grant_type", "password"), ("scope", "a\"b")],
            &[("grant_type", "refresh_token"), ("scope", "a\"b")],
        ] {
            let error = refused(params);
            assert!(
                matches!(error, Error::InvalidScope),
                "{params:?}: {}",
                error.code()
            );
        }
    }

    #[test]
    fn values_longer_than_any_that_can_exist_are_refused_before_any_lookup() {
        let at_most = |username: &str, password: &str| {
            grant_request(form(&[
                ("grant_type", "password"),
                ("username", username),
                ("password", password),
            ]))
        };
        let longest_name = "u".repeat(username::MAX_LENGTH);
        // Counted in characters: a password of the longest length in two-byte characters is fine.
        let longest_password = "é".repeat(password::MAX_LENGTH);
        assert!(at_most(&longest_name, &longest_password).is_ok());
        let longer_name = format!("{longest_name}u");
        let longer_password = format!("{longest_password}é");
        assert!(matches!(
            at_most(&longer_name, "x"),
            Err(Error::InvalidRequest(d)) if d == "username is too long"
        ));
        assert!(matches!(
            at_most("alice", &longer_password),
            Err(Error::InvalidRequest(d)) if d == "password is too long"
        ));

        let refresh = |token: &str| {
            grant_request(form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
            ]))
        };
        let longest_token = "r".repeat(refresh::MAX_LENGTH);
        assert!(refresh(&longest_token).is_ok());
        // Not one of ours: the grant is invalid, as for any unknown token.
        let error = refresh(&format!("{longest_token}r")).err().unwrap();
        assert!(matches!(error, Error::InvalidGrant(_)), "{}", error.code());
    }

    #[test]
    fn parameters_of_other_grants_are_ignored() {
        let request = parsed(&[
            ("grant_type", "client_credentials"),
            ("username", &"u".repeat(username::MAX_LENGTH + 1)),
            ("refresh_token", &"r".repeat(refresh::MAX_LENGTH + 1)),
        ]);
        assert_eq!(request.grant_type(), GrantType::ClientCredentials);
    }
}
