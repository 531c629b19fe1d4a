//! Faults: `kill -9` in the middle of writes loses no acknowledged write, and a database
//! that goes away (on PostgreSQL, cut through a TCP proxy) gives 503s, not hangs, and
//! recovers without a restart.

use std::collections::HashSet;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::helpers::{Backend, TestApp, assert_problem, fresh_postgres_database};
use crate::process::{free_port, wait_until_serving};

/// The binary serving `database` on `port` (`process::serve`).
pub(crate) fn start(database: &str, port: u16) -> Child {
    crate::process::serve(database, port)
        .spawn()
        .expect("start larder")
}

async fn token(client: &reqwest::Client, base: &str) -> String {
    let email = "durable@example.com";
    let _ = client
        .post(format!("{base}/users"))
        .json(&json!({"email": email, "password": "plum-kettle-42"}))
        .send()
        .await
        .unwrap();
    let body: Value = client
        .post(format!("{base}/auth/token"))
        .form(&[("username", email), ("password", "plum-kettle-42")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

/// Rounds of: writers post items as fast as they can, the server is SIGKILLed at a random
/// moment, restarted, and every item answered 201 must be there with the body it was
/// answered with; a write that got no answer may or may not exist, but never half.
async fn acknowledged_writes_survive_kill_9(database: String) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut acknowledged: Vec<Value> = Vec::new();
    let mut server = start(&database, port);
    wait_until_serving(&base).await;
    let token = token(&client, &base).await;
    for round in 0..4u64 {
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let (client, base, token, stop) = (client.clone(), base.clone(), token.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut created = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let body = json!({"name": format!("r{round}-w{writer}-{n}"), "price": n, "quantity": writer});
                        match client.post(format!("{base}/items")).bearer_auth(&token).json(&body).send().await {
                            Ok(response) if response.status() == StatusCode::CREATED => {
                                if let Ok(item) = response.json::<Value>().await {
                                    created.push(item);
                                }
                            }
                            Ok(_) | Err(_) => break,
                        }
                    }
                    created
                })
            })
            .collect();
        // A pseudo-random moment between 150 and 650 ms into the round.
        let nanos = Instant::now().elapsed().as_nanos() as u64 ^ (round * 7919);
        tokio::time::sleep(Duration::from_millis(150 + nanos % 500)).await;
        server.kill().expect("SIGKILL larder");
        server.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            acknowledged.extend(writer.await.unwrap());
        }
        server = start(&database, port);
        wait_until_serving(&base).await;
        for item in &acknowledged {
            let response = client
                .get(format!("{base}/items/{}", item["id"]))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "acknowledged item {} lost after kill -9",
                item["id"]
            );
            assert_eq!(&response.json::<Value>().await.unwrap(), item);
        }
    }
    assert!(
        acknowledged.len() > 50,
        "too few writes to prove anything: {}",
        acknowledged.len()
    );
    // No half-applied rows: every stored item is whole and valid.
    let mut ids = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(cursor) => format!("{base}/items?limit=100&cursor={cursor}"),
            None => format!("{base}/items?limit=100"),
        };
        let page: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            assert!(item["name"].as_str().unwrap().starts_with('r'));
            assert_eq!(item["version"], 1);
            ids.insert(item["id"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    for item in &acknowledged {
        assert!(ids.contains(&item["id"].as_i64().unwrap()));
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    acknowledged_writes_survive_kill_9(format!(
        "sqlite://{}",
        dir.path().join("larder.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(larder_test_postgres),
    ignore = "LARDER_TEST_DATABASE_URL is not set"
)]
async fn postgres_acknowledged_writes_survive_kill_9() {
    acknowledged_writes_survive_kill_9(fresh_postgres_database().await).await;
}

/// A TCP proxy to PostgreSQL that the test can cut (dropping every connection and
/// refusing new ones) and restore: "the database went away" without stopping the server
/// other tests use.
pub struct CuttableProxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl CuttableProxy {
    pub async fn start(target: String) -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(tokio::sync::watch::channel(0u64).0);
        let (accept_up, accept_generation) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !accept_up.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let mut cut = accept_generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        CuttableProxy {
            port,
            up,
            generation,
        }
    }

    /// A fresh PostgreSQL test database and its URL through a new proxy.
    pub async fn in_front_of_a_fresh_database() -> (CuttableProxy, String) {
        let direct = fresh_postgres_database().await;
        let proxy = CuttableProxy::start("127.0.0.1:5432".to_string()).await;
        let through_proxy = direct.replacen(":5432/", &format!(":{}/", proxy.port), 1);
        (proxy, through_proxy)
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(larder_test_postgres),
    ignore = "LARDER_TEST_DATABASE_URL is not set"
)]
async fn postgres_outage_gives_503_and_recovers_without_restart() {
    let (proxy, through_proxy) = CuttableProxy::in_front_of_a_fresh_database().await;
    let app = TestApp::spawn_with_database(Backend::Postgres, through_proxy, |settings| {
        settings.database.pool_timeout = 1;
    })
    .await;
    let user = app.user().await;
    let item = app
        .create_item(&user, json!({"name": "before", "price": 1}))
        .await;

    proxy.cut();
    let started = Instant::now();
    for path in [format!("/items/{}", item["id"]), "/items".to_string()] {
        let response = app.get(&path).send().await.unwrap();
        assert!(response.headers().contains_key("retry-after"));
        assert_problem(response, StatusCode::SERVICE_UNAVAILABLE, None).await;
    }
    let response = app
        .post("/items")
        .bearer_auth(&user.token)
        .json(&json!({"name": "during", "price": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE, None).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "requests hung for {:?}",
        started.elapsed()
    );
    let response = app.get("/readyz").send().await.unwrap();
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE, None).await;
    let response = app.get("/healthz").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    proxy.restore();
    let mut recovered = false;
    for _ in 0..50 {
        let response = app.get("/readyz").send().await.unwrap();
        if response.status() == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        recovered,
        "larder did not recover after the database came back"
    );
    let response = app
        .get(&format!("/items/{}", item["id"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let after = app
        .create_item(&user, json!({"name": "after", "price": 1}))
        .await;
    assert_eq!(after["name"], "after");
}

/// Two processes on one PostgreSQL database with one `LARDER_JWT_SECRET`: a user made
/// through one logs in through the other, and each accepts the other's tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(larder_test_postgres),
    ignore = "LARDER_TEST_DATABASE_URL is not set"
)]
async fn postgres_processes_share_users_and_tokens() {
    let database = fresh_postgres_database().await;
    let shared = |settings: &mut larder::config::Settings| {
        settings.jwt_secret = Some(crate::process::SECRET.to_string())
    };
    let first = TestApp::spawn_with_database(Backend::Postgres, database.clone(), shared).await;
    let second = TestApp::spawn_with_database(Backend::Postgres, database, shared).await;
    let user = first.user().await;
    let token_from_second = second.login(&user.email, &user.password).await;
    for (app, token) in [(&first, &token_from_second), (&second, &user.token)] {
        let response = app
            .get("/users/me")
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.json::<Value>().await.unwrap()["id"], user.id);
    }
    let item = first
        .create_item(&user, json!({"name": "shared", "price": 1}))
        .await;
    let seen: Value = second.get_json(&format!("/items/{}", item["id"])).await;
    assert_eq!(seen, item);
}
