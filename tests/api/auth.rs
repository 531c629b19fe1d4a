//! §2: users, the password flow, bearer tokens and admins.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, assert_problem, error_locs};

both_backends!(
    a_username_longer_than_an_email_is_422_before_any_work,
    tokens_name_their_installation_audience_and_id,
    a_recreated_database_refuses_the_old_ones_tokens,
    setting_a_password_ends_the_tokens_issued_before,
    registration_answers_201_with_location_and_no_secrets,
    emails_are_unique_case_insensitively,
    concurrent_registrations_of_one_email_give_one_201_and_one_409,
    registration_reports_every_bad_field,
    nobody_becomes_admin_by_registering,
    tokens_come_from_forms_and_json,
    wrong_credentials_are_401_with_a_bearer_challenge,
    missing_login_fields_are_422,
    protected_routes_need_a_valid_token,
    forged_expired_and_foreign_tokens_are_invalid_tokens,
    a_deleted_users_token_stops_working_at_once,
    admins_delete_users,
    repeated_failed_logins_are_throttled,
    weak_passwords_are_422_and_store_nothing,
    users_read_themselves_and_admins_read_anyone,
);

async fn registration_answers_201_with_location_and_no_secrets(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .post("/users")
        .json(&json!({"email": "Ann@Example.com", "password": "correct horse", "full_name": "Ann"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["content-type"], "application/json");
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/users/{}", body["id"]));
    assert_eq!(body["email"], "Ann@Example.com");
    assert_eq!(body["full_name"], "Ann");
    assert_eq!(body["role"], "user");
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    let text = body.to_string();
    assert!(
        !text.contains("correct horse") && !text.contains("argon2") && !text.contains("password")
    );
}

async fn emails_are_unique_case_insensitively(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app
        .post("/users")
        .json(&json!({"email": "bob@example.com", "password": "plum-kettle-42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let again = app
        .post("/users")
        .json(&json!({"email": "BOB@Example.COM", "password": "quiet-harbor-77"}))
        .send()
        .await
        .unwrap();
    assert_problem(again, StatusCode::CONFLICT, Some("User already exists")).await;
}

async fn concurrent_registrations_of_one_email_give_one_201_and_one_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for round in 0..5 {
        let email = format!("race{round}@example.com");
        let requests = (0..4).map(|i| {
            let email = if i % 2 == 0 {
                email.clone()
            } else {
                email.to_uppercase()
            };
            app.post("/users")
                .json(&json!({"email": email, "password": "plum-kettle-42"}))
                .send()
        });
        let statuses: Vec<StatusCode> = futures::future::join_all(requests)
            .await
            .into_iter()
            .map(|r| r.unwrap().status())
            .collect();
        assert_eq!(
            statuses
                .iter()
                .filter(|s| **s == StatusCode::CREATED)
                .count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses
                .iter()
                .filter(|s| **s == StatusCode::CONFLICT)
                .count(),
            3,
            "{statuses:?}"
        );
    }
}

async fn registration_reports_every_bad_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .post("/users")
        .json(&json!({"email": "not-an-email", "password": "short"}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(
        error_locs(&body),
        vec![json!(["body", "email"]), json!(["body", "password"])]
    );
    assert_eq!(body["errors"][0]["type"], "value_error");
    assert_eq!(body["errors"][1]["type"], "string_too_short");
    let response = app
        .post("/users")
        .json(&json!({"password": "plum-kettle-42"}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&body), vec![json!(["body", "email"])]);
    assert_eq!(body["errors"][0]["type"], "missing");
}

async fn nobody_becomes_admin_by_registering(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .post("/users")
        .json(&json!({"email": "eve@example.com", "password": "plum-kettle-42", "role": "admin", "is_admin": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.json::<Value>().await.unwrap()["role"], "user");
}

async fn tokens_come_from_forms_and_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let response = app
        .post("/auth/token")
        .form(&[
            ("grant_type", "password"),
            ("username", user.email.as_str()),
            ("password", user.password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(
        body["expires_in"], 900,
        "access tokens live 15 minutes by default"
    );
    assert_eq!(body["refresh_expires_in"], 30 * 24 * 3600);
    assert!(body["refresh_token"].as_str().unwrap().len() >= 32);
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3);

    let response = app
        .post("/auth/token")
        .json(&json!({"username": user.email.to_uppercase(), "password": user.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let token = response.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let me = app
        .get("/users/me")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["id"], user.id);
    assert_eq!(me["email"], user.email);
}

async fn wrong_credentials_are_401_with_a_bearer_challenge(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    for (username, password) in [
        (user.email.as_str(), "wrong password"),
        ("nobody@example.com", "whatever1"),
    ] {
        let response = app
            .post("/auth/token")
            .form(&[("username", username), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_problem(
            response,
            StatusCode::UNAUTHORIZED,
            Some("Incorrect email or password"),
        )
        .await;
    }
}

async fn missing_login_fields_are_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .post("/auth/token")
        .form(&[("username", "a@b.co")])
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&body), vec![json!(["body", "password"])]);
    let response = app
        .post("/auth/token")
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, None).await;
}

async fn protected_routes_need_a_valid_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let response = app
        .get("/protected")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"data": "secret"})
    );
    for path in ["/protected", "/users/me"] {
        let response = app.get(path).send().await.unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_problem(
            response,
            StatusCode::UNAUTHORIZED,
            Some("Not authenticated"),
        )
        .await;
        let response = app
            .get(path)
            .header("authorization", "Basic dXNlcjpwYXNz")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_problem(response, StatusCode::UNAUTHORIZED, None).await;
    }
}

fn forge(header: Value, claims: Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        signature
    )
}

fn sign(secret: &[u8], claims: Value, algorithm: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

async fn forged_expired_and_foreign_tokens_are_invalid_tokens(backend: Backend) {
    let secret = "an-explicit-test-secret-of-32-bytes!!";
    let app = TestApp::spawn_with(backend, |settings| {
        settings.jwt_secret = Some(secret.into())
    })
    .await;
    let user = app.user().await;
    let other = app.user().await;
    let now = chrono::Utc::now().timestamp();
    let sub = user.id.to_string();
    // Every claim a larder token carries; each bad token below differs in one thing only.
    let issuer = app.state.tokens.issuer().to_owned();
    // The user's real session: only the claims under test are wrong.
    let sid = token_claims(&user.token)["sid"].clone();
    let claims = |sub: &str, iat: i64, exp: i64| json!({"sub": sub, "sid": sid, "iat": iat, "exp": exp, "iss": issuer, "aud": "larder", "jti": "forged"});

    let (head, _) = user.token.rsplit_once('.').unwrap();
    let tampered_claims = {
        let parts: Vec<&str> = user.token.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims("999", now, now + 600).to_string()),
            parts[2]
        )
    };
    let mut other_issuer = claims(&sub, now, now + 600);
    other_issuer["iss"] = json!("larder:another-installation");
    let mut other_audience = claims(&sub, now, now + 600);
    other_audience["aud"] = json!("another-service");
    let mut no_issuer = claims(&sub, now, now + 600);
    no_issuer.as_object_mut().unwrap().remove("iss");
    let bad_tokens = vec![
        (
            "another installation",
            sign(
                secret.as_bytes(),
                other_issuer,
                jsonwebtoken::Algorithm::HS256,
            ),
        ),
        (
            "another audience",
            sign(
                secret.as_bytes(),
                other_audience,
                jsonwebtoken::Algorithm::HS256,
            ),
        ),
        (
            "no issuer",
            sign(secret.as_bytes(), no_issuer, jsonwebtoken::Algorithm::HS256),
        ),
        (
            "a lifetime over 24 hours",
            sign(
                secret.as_bytes(),
                claims(&sub, now, now + 86_401),
                jsonwebtoken::Algorithm::HS256,
            ),
        ),
        ("garbage", "not-a-jwt".to_string()),
        ("bad signature", format!("{head}.c2lnbmF0dXJl")),
        ("tampered claims", tampered_claims),
        (
            "alg none",
            forge(
                json!({"alg": "none", "typ": "JWT"}),
                claims(&sub, now, now + 600),
                "",
            ),
        ),
        (
            "other key",
            sign(
                b"another-secret-another-secret-xx",
                claims(&sub, now, now + 600),
                jsonwebtoken::Algorithm::HS256,
            ),
        ),
        (
            "other algorithm",
            sign(
                secret.as_bytes(),
                claims(&sub, now, now + 600),
                jsonwebtoken::Algorithm::HS512,
            ),
        ),
        (
            "expired",
            sign(
                secret.as_bytes(),
                claims(&sub, now - 7200, now - 3600),
                jsonwebtoken::Algorithm::HS256,
            ),
        ),
        (
            "from the future",
            sign(
                secret.as_bytes(),
                claims(&sub, now + 3600, now + 7200),
                jsonwebtoken::Algorithm::HS256,
            ),
        ),
        (
            "no exp",
            sign(
                secret.as_bytes(),
                json!({"sub": sub, "sid": sid, "iat": now, "iss": issuer, "aud": "larder", "jti": "no-exp"}),
                jsonwebtoken::Algorithm::HS256,
            ),
        ),
        (
            "no session",
            sign(
                secret.as_bytes(),
                json!({"sub": sub, "iat": now, "exp": now + 600, "iss": issuer, "aud": "larder", "jti": "no-sid"}),
                jsonwebtoken::Algorithm::HS256,
            ),
        ),
        (
            "another user's session",
            sign(
                secret.as_bytes(),
                json!({"sub": other.id.to_string(), "sid": sid, "iat": now, "exp": now + 600, "iss": issuer, "aud": "larder", "jti": "x"}),
                jsonwebtoken::Algorithm::HS256,
            ),
        ),
        (
            "unknown session",
            sign(
                secret.as_bytes(),
                json!({"sub": sub, "sid": "0123456789abcdef0123456789abcdef", "iat": now, "exp": now + 600, "iss": issuer, "aud": "larder", "jti": "x"}),
                jsonwebtoken::Algorithm::HS256,
            ),
        ),
        (
            "unknown user",
            sign(
                secret.as_bytes(),
                claims("987654", now, now + 600),
                jsonwebtoken::Algorithm::HS256,
            ),
        ),
    ];
    for (what, token) in bad_tokens {
        let response = app
            .get("/protected")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer error="invalid_token""#,
            "{what}"
        );
        assert_problem(
            response,
            StatusCode::UNAUTHORIZED,
            Some("Could not validate credentials"),
        )
        .await;
    }
    // The same secret really signs valid tokens.
    let good = sign(
        secret.as_bytes(),
        claims(&sub, now, now + 600),
        jsonwebtoken::Algorithm::HS256,
    );
    let response = app
        .get("/protected")
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn a_deleted_users_token_stops_working_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin().await;
    let user = app.user().await;
    let response = app
        .get("/users/me")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .request(
            reqwest::Method::DELETE,
            &format!("/admin/users/{}", user.id),
        )
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .get("/users/me")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    assert_problem(response, StatusCode::UNAUTHORIZED, None).await;
    // Their login is gone too.
    let response = app
        .post("/auth/token")
        .form(&[
            ("username", user.email.as_str()),
            ("password", user.password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_problem(
        response,
        StatusCode::UNAUTHORIZED,
        Some("Incorrect email or password"),
    )
    .await;
}

async fn admins_delete_users(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin().await;
    let user = app.user().await;
    let other = app.user().await;
    let path = format!("/admin/users/{}", other.id);
    let delete = |token: Option<&str>, path: &str| {
        let request = app.request(reqwest::Method::DELETE, path);
        match token {
            Some(token) => request.bearer_auth(token).send(),
            None => request.send(),
        }
    };
    let response = delete(None, &path).await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_problem(response, StatusCode::UNAUTHORIZED, None).await;
    let response = delete(Some(&user.token), &path).await.unwrap();
    assert_problem(
        response,
        StatusCode::FORBIDDEN,
        Some("Only admins can delete"),
    )
    .await;
    let response = delete(Some(&admin.token), "/admin/users/abc")
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&body), vec![json!(["path", "user_id"])]);
    let response = delete(Some(&admin.token), "/admin/users/999999")
        .await
        .unwrap();
    assert_problem(response, StatusCode::NOT_FOUND, Some("User not found")).await;
    let response = delete(Some(&admin.token), &path).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"deleted": true})
    );
    let response = delete(Some(&admin.token), &path).await.unwrap();
    assert_problem(response, StatusCode::NOT_FOUND, Some("User not found")).await;

    // The last admin cannot be removed, not even by themselves; with a second admin, one can.
    let own = format!("/admin/users/{}", admin.id);
    let response = delete(Some(&admin.token), &own).await.unwrap();
    assert_problem(
        response,
        StatusCode::CONFLICT,
        Some("Cannot remove the last admin"),
    )
    .await;
    assert_eq!(
        app.get("/users/me")
            .bearer_auth(&admin.token)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let second = app.admin().await;
    let response = delete(Some(&second.token), &own).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = delete(Some(&second.token), &format!("/admin/users/{}", second.id))
        .await
        .unwrap();
    assert_problem(
        response,
        StatusCode::CONFLICT,
        Some("Cannot remove the last admin"),
    )
    .await;
}

