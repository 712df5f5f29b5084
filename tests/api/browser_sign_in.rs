//! One sign-in in a real browser: headless Chromium, driven over WebDriver by chromedriver, renders the
//! sign-in page, submits its form and follows the redirect to a loopback listener of the test, as a
//! native app would receive it (RFC 8252).

use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};

use crate::helpers::{Backend, VERIFIER, challenge, claims_of, eventually, free_port, spawn_app};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL: &str =
    "install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)";

/// Long enough for a cold Chromium start on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// A chromedriver of this test's own, killed with the browsers it started when the test ends, even by a
/// failed assertion.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    async fn start() -> Self {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(Path::new(tool).exists(), "{tool} is missing: {INSTALL}");
        }
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {CHROMEDRIVER} ({e}): {INSTALL}"));
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        eventually(PATIENCE, "chromedriver answers", || async {
            reqwest::get(&status).await.is_ok()
        })
        .await;
        driver
    }

    /// A session in a fresh headless Chromium; `--no-sandbox` because CI runs as root in a container.
    async fn browser(&self) -> Client {
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage"],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("chromedriver cannot start {CHROMIUM} ({e}): {INSTALL}"))
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The browsers are chromedriver's children, in its process group: killing it alone leaves them.
        let group = format!("-{}", self.child.id());
        let killed = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
        if !killed.is_ok_and(|s| s.success()) {
            self.child.kill().ok();
        }
        self.child.wait().ok();
    }
}

/// A loopback HTTP server standing in for a native app: answers every request with "done" and reports
/// each request's target.
async fn loopback_receiver() -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
                let answer = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n\
                              connection: close\r\n\r\ndone";
                stream.write_all(answer.as_bytes()).await.ok();
                tx.send(target).ok();
            });
        }
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_sign_in_page_signs_in_and_follows_the_redirect() {
    // Arrange
    let driver = ChromeDriver::start().await;
    let app = spawn_app(Backend::Sqlite).await;
    let client = app
        .seed_code_client("native", "openid profile", &["http://127.0.0.1/cb"])
        .await;
    let user = app.seed_user().await;
    let (port, mut requests) = loopback_receiver().await;
    let redirect_uri = format!("http://127.0.0.1:{port}/cb");
    let mut authorize = url::Url::parse(&app.url("/oauth/authorize")).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", "openid profile")
        .append_pair("state", "st4te")
        .append_pair("nonce", "n0nce")
        .append_pair("code_challenge", &challenge(VERIFIER))
        .append_pair("code_challenge_method", "S256");
    let browser = driver.browser().await;

    // Act: the page, then its form as a person fills it in.
    browser.goto(authorize.as_str()).await.unwrap();
    let title = browser.title().await.unwrap();
    assert!(title.starts_with("Sign in"), "title: {title}");
    let heading = browser.find(Locator::Css("h1")).await.unwrap();
    assert_eq!(heading.text().await.unwrap(), "Sign in");
    for (field, label) in [("username", "Username"), ("password", "Password")] {
        let labelled = browser
            .find(Locator::Css(&format!("label[for='{field}']")))
            .await
            .unwrap_or_else(|_| panic!("no label for {field}"));
        assert_eq!(labelled.text().await.unwrap(), label);
        let input = browser
            .find(Locator::Id(field))
            .await
            .unwrap_or_else(|_| panic!("no input {field}"));
        input
            .send_keys(if field == "username" {
                &user.username
            } else {
                &user.password
            })
            .await
            .unwrap();
    }
    let submit = browser
        .find(Locator::Css("button[type='submit']"))
        .await
        .unwrap();
    submit.click().await.unwrap();
    let target = tokio::time::timeout(PATIENCE, async {
        loop {
            let target = requests.recv().await.unwrap();
            if target.starts_with("/cb") {
                break target;
            }
        }
    })
    .await
    .expect("the browser never arrived at the redirect URI");
    browser.close().await.unwrap();

    // Assert: the redirect carries a code, the state and the issuer, and the code buys an ID token.
    let arrived = url::Url::parse(&format!("http://127.0.0.1:{port}{target}")).unwrap();
    let query: Vec<(String, String)> = arrived.query_pairs().into_owned().collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in {target}"))
    };
    assert_eq!(param("state"), "st4te");
    assert_eq!(param("iss"), app.settings.issuer());
    let code = param("code");
    let resp = app
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", VERIFIER),
        ])
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let tokens: Value = resp.json().await.unwrap();
    let id_token = claims_of(tokens["id_token"].as_str().expect("an id_token"));
    assert_eq!(id_token["nonce"], "n0nce");
    assert_eq!(id_token["preferred_username"], user.username.as_str());
}
