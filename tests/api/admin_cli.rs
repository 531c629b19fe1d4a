//! `larder admin list`, `set-password` and `deactivate`, run as an operator runs them,
//! beside a serving larder on the same database.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, assert_problem};
use crate::process::BINARY;

both_backends!(admin_commands_list_set_passwords_and_deactivate);

fn larder_admin(app: &TestApp, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(BINARY)
        .arg("admin")
        .args(args)
        .env("LARDER_DATABASE_URL", app.database_url.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(line) = stdin {
        writeln!(input, "{line}").unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// On SQLite the serving process caches token checks up to 2 s; another process's change
/// shows after that. PostgreSQL checks every time.
async fn settle(app: &TestApp) {
    if app.backend == Backend::Sqlite {
        tokio::time::sleep(Duration::from_millis(2100)).await;
    }
}

async fn admin_commands_list_set_passwords_and_deactivate(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin().await;
    let user = app.user().await;
    let stdout =
        |output: &std::process::Output| String::from_utf8_lossy(&output.stdout).to_string();
    let stderr =
        |output: &std::process::Output| String::from_utf8_lossy(&output.stderr).to_string();

    let listed = larder_admin(&app, &["list"], None);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let text = stdout(&listed);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "id\temail\trole\tactive\tcreated_at");
    assert!(lines[1].starts_with(&format!("{}\t{}\tadmin\tyes\t", admin.id, admin.email)));
    assert!(lines[2].starts_with(&format!("{}\t{}\tuser\tyes\t", user.id, user.email)));

    // set-password: the policy holds (exit 2); then the password is set, sessions end.
    let weak = larder_admin(
        &app,
        &["set-password", "--email", &user.email, "--password-stdin"],
        Some("password1"),
    );
    assert_eq!(weak.status.code(), Some(2));
    assert_eq!(stderr(&weak).trim().lines().count(), 1);
    let set = larder_admin(
        &app,
        &["set-password", "--email", &user.email, "--password-stdin"],
        Some("a brand new passphrase"),
    );
    assert!(set.status.success(), "{}", stderr(&set));
    settle(&app).await;
    let response = app
        .get("/users/me")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_problem(
        response,
        StatusCode::UNAUTHORIZED,
        Some("Could not validate credentials"),
    )
    .await;
    let token = app.login(&user.email, "a brand new passphrase").await;

    // deactivate: never the last active admin, nor an unknown account (exit 1, one line).
    for email in [admin.email.as_str(), "nobody@example.com"] {
        let refused = larder_admin(&app, &["deactivate", "--email", email], None);
        assert_eq!(refused.status.code(), Some(1), "{email}");
        assert_eq!(
            stderr(&refused).trim().lines().count(),
            1,
            "{}",
            stderr(&refused)
        );
    }
    let response = app
        .get("/users/me")
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let done = larder_admin(&app, &["deactivate", "--email", &user.email], None);
    assert!(done.status.success(), "{}", stderr(&done));
    settle(&app).await;
    let response = app
        .get("/users/me")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_problem(
        response,
        StatusCode::UNAUTHORIZED,
        Some("Could not validate credentials"),
    )
    .await;
    let response = app
        .post("/auth/token")
        .form(&[
            ("username", user.email.as_str()),
            ("password", "a brand new passphrase"),
        ])
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::FORBIDDEN, Some("Inactive user")).await;
    let listed = stdout(&larder_admin(&app, &["list"], None));
    assert!(listed.contains(&format!("{}\t{}\tuser\tno\t", user.id, user.email)));
}
