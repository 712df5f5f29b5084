//! Sending messages ([`ports::Outbox`]): plain text with an HTML alternative, through SMTP when
//! `mail.smtp_url` is set and as `.eml` files in `mail.dir` otherwise. A request only queues a message;
//! one task delivers the queue in order, retrying a delivery that failed for a passing reason with
//! backoff (one the server refused for good is not tried again, so that it cannot hold up the queue),
//! and counts the outcome in `portcullis_mail_messages_total`. No log line holds a message's link.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use askama::Template;
use lettre::{
    Address, AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{
        authentication::Credentials,
        client::{Tls, TlsParameters},
    },
};
use tokio::sync::mpsc;

use crate::{
    config::MailSettings,
    metrics::Metrics,
    ports::{Message, MessageKind, Outbox},
};

/// Messages waiting at most; past it a message is dropped and counted as failed.
const QUEUE: usize = 1024;
/// Delivery attempts per message, waiting 1 s, 2 s, 4 s … between them.
const ATTEMPTS: u32 = 5;

pub struct Mailer {
    queue: mpsc::Sender<Message>,
    metrics: Arc<Metrics>,
}

impl Mailer {
    /// Starts the delivery task; `site` is the issuer's name, which every message carries.
    pub fn start(
        settings: &MailSettings,
        site: &str,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let transport = Transport::new(settings)?;
        let from: Mailbox = settings
            .from
            .parse()
            .with_context(|| format!("mail.from is not an address: {}", settings.from))?;
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(deliver_all(
            waiting,
            transport,
            from,
            site.to_owned(),
            metrics.clone(),
        ));
        Ok(Self { queue, metrics })
    }
}

impl Outbox for Mailer {
    fn send(&self, message: Message) {
        if self.queue.try_send(message).is_err() {
            Metrics::count(&self.metrics.mail, "failed");
            tracing::warn!("the mail queue is full; a message was dropped");
        }
    }
}

#[derive(Clone)]
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Folder(AsyncFileTransport<Tokio1Executor>),
}

impl Transport {
    fn new(settings: &MailSettings) -> anyhow::Result<Self> {
        let Some(url) = &settings.smtp_url else {
            std::fs::create_dir_all(&settings.dir)
                .with_context(|| format!("creating the mail folder {}", settings.dir.display()))?;
            return Ok(Self::Folder(AsyncFileTransport::new(&settings.dir)));
        };
        let url = url::Url::parse(url).context("mail.smtp_url is not a URL")?;
        let host = url.host_str().context("mail.smtp_url names no host")?;
        let tls = TlsParameters::new(host.to_owned()).context("mail.smtp_url: TLS")?;
        let (tls, port) = match url.scheme() {
            // STARTTLS when the server offers it.
            "smtp" => (Tls::Opportunistic(tls), 587),
            "smtps" => (Tls::Wrapper(tls), 465),
            other => anyhow::bail!("mail.smtp_url: the scheme is smtp or smtps, not {other}"),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(url.port().unwrap_or(port))
            .tls(tls)
            .timeout(Some(Duration::from_secs(10)));
        if !url.username().is_empty() {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            builder = builder.credentials(Credentials::new(
                decode(url.username()),
                decode(url.password().unwrap_or_default()),
            ));
        }
        Ok(Self::Smtp(builder.build()))
    }

    /// `Err` with the reason and whether trying again could help (a `5xx` from the server cannot).
    async fn deliver(&self, email: &lettre::Message) -> Result<(), (String, bool)> {
        match self {
            Self::Smtp(t) => t
                .send(email.clone())
                .await
                .map(drop)
                .map_err(|e| (e.to_string(), !e.is_permanent())),
            Self::Folder(t) => t
                .send(email.clone())
                .await
                .map(drop)
                .map_err(|e| (e.to_string(), true)),
        }
    }
}

async fn deliver_all(
    mut waiting: mpsc::Receiver<Message>,
    transport: Transport,
    from: Mailbox,
    site: String,
    metrics: Arc<Metrics>,
) {
    while let Some(message) = waiting.recv().await {
        let email = match compose(&message, &from, &site) {
            Ok(email) => email,
            Err(e) => {
                Metrics::count(&metrics.mail, "failed");
                tracing::warn!(error = %e, "a message could not be composed");
                continue;
            }
        };
        let mut wait = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            match transport.deliver(&email).await {
                Ok(()) => {
                    Metrics::count(&metrics.mail, "sent");
                    break;
                }
                Err((e, true)) if attempt < ATTEMPTS => {
                    Metrics::count(&metrics.mail, "retried");
                    tracing::warn!(error = %e, attempt, "a message was not delivered; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err((e, _)) => {
                    Metrics::count(&metrics.mail, "failed");
                    tracing::error!(error = %e, "a message was not delivered; giving up");
                    break;
                }
            }
        }
    }
}

/// The text of a message, as plain text and as HTML.
#[derive(Template)]
#[template(path = "mail/message.txt")]
struct Text<'a> {
    site: &'a str,
    username: &'a str,
    kind: &'a MessageKind,
}

#[derive(Template)]
#[template(path = "mail/message.html")]
struct Html<'a> {
    site: &'a str,
    username: &'a str,
    kind: &'a MessageKind,
}

fn subject(kind: &MessageKind, site: &str) -> String {
    match kind {
        MessageKind::PasswordReset { .. } => format!("Reset your password on {site}"),
        MessageKind::VerifyEmail { .. } => format!("Confirm your email address on {site}"),
        MessageKind::EmailChanged { .. } => format!("Your email address on {site} was changed"),
    }
}

/// The message, addressed. An address that is not one (a line break, a space) is refused here, so
/// nothing can be injected into a header.
fn compose(message: &Message, from: &Mailbox, site: &str) -> Result<lettre::Message, String> {
    let to: Address = message
        .to
        .parse()
        .map_err(|e| format!("the address: {e}"))?;
    let (username, kind) = (message.username.as_str(), &message.kind);
    let text = Text {
        site,
        username,
        kind,
    }
    .render()
    .map_err(|e| e.to_string())?;
    let html = Html {
        site,
        username,
        kind,
    }
    .render()
    .map_err(|e| e.to_string())?;
    lettre::Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to))
        .subject(subject(kind, site))
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reset(to: &str) -> Message {
        Message {
            to: to.into(),
            username: "alice".into(),
            kind: MessageKind::PasswordReset {
                link: "https://id.example.com/password-reset?token=abc".into(),
                minutes: 30,
            },
        }
    }

    #[test]
    fn a_message_has_text_and_html_naming_the_site_and_the_link() {
        let from: Mailbox = "Portcullis <no-reply@localhost>".parse().unwrap();
        let email = compose(&reset("alice@example.com"), &from, "id.example.com").unwrap();
        let raw = String::from_utf8(email.formatted()).unwrap();
        assert!(
            raw.contains("Subject: Reset your password on id.example.com"),
            "{raw}"
        );
        assert!(
            raw.contains("text/plain") && raw.contains("text/html"),
            "{raw}"
        );
        assert!(raw.contains("To: alice@example.com"), "{raw}");
    }

    #[test]
    fn an_address_with_a_line_break_or_a_space_is_not_sent() {
        let from: Mailbox = "Portcullis <no-reply@localhost>".parse().unwrap();
        for bad in [
            "alice@example.com\r\nBcc: eve@example.com",
            "alice@example.com\nBcc: eve@example.com",
            "alice @example.com",
            "",
        ] {
            assert!(
                compose(&reset(bad), &from, "id.example.com").is_err(),
                "{bad:?}"
            );
        }
    }
}
