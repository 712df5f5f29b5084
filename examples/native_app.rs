//! A native app signing its user in through the system browser (RFC 8252), with the `openidconnect` crate.
//!
//! It discovers the server from its issuer, listens on a loopback port of its own choosing, opens the
//! browser at the authorize URL (PKCE S256, a state and a nonce), receives the code on
//! `http://127.0.0.1:PORT/callback`, exchanges it and verifies the ID token.
//!
//! ```sh
//! portcullis clients create --id native --public --grants authorization_code,refresh_token \
//!     --scopes "openid profile" --redirect-uri http://127.0.0.1/callback
//! cargo run --example native_app
//! ```
//!
//! Environment: `PORTCULLIS_ISSUER` (`http://127.0.0.1:8080`), `PORTCULLIS_CLIENT_ID` (`native`). The
//! redirect URI is registered without a port because the server accepts any port on a loopback URI.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    process::Command,
};

use anyhow::{Context, bail};
use openidconnect::{
    AccessTokenHash, AuthenticationFlow, AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
    core::{CoreClient, CoreProviderMetadata, CoreResponseType},
    reqwest,
};
use url::Url;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let issuer = std::env::var("PORTCULLIS_ISSUER").unwrap_or("http://127.0.0.1:8080".into());
    let client_id = std::env::var("PORTCULLIS_CLIENT_ID").unwrap_or("native".into());
    // The crate's requests must not follow redirects (its advice against SSRF).
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;

    let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(issuer)?, &http)
        .await
        .context("discovery")?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let redirect = format!(
        "http://127.0.0.1:{}/callback",
        listener.local_addr()?.port()
    );
    let client = CoreClient::from_provider_metadata(metadata, ClientId::new(client_id), None)
        .set_redirect_uri(RedirectUrl::new(redirect)?);

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();
    println!("Signing in in your browser; if it did not open, visit:\n\n  {url}\n");
    open_browser(url.as_str());

    let callback = tokio::task::spawn_blocking(move || receive_callback(&listener)).await??;
    let param = |name: &str| {
        callback
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if param("state").as_deref() != Some(state.secret().as_str()) {
        bail!("the redirect's state is not ours: ignoring it");
    }
    if let Some(error) = param("error") {
        bail!("sign-in refused: {error}");
    }
    let code = AuthorizationCode::new(param("code").context("no code in the redirect")?);

    let tokens = client
        .exchange_code(code)?
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .context("code exchange")?;
    let id_token = tokens.id_token().context("no ID token")?;
    let id_verifier = client.id_token_verifier();
    let claims = id_token.claims(&id_verifier, &nonce)?;
    // The access token must be the one the ID token was issued with (OpenID Connect Core §3.1.3.8).
    if let Some(expected) = claims.access_token_hash() {
        let actual = AccessTokenHash::from_token(
            tokens.access_token(),
            id_token.signing_alg()?,
            id_token.signing_key(&id_verifier)?,
        )?;
        if actual != *expected {
            bail!("the access token does not match the ID token's at_hash");
        }
    }

    let name = claims
        .preferred_username()
        .map_or("(no username)", |u| u.as_str());
    println!("Signed in: {name} (sub {})", claims.subject().as_str());
    Ok(())
}

/// Asks the operating system to open `url` in the default browser; failing that, the printed URL serves.
fn open_browser(url: &str) {
    let mut command = if cfg!(target_os = "macos") {
        Command::new("open")
    } else if cfg!(windows) {
        let mut start = Command::new("cmd");
        start.args(["/C", "start", ""]);
        start
    } else {
        Command::new("xdg-open")
    };
    if let Err(error) = command.arg(url).spawn() {
        eprintln!("could not open a browser ({error})");
    }
}

/// Waits for the browser's request to `/callback` and answers it; the URL it asked for.
fn receive_callback(listener: &TcpListener) -> anyhow::Result<Url> {
    loop {
        let (mut stream, _) = listener.accept()?;
        let mut request_line = String::new();
        BufReader::new(&stream).read_line(&mut request_line)?;
        let target = request_line.split_whitespace().nth(1).unwrap_or("/");
        let url = Url::parse("http://127.0.0.1")?.join(target)?;
        if url.path() != "/callback" {
            // Browsers may ask for other things, such as a favicon.
            stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")?;
            continue;
        }
        let body = "Signed in. You can close this tab and return to the app.";
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(url);
    }
}
