//! A login, a code's issue or its redemption meeting another instance's write in flight on PostgreSQL: a
//! logout, a client's deletion or a password change that commits meanwhile. The request waits for the
//! write and then writes nothing, rather than a session that outlives the logout, a failure of a foreign
//! key to the deleted client, or a deadlock; and a logout everywhere waits for a start in flight and
//! ends its session too.

use portcullis::value::grant_type::GrantType;
use reqwest::Response;
use sea_orm::ConnectionTrait;

use crate::{
    authorization_code::{REDIRECT, param, redeem, redirected, request},
    helpers::{Backend, Browser, InFlight, TestApp, TestUser, VERIFIER, assert_error, spawn_app},
};

/// A code for `user`, from a browser sign-in to a new code-flow client; the client's id and the code.
async fn code(app: &TestApp, user: &TestUser) -> (String, String) {
    let client = app
        .seed_code_client("rp", "openid profile email", &[REDIRECT])
        .await;
    let answer = Browser::new(app)
        .sign_in(&request(&client, &[]), user, &user.password)
        .await;
    let code = param(&redirected(&answer), "code").unwrap().to_owned();
    (client, code)
}

/// `request`'s answer, with `write` committed once the request waits for its locks.
async fn meeting(
    app: &TestApp,
    write: InFlight,
    request: impl Future<Output = Response>,
) -> Response {
    let (answer, ()) = tokio::join!(request, async {
        app.until_statements_wait_for_locks(1).await;
        write.txn.commit().await.unwrap();
    });
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_redeemed_while_its_sign_in_is_logged_out_starts_no_session() {
    // Arrange: a code, and its sign-in ended by a logout that has not committed yet.
    let app = spawn_app(Backend::Postgres).await;
    let user = app.seed_user().await;
    let (client, code) = code(&app, &user).await;
    let logout = app
        .write_in_flight("UPDATE sign_in_sessions SET revoked_at = now()")
        .await;

    // Act
    let answer = meeting(&app, logout, redeem(&app, &client, &code, VERIFIER)).await;

    // Assert: the redemption waited for the logout, and a session it started would have outlived it.
    assert_error(answer, 400, "invalid_grant").await;
    assert_eq!(app.count("sessions").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_while_its_client_is_deleted_gets_invalid_grant_not_a_500() {
    // Arrange: the client's deletion in flight.
    let app = spawn_app(Backend::Postgres).await;
    let user = app.seed_user().await;
    let client = app
        .seed_client(true, &[GrantType::Password], "profile")
        .await;
    let deletion = app
        .write_in_flight(&format!(
            "DELETE FROM clients WHERE client_id = '{}'",
            client.id
        ))
        .await;

    // Act
    let form = [
        ("grant_type", "password"),
        ("username", &user.username),
        ("password", &user.password),
        ("client_id", &client.id),
    ];
    let answer = meeting(&app, deletion, app.token(&form)).await;

    // Assert
    assert_error(answer, 400, "invalid_grant").await;
    assert_eq!(app.count("sessions").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_redeemed_during_a_password_change_waits_for_it_without_a_deadlock() {
    // Arrange: a password change that holds the user's row and goes on to end the user's sign-ins.
    let app = spawn_app(Backend::Postgres).await;
    let user = app.seed_user().await;
    let (client, code) = code(&app, &user).await;
    let change = app
        .write_in_flight(&format!(
            "UPDATE users SET password_changed_at = now() WHERE username = '{}'",
            user.username
        ))
        .await;

    // Act: the redemption waits for the user's row; then the change ends the sign-ins, which a
    // redemption holding a sign-in's lock while it waited would make a deadlock.
    let (answer, ()) = tokio::join!(redeem(&app, &client, &code, VERIFIER), async {
        app.until_statements_wait_for_locks(1).await;
        change
            .txn
            .execute_unprepared("UPDATE sign_in_sessions SET revoked_at = now()")
            .await
            .unwrap();
        change.txn.commit().await.unwrap();
    });

    // Assert
    assert_error(answer, 400, "invalid_grant").await;
    assert_eq!(app.count("sessions").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_asked_for_while_its_client_is_deleted_gets_the_unknown_client_page() {
    // Arrange: a signed-in browser, and its client's deletion in flight.
    let app = spawn_app(Backend::Postgres).await;
    let user = app.seed_user().await;
    let client = app
        .seed_code_client("rp", "openid profile email", &[REDIRECT])
        .await;
    let mut browser = Browser::new(&app);
    browser
        .sign_in(&request(&client, &[]), &user, &user.password)
        .await;
    let deletion = app
        .write_in_flight(&format!("DELETE FROM clients WHERE client_id = '{client}'"))
        .await;

    // Act: a signed-in authorization request, which issues a code at once.
    let answer = meeting(&app, deletion, browser.get(&request(&client, &[]))).await;

    // Assert: the page for an unknown client, not a redirect to the deleted client's URI.
    assert_eq!(answer.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(answer.headers().get("location").is_none());
    assert_eq!(app.count("authorization_codes").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_redeemed_during_a_logout_everywhere_has_its_session_ended_by_it() {
    // Arrange: a code, and the test holding the code's row, so that its redemption waits there with
    // the user's and the sign-in's locks taken, as one in flight does.
    let app = spawn_app(Backend::Postgres).await;
    let user = app.seed_user().await;
    let bearer = app.login(&user).await.access_token;
    let (client, code) = code(&app, &user).await;
    let held = app
        .write_in_flight("SELECT 1 FROM authorization_codes FOR UPDATE")
        .await;

    // Act: the logout everywhere arrives while the redemption waits; then the redemption goes on.
    let logout_everywhere = async {
        app.until_statements_wait_for_locks(1).await;
        let logout = app
            .http
            .delete(app.url("/users/me/sessions"))
            .bearer_auth(&bearer)
            .send();
        let (answer, ()) = tokio::join!(logout, async {
            app.until_statements_wait_for_locks(2).await;
            held.txn.commit().await.unwrap();
        });
        answer.unwrap()
    };
    let (redeemed, logout) =
        tokio::join!(redeem(&app, &client, &code, VERIFIER), logout_everywhere);

    // Assert: the redemption started its session before the logout; the logout ended it.
    assert_eq!(logout.status(), reqwest::StatusCode::NO_CONTENT);
    assert_eq!(redeemed.status(), reqwest::StatusCode::OK);
    let tokens: serde_json::Value = redeemed.json().await.unwrap();
    let refresh = app
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", &client),
        ])
        .await;
    assert_error(refresh, 400, "invalid_grant").await;
}
