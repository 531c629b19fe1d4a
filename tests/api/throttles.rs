//! Abuse limits on accounts (SPEC.md §7): failed logins per (account, address) and per
//! address, registrations per address, the client address behind trusted proxies, and the
//! same budgets shared by two processes through Redis.

use reqwest::StatusCode;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, TestUser, assert_problem, redis_url};

both_backends!(
    an_attacker_elsewhere_cannot_lock_the_owner_out,
    a_success_clears_only_its_own_account_and_address,
    one_address_cannot_spray_many_accounts,
    a_spoofed_forwarded_header_from_an_untrusted_peer_changes_nothing,
    registrations_are_limited_per_address,
    wrong_current_passwords_are_throttled_per_account,
);

both_backends!(redis: two_servers_share_the_login_budget_through_redis);

/// A server behind a trusted proxy at 127.0.0.1 (the tests' own address), so each request
/// can say which client it comes from.
async fn behind_proxy(
    backend: Backend,
    configure: impl FnOnce(&mut larder::config::Settings),
) -> TestApp {
    TestApp::spawn_with(backend, |settings| {
        settings.trusted_proxies = "127.0.0.1/32, ::1".parse().unwrap();
        configure(settings);
    })
    .await
}

async fn login_from(app: &TestApp, from: &str, email: &str, password: &str) -> reqwest::Response {
    app.post("/auth/token")
        .header("x-forwarded-for", from)
        .form(&[("username", email), ("password", password)])
        .send()
        .await
        .unwrap()
}

async fn fail_from(app: &TestApp, from: &str, user: &TestUser) -> StatusCode {
    login_from(app, from, &user.email, "not the password")
        .await
        .status()
}

/// A 429 with a `Retry-After` within the window.
async fn assert_throttled(response: reqwest::Response, window_secs: u64, detail: &str) {
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=window_secs).contains(&retry_after), "{retry_after}");
    assert_problem(response, StatusCode::TOO_MANY_REQUESTS, Some(detail)).await;
}

const LOGIN_THROTTLED: &str = "Too many failed login attempts, please try later";

async fn an_attacker_elsewhere_cannot_lock_the_owner_out(backend: Backend) {
    let app = behind_proxy(backend, |_| {}).await;
    let owner = app.user().await;
    for _ in 0..10 {
        assert_eq!(
            fail_from(&app, "203.0.113.66", &owner).await,
            StatusCode::UNAUTHORIZED
        );
    }
    // The attacker's address is done with this account, even with the right password...
    let response = login_from(&app, "203.0.113.66", &owner.email, &owner.password).await;
    assert_throttled(response, 300, LOGIN_THROTTLED).await;
    // ...but the owner, from their own address, logs in as usual.
    let response = login_from(&app, "198.51.100.7", &owner.email, &owner.password).await;
    assert_eq!(response.status(), StatusCode::OK);
    // And the attacker may still try other accounts (the address budget is 100).
    let other = app.user().await;
    assert_eq!(
        fail_from(&app, "203.0.113.66", &other).await,
        StatusCode::UNAUTHORIZED
    );
}

async fn a_success_clears_only_its_own_account_and_address(backend: Backend) {
    let app = behind_proxy(backend, |settings| {
        settings.login_limit = "3/5m".parse().unwrap();
        settings.login_address_limit = "5/5m".parse().unwrap();
    })
    .await;
    let user = app.user().await;
    // Two failures on the own account, a success: that pair starts again.
    for _ in 0..2 {
        assert_eq!(
            fail_from(&app, "192.0.2.1", &user).await,
            StatusCode::UNAUTHORIZED
        );
    }
    let ok = login_from(&app, "192.0.2.1", &user.email, &user.password).await;
    assert_eq!(ok.status(), StatusCode::OK);
    for _ in 0..2 {
        assert_eq!(
            fail_from(&app, "192.0.2.1", &user).await,
            StatusCode::UNAUTHORIZED
        );
    }
    // The address has 4 failures now (the success did not clear them): one more fills its
    // budget of 5, and then even this user's right password waits.
    let other = app.user().await;
    assert_eq!(
        fail_from(&app, "192.0.2.1", &other).await,
        StatusCode::UNAUTHORIZED
    );
    let response = login_from(&app, "192.0.2.1", &user.email, &user.password).await;
    assert_throttled(response, 300, LOGIN_THROTTLED).await;
}

