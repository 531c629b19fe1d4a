//! Password recovery (SPEC §7): a real SMTP server (Python's aiosmtpd, writing a Maildir)
//! receives the mail; the test follows the link's token and checks that the old password,
//! the old access tokens and the old refresh tokens all fail afterwards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, assert_problem, error_locs};

both_backends!(
    a_mailed_reset_link_sets_a_new_password_and_ends_every_session,
    reset_requests_are_validated_and_limited,
    confirmations_need_a_live_token_and_a_good_password,
);

/// The Python that has aiosmtpd: `LARDER_TEST_AIOSMTPD_PYTHON`, else the venv `.ci/run`
/// makes (`.venv/aiosmtpd`). Under `CI=true` a missing one fails the test, never skips it.
fn aiosmtpd_python() -> Option<PathBuf> {
    let python = std::env::var_os("LARDER_TEST_AIOSMTPD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/aiosmtpd/bin/python"));
    let works = std::process::Command::new(&python)
        .args(["-c", "import aiosmtpd"])
        .output()
        .is_ok_and(|output| output.status.success());
    if works {
        return Some(python);
    }
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!(
            "CI=true but {} cannot import aiosmtpd (python3 -m venv .venv/aiosmtpd && \
             .venv/aiosmtpd/bin/pip install aiosmtpd)",
            python.display()
        );
    }
    eprintln!("aiosmtpd is not installed: skipping the SMTP test");
    None
}

/// An SMTP server on a free port that stores every message in a Maildir.
struct SmtpServer {
    port: u16,
    maildir: PathBuf,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl SmtpServer {
    async fn start(python: &Path) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        // Maildir makes the directory itself (it must not exist yet).
        let maildir = dir.path().join("maildir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return SmtpServer {
                    port,
                    maildir,
                    _child: child,
                    _dir: dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("aiosmtpd did not listen on port {port}");
    }

    fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
            .collect()
    }

    /// Waits for the `count`th message to arrive.
    async fn wait_for(&self, count: usize) -> Vec<String> {
        for _ in 0..200 {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no mail arrived");
    }
}

/// The token of the link in a mail (undoing quoted-printable if the mail used it).
fn link_token(message: &str) -> String {
    let text = message
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let at = text.find("reset?token=").expect("the mail has the link") + "reset?token=".len();
    text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

async fn a_mailed_reset_link_sets_a_new_password_and_ends_every_session(backend: Backend) {
    let Some(python) = aiosmtpd_python() else {
        return;
    };
    let smtp = SmtpServer::start(&python).await;
    let port = smtp.port;
    let app = TestApp::spawn_with(backend, move |settings| {
        settings.smtp_url = Some(larder::config::SmtpUrl {
            host: "127.0.0.1".into(),
            port,
        });
        settings.password_reset_url = "https://app.example/reset".into();
    })
    .await;
    let user = app.user().await;
    let (laptop, laptop_refresh) = app.login_pair(&user.email, &user.password).await;
    let ask = |email: &str| {
        app.post("/auth/password-reset")
            .json(&json!({"email": email}))
            .send()
    };
    // An unknown email gets the same answer, and no mail.
    let unknown = ask("nobody-here@example.com").await.unwrap();
    assert_eq!(unknown.status(), StatusCode::ACCEPTED);
    let unknown: Value = unknown.json().await.unwrap();
    let response = ask(&user.email.to_uppercase()).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.json::<Value>().await.unwrap(), unknown);
    let messages = smtp.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.messages().len(), 1, "one mail, for the real account");
    let message = &messages[0];
    assert!(
        message.contains(&format!("To: {}", user.email)),
        "{message}"
    );
    assert!(
        message.contains("Subject: Reset your larder password"),
        "{message}"
    );
    let token = link_token(message);
    assert_eq!(token.len(), 43, "{message}");

    let confirm = |token: &str, password: &str| {
        app.post("/auth/password-reset/confirm")
            .json(&json!({"token": token, "new_password": password}))
            .send()
    };
    // The policy holds, and a refused password leaves the token usable.
    let local = user.email.split('@').next().unwrap();
    let body = assert_problem(
        confirm(&token, &format!("my {local} secret"))
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        None,
    )
    .await;
    assert_eq!(error_locs(&body), vec![json!(["body", "new_password"])]);
    let response = confirm(&token, "a brand new passphrase").await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // One time only.
    assert_problem(
        confirm(&token, "yet another passphrase").await.unwrap(),
        StatusCode::BAD_REQUEST,
        Some("Invalid or expired token"),
    )
    .await;
    // Every session is over; the old password is refused, the new one works.
    for old in [&user.token, &laptop] {
        let response = app.get("/users/me").bearer_auth(old).send().await.unwrap();
        assert_problem(
            response,
            StatusCode::UNAUTHORIZED,
            Some("Could not validate credentials"),
        )
        .await;
    }
    let response = app
        .post("/auth/token")
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &laptop_refresh),
        ])
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::BAD_REQUEST, None).await;
    assert_eq!(body["error"], "invalid_grant");
    let response = app
        .post("/auth/token")
        .form(&[
            ("username", user.email.as_str()),
            ("password", user.password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let token = app.login(&user.email, "a brand new passphrase").await;
    let response = app
        .get("/users/me")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn reset_requests_are_validated_and_limited(backend: Backend) {
    // Without SMTP the link goes to the log.
    let app = TestApp::spawn_with(backend, |settings| {
        settings.registration_limit = "3/1h".parse().unwrap();
    })
    .await;
    let ask = |body: Value| app.post("/auth/password-reset").json(&body).send();
    let body = assert_problem(
        ask(json!({"email": "not-an-email"})).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        None,
    )
    .await;
    assert_eq!(error_locs(&body), vec![json!(["body", "email"])]);
    let body = assert_problem(
        ask(json!({})).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        None,
    )
    .await;
    assert_eq!(error_locs(&body), vec![json!(["body", "email"])]);
    let user = app.user().await;
    for _ in 0..3 {
        let response = ask(json!({"email": user.email})).await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let refused = ask(json!({"email": user.email})).await.unwrap();
    assert!(
        refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_problem(refused, StatusCode::TOO_MANY_REQUESTS, None).await;
}

async fn confirmations_need_a_live_token_and_a_good_password(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let confirm = |body: Value| app.post("/auth/password-reset/confirm").json(&body).send();
    assert_problem(
        confirm(json!({"token": "never-issued", "new_password": "a brand new passphrase"}))
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        Some("Invalid or expired token"),
    )
    .await;
    // An expired token, stored as the request would have stored it an hour ago.
    let token = larder::auth::secret::new_token();
    let expired = larder::store::now_millis() - 1;
    let stored = larder::store::password_resets::create(
        &app.state.db,
        &user.email.to_lowercase(),
        &larder::auth::secret::digest(&token),
        expired,
    )
    .await
    .unwrap();
    assert_eq!(stored.map(|(id, _)| id), Some(user.id));
    assert_problem(
        confirm(json!({"token": token, "new_password": "a brand new passphrase"}))
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        Some("Invalid or expired token"),
    )
    .await;
    let body = assert_problem(
        confirm(json!({"new_password": "short"})).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        None,
    )
    .await;
    assert_eq!(
        error_locs(&body),
        vec![json!(["body", "token"]), json!(["body", "new_password"])]
    );
    // Nothing changed.
    let response = app
        .get("/users/me")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
