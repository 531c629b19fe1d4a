//! Mail larder sends (password-reset links): over plain SMTP when `LARDER_SMTP_URL` is set,
//! else written to the log, so a development setup needs no mail server.

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::SmtpUrl;

pub struct Mailer {
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
}

impl Mailer {
    /// Sends through `smtp` when given, as `from` (a mailbox, `Name <address>`).
    pub fn new(smtp: Option<&SmtpUrl>, from: &str) -> anyhow::Result<Self> {
        let from: Mailbox = from
            .parse()
            .map_err(|error| anyhow::anyhow!("LARDER_MAIL_FROM {from:?}: {error}"))?;
        let smtp = smtp.map(|url| {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(url.host.as_str())
                .port(url.port)
                .timeout(Some(std::time::Duration::from_secs(10)))
                .build()
        });
        Ok(Mailer { smtp, from })
    }

    /// Mails a password-reset link to `to`; a failure is logged, never shown to the caller
    /// (whose answer must not depend on whether the account exists).
    pub async fn password_reset(&self, to: &str, link: &str, valid_minutes: i64) {
        let Some(smtp) = &self.smtp else {
            tracing::info!(
                to,
                link,
                "password reset requested (LARDER_SMTP_URL is not set: the link is logged)"
            );
            return;
        };
        let body = format!(
            "Someone asked to reset the password of your larder account.\r\n\r\n\
             To choose a new password, open this link within {valid_minutes} minutes:\r\n\r\n\
             {link}\r\n\r\n\
             If it was not you, ignore this message: your password stays as it is.\r\n"
        );
        let message = to
            .parse::<Mailbox>()
            .map_err(anyhow::Error::from)
            .and_then(|to| {
                Message::builder()
                    .from(self.from.clone())
                    .to(to)
                    .subject("Reset your larder password")
                    .body(body)
                    .map_err(anyhow::Error::from)
            });
        let result = match message {
            Ok(message) => smtp.send(message).await.map_err(anyhow::Error::from),
            Err(error) => Err(error),
        };
        match result {
            Ok(_) => tracing::info!(to, "password reset mail sent"),
            Err(error) => {
                tracing::error!(to, error = %error, "sending a password reset mail failed")
            }
        }
    }
}