/// SPEC.md §7 password policy: common passwords and the email's local part are refused with
/// the field's `loc`, and nothing is stored.
async fn weak_passwords_are_422_and_store_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (email, password) in [
        ("weak1@example.com", "password123"),
        ("weak2@example.com", "Qwerty123"),
        ("weak3@example.com", "iloveyou"),
        ("jonathan.smith@example.com", "JONATHAN.SMITH-2026"),
    ] {
        let response = app
            .post("/users")
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
        assert_eq!(
            error_locs(&body),
            vec![json!(["body", "password"])],
            "{password}"
        );
        assert_eq!(body["errors"][0]["type"], "value_error");
        // The refused registration left no account: the address can still be registered.
        let again = app
            .post("/users")
            .json(&json!({"email": email, "password": "plum-kettle-42"}))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::CREATED, "{email}");
    }
}

async fn repeated_failed_logins_are_throttled(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    for _ in 0..10 {
        let response = app
            .post("/auth/token")
            .form(&[
                ("username", user.email.as_str()),
                ("password", "wrong password"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // Now even the right password waits: the email is locked for the window.
    let response = app
        .post("/auth/token")
        .form(&[
            ("username", user.email.as_str()),
            ("password", user.password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry_after), "{retry_after}");
    assert_problem(response, StatusCode::TOO_MANY_REQUESTS, None).await;
}

async fn users_read_themselves_and_admins_read_anyone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin().await;
    let user = app.user().await;
    let other = app.user().await;
    let own = app
        .get(&format!("/users/{}", user.id))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    let foreign = app
        .get(&format!("/users/{}", other.id))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_problem(foreign, StatusCode::FORBIDDEN, None).await;
    let by_admin = app
        .get(&format!("/users/{}", other.id))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(by_admin.status(), StatusCode::OK);
    assert_eq!(
        by_admin.json::<Value>().await.unwrap()["email"],
        other.email
    );
    let missing = app
        .get("/users/424242")
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_problem(missing, StatusCode::NOT_FOUND, Some("User not found")).await;
}

/// A `username` over 254 characters (no email is longer) is refused before it is hashed or
/// kept as a throttle key, from a form and from JSON alike.
async fn a_username_longer_than_an_email_is_422_before_any_work(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let long = format!("{}@example.com", "a".repeat(243));
    assert_eq!(long.len(), 255);
    let response = app
        .post("/auth/token")
        .form(&[("username", long.as_str()), ("password", "whatever1")])
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&body), vec![json!(["body", "username"])]);
    assert_eq!(body["errors"][0]["type"], "string_too_long");
    let response = app
        .post("/auth/token")
        .json(&json!({"username": "b".repeat(1_000_000), "password": "whatever1"}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&body), vec![json!(["body", "username"])]);
    // 254 characters is a username like any other: a wrong one is 401.
    let fits = format!("{}@example.com", "a".repeat(242));
    let response = app
        .post("/auth/token")
        .form(&[("username", fits.as_str()), ("password", "whatever1")])
        .send()
        .await
        .unwrap();
    assert_problem(
        response,
        StatusCode::UNAUTHORIZED,
        Some("Incorrect email or password"),
    )
    .await;
}

/// The claims of a token, decoded without checking it.
fn token_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn tokens_name_their_installation_audience_and_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let claims = token_claims(&user.token);
    assert_eq!(claims["sub"], user.id.to_string());
    assert_eq!(claims["iss"], app.state.tokens.issuer());
    assert!(claims["iss"].as_str().unwrap().starts_with("larder:"));
    assert_eq!(claims["aud"], "larder");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    assert_eq!(
        claims["sid"].as_str().unwrap().len(),
        32,
        "names its session"
    );
    let again = token_claims(&app.login(&user.email, &user.password).await);
    assert!(!claims["jti"].as_str().unwrap().is_empty());
    assert_ne!(claims["jti"], again["jti"], "every token has its own id");
}

/// A database recreated beside a kept secret is another installation: the old database's
/// tokens do not authenticate whoever now has their user id.
async fn a_recreated_database_refuses_the_old_ones_tokens(backend: Backend) {
    let secret = "one-secret-kept-across-two-databases!";
    let keep = |settings: &mut larder::config::Settings| settings.jwt_secret = Some(secret.into());
    let old = TestApp::spawn_with(backend, keep).await;
    let old_user = old.user().await;
    let new = TestApp::spawn_with(backend, keep).await;
    let new_user = new.user().await;
    assert_eq!(
        new_user.id, old_user.id,
        "the same id names another person now"
    );
    assert_ne!(old.state.tokens.issuer(), new.state.tokens.issuer());
    let response = new
        .get("/users/me")
        .bearer_auth(&old_user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    assert_problem(
        response,
        StatusCode::UNAUTHORIZED,
        Some("Could not validate credentials"),
    )
    .await;
    let response = new
        .get("/users/me")
        .bearer_auth(&new_user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// A password set by any path (here `larder admin create`'s) ends the tokens issued before.
async fn setting_a_password_ends_the_tokens_issued_before(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let me = |token: &str| app.get("/users/me").bearer_auth(token).send();
    assert_eq!(me(&user.token).await.unwrap().status(), StatusCode::OK);
    // Token times are whole seconds: the change comes in a later second than the token.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let email = larder::domain::user::Email::parse(&user.email).unwrap();
    let password =
        larder::domain::user::Password::parse("a brand new passphrase", Some(&email)).unwrap();
    let hash = larder::auth::password::hash(&password).await.unwrap();
    larder::store::users::upsert_admin(&app.state.db, &email, Some(&hash))
        .await
        .unwrap();
    let response = me(&user.token).await.unwrap();
    assert_problem(
        response,
        StatusCode::UNAUTHORIZED,
        Some("Could not validate credentials"),
    )
    .await;
    let token = app.login(&user.email, "a brand new passphrase").await;
    assert_eq!(me(&token).await.unwrap().status(), StatusCode::OK);
}