async fn one_address_cannot_spray_many_accounts(backend: Backend) {
    let app = behind_proxy(backend, |settings| {
        settings.login_address_limit = "20/5m".parse().unwrap();
    })
    .await;
    let own = app.user().await;
    // One wrong guess for each of 20 accounts, with a success on the own account in between.
    for n in 0..20 {
        let email = format!("victim{n}@example.com");
        let response = login_from(&app, "203.0.113.9", &email, "Summer2026!").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "attempt {n}");
        if n == 10 {
            let ok = login_from(&app, "203.0.113.9", &own.email, &own.password).await;
            assert_eq!(ok.status(), StatusCode::OK);
        }
    }
    let response = login_from(&app, "203.0.113.9", "victim99@example.com", "Summer2026!").await;
    assert_throttled(response, 300, LOGIN_THROTTLED).await;
    // Another address is not affected.
    let response = login_from(&app, "203.0.113.10", &own.email, &own.password).await;
    assert_eq!(response.status(), StatusCode::OK);
}

async fn a_spoofed_forwarded_header_from_an_untrusted_peer_changes_nothing(backend: Backend) {
    // No trusted proxies: every request comes from 127.0.0.1, whatever it claims.
    let app = TestApp::spawn_with(backend, |settings| {
        settings.login_limit = "3/5m".parse().unwrap();
    })
    .await;
    let user = app.user().await;
    for n in 0..3 {
        let spoofed = format!("203.0.113.{n}");
        let response = app
            .post("/auth/token")
            .header("x-forwarded-for", &spoofed)
            .header("forwarded", format!("for={spoofed}"))
            .form(&[("username", user.email.as_str()), ("password", "nope nope")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = login_from(&app, "198.51.100.200", &user.email, &user.password).await;
    assert_throttled(response, 300, LOGIN_THROTTLED).await;
}

async fn registrations_are_limited_per_address(backend: Backend) {
    let app = behind_proxy(backend, |settings| {
        settings.registration_limit = "3/1h".parse().unwrap();
    })
    .await;
    let register = |from: &'static str, n: usize| {
        app.post("/users")
            .header("x-forwarded-for", from)
            .json(&json!({"email": format!("new{n}@example.com"), "password": "plum-kettle-42"}))
            .send()
    };
    for n in 0..3 {
        assert_eq!(
            register("192.0.2.50", n).await.unwrap().status(),
            StatusCode::CREATED
        );
    }
    let refused = register("192.0.2.50", 3).await.unwrap();
    assert_throttled(
        refused,
        3600,
        "Too many registrations from this address, please try later",
    )
    .await;
    // Nothing was stored for the refused request: the same email registers from elsewhere.
    assert_eq!(
        register("192.0.2.51", 3).await.unwrap().status(),
        StatusCode::CREATED
    );
}

async fn two_servers_share_the_login_budget_through_redis(backend: Backend) {
    let url = redis_url().expect("this build saw LARDER_TEST_REDIS_URL");
    let prefix = format!("larder-test:{}:", uuid::Uuid::new_v4().simple());
    let configure = |settings: &mut larder::config::Settings| {
        settings.login_limit = "4/5m".parse().unwrap();
        settings.redis_url = Some(url.clone());
        settings.redis_prefix = prefix.clone();
    };
    // Each server on its own database: the failures count for the email whether or not it
    // is an account there, so only Redis can make their counts one.
    let first = behind_proxy(backend, configure).await;
    let second = behind_proxy(backend, configure).await;
    let user = first.user().await;
    for app in [&first, &second, &first, &second] {
        assert_eq!(
            fail_from(app, "203.0.113.5", &user).await,
            StatusCode::UNAUTHORIZED
        );
    }
    for app in [&first, &second] {
        let response = login_from(app, "203.0.113.5", &user.email, &user.password).await;
        assert_throttled(response, 300, LOGIN_THROTTLED).await;
    }
    // The owner from another address is not affected.
    let elsewhere = login_from(&first, "203.0.113.6", &user.email, &user.password).await;
    assert_eq!(elsewhere.status(), StatusCode::OK);
}

/// A stolen token is no way around the login budget: wrong current passwords on
/// `PUT /users/me/password` spend the account's budget too, and then even the right one waits.
async fn wrong_current_passwords_are_throttled_per_account(backend: Backend) {
    let app = TestApp::spawn_with(backend, |settings| {
        settings.login_limit = "3/5m".parse().unwrap();
    })
    .await;
    let user = app.user().await;
    let change = |current: &str| {
        app.request(reqwest::Method::PUT, "/users/me/password")
            .bearer_auth(&user.token)
            .json(&json!({"current_password": current, "new_password": "a brand new passphrase"}))
            .send()
    };
    for _ in 0..3 {
        let response = change("not the password").await.unwrap();
        assert_problem(response, StatusCode::FORBIDDEN, Some("Incorrect password")).await;
    }
    let response = change(&user.password).await.unwrap();
    assert_throttled(response, 300, LOGIN_THROTTLED).await;
    // Nothing changed: the old password still logs in.
    assert!(!app.login(&user.email, &user.password).await.is_empty());
}
