//! The binary as an operator runs it: settings errors, `larder admin create`, SIGTERM.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const BINARY: &str = env!("CARGO_BIN_EXE_larder");

/// The token secret of the tests that run `larder serve` as a process (and of their
/// in-process servers that must accept the same tokens).
pub const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

/// `larder serve` on `database` at 127.0.0.1:`port` with [`SECRET`], quiet (warn level,
/// output discarded): what every test that runs the binary as a server starts from, adding
/// or overriding its own settings.
pub fn serve(database: &str, port: u16) -> Command {
    let mut command = Command::new(BINARY);
    command
        .arg("serve")
        .env("LARDER_BIND", format!("127.0.0.1:{port}"))
        .env("LARDER_DATABASE_URL", database)
        .env("LARDER_JWT_SECRET", SECRET)
        .env("LARDER_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// A port that is free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The access token of `root@example.com` (password "admin password"), the admin these
/// tests create with `larder admin create` or `LARDER_ADMIN_EMAIL`.
pub async fn root_token(client: &reqwest::Client, base: &str) -> String {
    let token: Value = client
        .post(format!("{base}/auth/token"))
        .form(&[
            ("username", "root@example.com"),
            ("password", "admin password"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    token["access_token"].as_str().unwrap().to_string()
}

/// Waits until `/healthz` answers (at most 20 s: a restart after `kill -9` recovers first).
pub async fn wait_until_serving(base: &str) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..400 {
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await
            && response.status() == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("larder did not start serving at {base}");
}

#[test]
fn invalid_settings_stop_the_start_with_one_line_and_exit_code_2() {
    let cases: [(&str, &str); 7] = [
        ("LARDER_BIND", "not-an-address"),
        ("LARDER_RATE_LIMIT", "lots"),
        ("LARDER_DATABASE_URL", "mysql://nope"),
        ("LARDER_POOL_SIZE", "0"),
        ("LARDER_TRUSTED_PROXIES", "10.0.0.0/99"),
        ("LARDER_LOGIN_LIMIT", "0/5m"),
        ("LARDER_MAX_CONNECTIONS", "0"),
    ];
    for (name, value) in cases {
        let output = Command::new(BINARY)
            .arg("serve")
            .env(name, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}={value}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.trim().lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.starts_with("larder: invalid settings"), "{stderr}");
    }
    let output = Command::new(BINARY)
        .arg("serve")
        .env("LARDER_ENV", "production")
        .env_remove("LARDER_JWT_SECRET")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("LARDER_JWT_SECRET"));
    // The password policy holds for the admin made at start, before anything is opened.
    for (password, reason) in [
        ("password1", "too common"),
        ("root-is-my-name", "before the @"),
        ("short", "at least 8"),
    ] {
        let output = Command::new(BINARY)
            .arg("serve")
            .env(
                "LARDER_DATABASE_URL",
                "sqlite:///nonexistent-dir/never-created.db",
            )
            .env("LARDER_ADMIN_EMAIL", "root@example.com")
            .env("LARDER_ADMIN_PASSWORD", password)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{password}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("LARDER_ADMIN_PASSWORD") && stderr.contains(reason),
            "{stderr}"
        );
    }
    let output = Command::new(BINARY)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).unwrap();
    for variable in [
        "LARDER_BIND",
        "LARDER_DATABASE_URL",
        "LARDER_MAX_BODY",
        "LARDER_LOG_LEVEL",
        "LARDER_LOG_FORMAT",
        "LARDER_GRACE_PERIOD",
        "LARDER_POOL_SIZE",
        "LARDER_SQLITE_SYNC",
        "LARDER_RATE_LIMIT",
        "LARDER_LOGIN_LIMIT",
        "LARDER_LOGIN_ADDRESS_LIMIT",
        "LARDER_REGISTRATION_LIMIT",
        "LARDER_TRUSTED_PROXIES",
        "LARDER_MAX_CONNECTIONS",
    ] {
        assert!(help.contains(variable), "{variable} missing from --help");
    }
}

/// Runs `larder admin create` for root@example.com with `password` on stdin.
fn admin_create(database_url: &str, password: &str) -> std::process::Output {
    let mut admin = Command::new(BINARY)
        .args([
            "admin",
            "create",
            "--email",
            "root@example.com",
            "--password-stdin",
        ])
        .env("LARDER_DATABASE_URL", database_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = admin.stdin.take().unwrap();
    writeln!(stdin, "{password}").unwrap();
    drop(stdin);
    admin.wait_with_output().unwrap()
}

#[test]
fn admin_create_refuses_a_weak_password_with_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("larder.db");
    for password in ["12345678", "qwertyuiop", "my name is Root!"] {
        let output = admin_create(&format!("sqlite://{}", database.display()), password);
        assert_eq!(output.status.code(), Some(2), "{password}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("larder: password:"), "{stderr}");
        assert!(output.stdout.is_empty());
    }
    // Refused before the database was touched.
    assert!(!database.exists());
}

#[tokio::test]
async fn admin_create_reads_the_password_from_stdin_and_sigterm_finishes_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("larder.db").display());
    let output = admin_create(&database, "admin password");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("root@example.com"));

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(BINARY)
        .arg("serve")
        .env("LARDER_BIND", format!("127.0.0.1:{port}"))
        .env("LARDER_DATABASE_URL", &database)
        .env("LARDER_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_serving(&base).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let token = root_token(&client, &base).await;
    let me: Value = client
        .get(format!("{base}/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "admin");
    // A filtered page (read through the direct SQLite connections, which must be closed
    // before the writer for the stop to checkpoint).
    let page = client
        .get(format!(
            "{base}/items?owner_id=1&min_price=1&sort=-created_at"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);

    // A request in flight when SIGTERM arrives still gets its answer; then the process exits 0.
    // In flight for real: its body arrives half before the signal, half a second after it.
    let body = br#"{"name":"sent across a shutdown","price":1.5}"#;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!(
        "POST /items HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\
         x-request-id: in-flight-1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(700)).await;
    stream.write_all(&body[10..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered before the process exits")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("sent across a shutdown"), "{answer}");
    let exit = tokio::task::spawn_blocking(move || {
        let status = server.wait().unwrap();
        let mut logs = String::new();
        std::io::Read::read_to_string(&mut server.stdout.take().unwrap(), &mut logs).unwrap();
        (status, logs)
    })
    .await
    .unwrap();
    assert_eq!(exit.0.code(), Some(0));
    // The start line names where the API and its documentation are.
    assert!(
        exit.1.contains(&format!(
            "larder is serving {base} (documentation: {base}/docs)"
        )),
        "{}",
        exit.1
    );
    // The access log is JSON lines with method, path, status, latency and request id.
    let line = exit
        .1
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["request_id"] == "in-flight-1")
        .expect("an access log line for the in-flight request");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/items");
    assert_eq!(line["status"], 201);
    assert!(line["latency_ms"].as_f64().unwrap() >= 900.0);
    // After a restart the old token still works: the secret is kept beside the database.
    assert!(dir.path().join("larder.db.jwt-secret").exists());
    // A clean stop leaves every write in the database file itself: the last connection to
    // close (the writer, after every reader) checkpointed the WAL. Read without the WAL:
    let file = dir.path().join("larder.db");
    let alone = rusqlite::Connection::open_with_flags(
        format!("file:{}?immutable=1", file.display()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    let kept: i64 = alone
        .query_row(
            "select count(*) from items where name = 'sent across a shutdown'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(kept, 1);
}
