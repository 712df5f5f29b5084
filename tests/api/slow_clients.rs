//! Slow and stalled clients (`server.read_timeout`, `server.idle_timeout`), with raw sockets: a client
//! that does not finish a request's head or body in time, or leaves its connection idle, is disconnected,
//! and hundreds of them do not keep the server from answering; a slow client within each bound is served.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{Backend, PASSWORD, TestApp, spawn_app_with};

/// Far longer than any timeout set here: a connection still open then was not going to be closed.
const BOUND: Duration = Duration::from_secs(5);

async fn app_with(read_timeout: u64, idle_timeout: u64) -> TestApp {
    spawn_app_with(Backend::Sqlite, |s| {
        s.server.read_timeout = read_timeout;
        s.server.idle_timeout = idle_timeout;
    })
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Everything the server sends until it closes the connection; fails if it is still open after [`BOUND`].
async fn until_closed(mut stream: impl AsyncRead + Unpin) -> Vec<u8> {
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                // A reset closes the connection too.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
                Err(e) => panic!("reading: {e}"),
            }
        }
    };
    tokio::time::timeout(BOUND, read)
        .await
        .expect("the server should have closed the connection")
}

/// `GET /healthz` on `stream`, and its whole response.
async fn healthz(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    read_response(stream).await
}

/// One whole response (head and `Content-Length` body), leaving the connection open.
async fn read_response(stream: &mut TcpStream) -> String {
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed mid-response: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .expect("a Content-Length");
                if got.len() >= end + 4 + length {
                    return text;
                }
            }
        }
    };
    tokio::time::timeout(BOUND, read)
        .await
        .expect("a response in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_half_a_head_is_disconnected_after_read_timeout() {
    let app = app_with(1, 60).await;
    let started = Instant::now();
    let mut stream = connect(&app).await;

    stream
        .write_all(b"POST /oauth/token HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
        .await
        .unwrap();

    until_closed(&mut stream).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "not before read_timeout: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_a_byte_at_a_time_is_cut_at_read_timeout() {
    let app = app_with(1, 60).await;
    let (reader, mut writer) = connect(&app).await.into_split();

    // A byte every 100 ms for as long as the server takes them: the connection is never inactive, so only
    // a deadline on the whole head stops it.
    let trickle = tokio::spawn(async move {
        let start = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
        for &byte in start.iter().chain(std::iter::repeat(&b'a')) {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let got = until_closed(reader).await;
    trickle.abort();
    assert!(
        !String::from_utf8_lossy(&got).contains(" 200 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_half_a_body_gets_408_and_is_disconnected() {
    let app = app_with(1, 60).await;
    let mut stream = connect(&app).await;
    let started = Instant::now();

    stream
        .write_all(
            b"POST /oauth/token HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n\
              grant_type=pass",
        )
        .await
        .unwrap();

    let got = String::from_utf8_lossy(&until_closed(&mut stream).await).into_owned();
    let took = started.elapsed();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains(r#""error":"invalid_request""#), "{got}");
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );
    assert!(
        took >= Duration::from_secs(1),
        "not before read_timeout: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    // The head timeout is far away: what closes the connection is its being idle.
    let app = app_with(30, 1).await;
    let mut stream = connect(&app).await;
    let resp = healthz(&mut stream).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        !resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    let idle_since = Instant::now();

    let got = until_closed(&mut stream).await;

    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    let idle = idle_since.elapsed();
    assert!(idle >= Duration::from_millis(500), "kept a while: {idle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_half_sent_requests_are_dropped_and_the_server_still_answers() {
    let app = app_with(1, 60).await;
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: loc")
            .await
            .unwrap();
        stalled.push(stream);
    }

    // Each is closed by the server (until_closed fails otherwise)...
    futures_util::future::join_all(stalled.iter_mut().map(until_closed)).await;

    // ...and a normal request is answered.
    let resp = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_within_each_bound_is_answered_and_kept() {
    let app = app_with(3, 3).await;
    let user = app.seed_user().await;
    let body = format!(
        "grant_type=password&username={}&password={}",
        user.username,
        PASSWORD.replace(' ', "+")
    );
    let head = format!(
        "POST /oauth/token HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let pause = || tokio::time::sleep(Duration::from_millis(750));
    let mut stream = connect(&app).await;
    let started = Instant::now();

    // The head over 1.5 s, then the body over 1.5 s: each inside its 3 s, the two together not.
    let (head_1, head_2) = head.split_at(20);
    let (head_2, head_3) = head_2.split_at(30);
    for (i, part) in [head_1, head_2, head_3].into_iter().enumerate() {
        if i > 0 {
            pause().await;
        }
        stream.write_all(part.as_bytes()).await.unwrap();
    }
    let (body_1, body_2) = body.split_at(15);
    for part in [body_1, body_2] {
        pause().await;
        stream.write_all(part.as_bytes()).await.unwrap();
    }
    let resp = read_response(&mut stream).await;
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("access_token"), "{resp}");

    // Idle for less than idle_timeout, the same connection takes another request.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resp = healthz(&mut stream).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

/// The longest timeouts the configuration accepts (100 years) are waited for, not overflowed: one
/// connection is answered twice (a deadline past the clock's range dropped it after its first answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_timeouts_accepted_keep_a_connection_serving() {
    const CENTURY: u64 = 100 * 365 * 24 * 60 * 60;
    let app = app_with(CENTURY, CENTURY).await;
    let mut stream = connect(&app).await;
    for _ in 0..2 {
        let resp = healthz(&mut stream).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
}
