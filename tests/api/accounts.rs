//! Accounts and sessions (SPEC §7): listing users, profile and password changes, deletion of
//! oneself, admin changes with the last-active-admin rule, refresh tokens, revocation and
//! the session list.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, TestUser, assert_problem, error_locs};

both_backends!(
    admins_list_users_by_pages_and_filters,
    users_change_their_profile,
    changing_the_password_ends_every_session,
    users_delete_themselves_but_the_last_admin_cannot,
    admins_change_users_and_an_active_admin_always_remains,
    a_deactivated_user_is_refused_after_the_right_password_only,
    refresh_tokens_rotate_and_a_replay_ends_the_session,
    revocation_ends_the_session_of_any_token,
    users_list_and_end_their_sessions,
);

/// The token is refused as RFC 6750 says: 401 `invalid_token`.
async fn assert_token_refused(app: &TestApp, token: &str) {
    let response = app
        .get("/users/me")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some(r#"Bearer error="invalid_token""#)
    );
    assert_problem(
        response,
        StatusCode::UNAUTHORIZED,
        Some("Could not validate credentials"),
    )
    .await;
}

async fn assert_token_works(app: &TestApp, token: &str) {
    let response = app
        .get("/protected")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn refresh(app: &TestApp, refresh_token: &str) -> reqwest::Response {
    app.post("/auth/token")
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .unwrap()
}

async fn assert_invalid_grant(response: reqwest::Response) {
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body = assert_problem(response, StatusCode::BAD_REQUEST, None).await;
    assert_eq!(body["error"], "invalid_grant");
}

async fn login_status(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.post("/auth/token")
        .form(&[("username", email), ("password", password)])
        .send()
        .await
        .unwrap()
}

async fn register(app: &TestApp, email: &str) -> TestUser {
    let password = "correct horse battery";
    let response = app
        .post("/users")
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let token = app.login(email, password).await;
    TestUser {
        id,
        email: email.to_string(),
        password: password.to_string(),
        token,
    }
}

async fn admins_list_users_by_pages_and_filters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin().await;
    let mut ids = vec![admin.id];
    for name in ["pat.one", "pat.two", "Pat.Three", "quinn", "pat_x"] {
        ids.push(register(&app, &format!("{name}@example.com")).await.id);
    }
    let list =
        |query: &str, token: &str| app.get(&format!("/users{query}")).bearer_auth(token).send();
    // Pages of 2 by id, through the cursors, show everyone once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("?limit=2&cursor={cursor}"),
            None => "?limit=2".to_string(),
        };
        let response = list(&query, &admin.token).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let page: Value = response.json().await.unwrap();
        let users = page["users"].as_array().unwrap();
        assert!(users.len() <= 2);
        for user in users {
            assert!(user.get("password").is_none() && user.get("password_hash").is_none());
            assert_eq!(user["is_active"], true);
            seen.push(user["id"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    // A case-insensitive prefix; `_` is a character, not a wildcard.
    let page: Value = list("?email=PAT.", &admin.token)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let emails: Vec<&str> = page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails,
        [
            "pat.one@example.com",
            "pat.two@example.com",
            "Pat.Three@example.com"
        ]
    );
    assert_eq!(page["next_cursor"], Value::Null);
    let page: Value = list("?email=pat_", &admin.token)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["users"].as_array().unwrap().len(), 1);
    let page: Value = list("?role=admin", &admin.token)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["users"].as_array().unwrap().len(), 1);
    assert_eq!(page["users"][0]["id"], admin.id);
    // Admins only.
    let response = app.get("/users").send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_problem(response, StatusCode::UNAUTHORIZED, None).await;
    let user = app.user().await;
    assert_problem(
        list("", &user.token).await.unwrap(),
        StatusCode::FORBIDDEN,
        Some("Not enough permissions"),
    )
    .await;
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=x", "limit"),
        ("?limit=101", "limit"),
        ("?cursor=abc", "cursor"),
        ("?role=owner", "role"),
    ] {
        let body = assert_problem(
            list(query, &admin.token).await.unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        )
        .await;
        assert_eq!(error_locs(&body), vec![json!(["query", field])], "{query}");
    }
}

async fn users_change_their_profile(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let other = app.user().await;
    let patch = |body: Value| {
        app.request(reqwest::Method::PATCH, "/users/me")
            .bearer_auth(&user.token)
            .json(&body)
            .send()
    };
    let response = patch(json!({"full_name": "Ann Example"})).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["full_name"], "Ann Example");
    assert_eq!(body["email"], user.email);
    // Another account's email, in any case, is taken.
    let response = patch(json!({"email": other.email.to_uppercase()}))
        .await
        .unwrap();
    assert_problem(response, StatusCode::CONFLICT, Some("User already exists")).await;
    let body = assert_problem(
        patch(json!({"email": "not-an-email", "full_name": 5}))
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        None,
    )
    .await;
    assert_eq!(
        error_locs(&body),
        vec![json!(["body", "email"]), json!(["body", "full_name"])]
    );
    let new_email = format!("renamed-{}", user.email);
    let response = patch(json!({"email": new_email, "full_name": null}))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["email"], new_email);
    assert_eq!(body["full_name"], Value::Null);
    // The token still works; the new email logs in, the old one no longer does.
    assert_token_works(&app, &user.token).await;
    app.login(&new_email, &user.password).await;
    assert_eq!(
        login_status(&app, &user.email, &user.password)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let response = app
        .request(reqwest::Method::PATCH, "/users/me")
        .json(&json!({"full_name": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, None).await;
}

async fn changing_the_password_ends_every_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let (laptop, laptop_refresh) = app.login_pair(&user.email, &user.password).await;
    let put = |body: Value| {
        app.request(reqwest::Method::PUT, "/users/me/password")
            .bearer_auth(&user.token)
            .json(&body)
            .send()
    };
    let response = put(json!({"current_password": "wrong password here", "new_password": "a brand new passphrase"}))
        .await
        .unwrap();
    assert_problem(response, StatusCode::FORBIDDEN, Some("Incorrect password")).await;
    for (body, field) in [
        (
            json!({"current_password": user.password, "new_password": user.password}),
            "new_password",
        ),
        (
            json!({"current_password": user.password, "new_password": "short"}),
            "new_password",
        ),
        (
            json!({"current_password": user.password, "new_password": "password123"}),
            "new_password",
        ),
        (
            json!({"new_password": "a brand new passphrase"}),
            "current_password",
        ),
    ] {
        let problem = assert_problem(
            put(body).await.unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        )
        .await;
        assert_eq!(error_locs(&problem), vec![json!(["body", field])]);
    }
    // Nothing changed so far.
    assert_token_works(&app, &user.token).await;
    let response =
        put(json!({"current_password": user.password, "new_password": "a brand new passphrase"}))
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_token_refused(&app, &user.token).await;
    assert_token_refused(&app, &laptop).await;
    assert_invalid_grant(refresh(&app, &laptop_refresh).await).await;
    assert_eq!(
        login_status(&app, &user.email, &user.password)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let token = app.login(&user.email, "a brand new passphrase").await;
    assert_token_works(&app, &token).await;
}

async fn users_delete_themselves_but_the_last_admin_cannot(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin().await;
    let user = app.user().await;
    app.create_item(&user, json!({"name": "jam", "price": 1.0, "quantity": 1}))
        .await;
    let delete_me = |token: &str| {
        app.request(reqwest::Method::DELETE, "/users/me")
            .bearer_auth(token)
            .send()
    };
    let response = delete_me(&user.token).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_token_refused(&app, &user.token).await;
    assert_eq!(
        login_status(&app, &user.email, &user.password)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(
        app.all_item_ids(100).await.is_empty(),
        "their items went too"
    );
    assert_problem(
        delete_me(&admin.token).await.unwrap(),
        StatusCode::CONFLICT,
        Some("Cannot remove the last admin"),
    )
    .await;
    assert_token_works(&app, &admin.token).await;
    let response = app
        .request(reqwest::Method::DELETE, "/users/me")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, None).await;
}

async fn admins_change_users_and_an_active_admin_always_remains(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin().await;
    let user = app.user().await;
    let patch = |id: i64, token: &str, body: Value| {
        app.request(reqwest::Method::PATCH, &format!("/users/{id}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    // The only active admin can be neither demoted nor deactivated, by anyone.
    for body in [json!({"role": "user"}), json!({"is_active": false})] {
        assert_problem(
            patch(admin.id, &admin.token, body).await.unwrap(),
            StatusCode::CONFLICT,
            Some("Cannot remove the last admin"),
        )
        .await;
    }
    let response = patch(
        user.id,
        &admin.token,
        json!({"role": "admin", "full_name": "Bo"}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["role"].clone(), body["full_name"].clone()),
        (json!("admin"), json!("Bo"))
    );
    // Now the first admin may step down; the second is then the last.
    let response = patch(admin.id, &user.token, json!({"role": "user"}))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_problem(
        patch(user.id, &user.token, json!({"is_active": false}))
            .await
            .unwrap(),
        StatusCode::CONFLICT,
        Some("Cannot remove the last admin"),
    )
    .await;
    // Non-admins may not; unknown ids, bad ids and bad fields are refused.
    assert_problem(
        patch(user.id, &admin.token, json!({"role": "user"}))
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
        Some("Not enough permissions"),
    )
    .await;
    assert_problem(
        patch(987_654, &user.token, json!({"full_name": "x"}))
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        Some("User not found"),
    )
    .await;
    let body = assert_problem(
        patch(
            admin.id,
            &user.token,
            json!({"role": "owner", "is_active": "no"}),
        )
        .await
        .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        None,
    )
    .await;
    assert_eq!(
        error_locs(&body),
        vec![json!(["body", "role"]), json!(["body", "is_active"])]
    );
    let response = app
        .request(reqwest::Method::PATCH, "/users/abc")
        .bearer_auth(&user.token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
}

async fn a_deactivated_user_is_refused_after_the_right_password_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin().await;
    let user = app.user().await;
    let (_, refresh_token) = app.login_pair(&user.email, &user.password).await;
    let set_active = |active: bool| {
        app.request(reqwest::Method::PATCH, &format!("/users/{}", user.id))
            .bearer_auth(&admin.token)
            .json(&json!({"is_active": active}))
            .send()
    };
    let response = set_active(false).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["is_active"], false);
    // At once: the token, the refresh token.
    assert_token_refused(&app, &user.token).await;
    assert_invalid_grant(refresh(&app, &refresh_token).await).await;
    // A wrong password learns nothing; the right one learns the account is inactive.
    let response = login_status(&app, &user.email, "not the password at all").await;
    assert_problem(
        response,
        StatusCode::UNAUTHORIZED,
        Some("Incorrect email or password"),
    )
    .await;
    let response = login_status(&app, &user.email, &user.password).await;
    assert_problem(response, StatusCode::FORBIDDEN, Some("Inactive user")).await;
    // Reactivated, they log in again; the old sessions stay over.
    assert_eq!(set_active(true).await.unwrap().status(), StatusCode::OK);
    assert_token_refused(&app, &user.token).await;
    let token = app.login(&user.email, &user.password).await;
    assert_token_works(&app, &token).await;
}

async fn refresh_tokens_rotate_and_a_replay_ends_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let (access, first) = app.login_pair(&user.email, &user.password).await;
    let response = refresh(&app, &first).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["refresh_expires_in"], 30 * 24 * 3600);
    let second = body["refresh_token"].as_str().unwrap().to_string();
    let access2 = body["access_token"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert_token_works(&app, &access2).await;
    assert_token_works(&app, &access).await;
    // JSON works too; the second is spent by this.
    let response = app
        .post("/auth/token")
        .json(&json!({"grant_type": "refresh_token", "refresh_token": second}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let third = response.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    // A replay of a spent token: refused, and the whole session ends.
    assert_invalid_grant(refresh(&app, &first).await).await;
    assert_token_refused(&app, &access).await;
    assert_token_refused(&app, &access2).await;
    assert_invalid_grant(refresh(&app, &third).await).await;
    // Other sessions are untouched.
    assert_token_works(&app, &user.token).await;
    assert_invalid_grant(refresh(&app, "no-such-refresh-token").await).await;
    let response = app
        .post("/auth/token")
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&body), vec![json!(["body", "refresh_token"])]);
    let response = app
        .post("/auth/token")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&body), vec![json!(["body", "grant_type"])]);
}

async fn revocation_ends_the_session_of_any_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let revoke = |token: &str| app.post("/auth/revoke").form(&[("token", token)]).send();
    // A refresh token: its session ends, access token included.
    let (access, refresh_token) = app.login_pair(&user.email, &user.password).await;
    let response = revoke(&refresh_token).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_token_refused(&app, &access).await;
    assert_invalid_grant(refresh(&app, &refresh_token).await).await;
    // An access token (JSON accepted too): its session ends, refresh token included.
    let (access, refresh_token) = app.login_pair(&user.email, &user.password).await;
    let response = app
        .post("/auth/revoke")
        .json(&json!({"token": access, "token_type_hint": "access_token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_token_refused(&app, &access).await;
    assert_invalid_grant(refresh(&app, &refresh_token).await).await;
    // Unknown and already revoked tokens: the same answer.
    for token in ["never-issued", refresh_token.as_str()] {
        assert_eq!(revoke(token).await.unwrap().status(), StatusCode::OK);
    }
    // The user's other session is untouched.
    assert_token_works(&app, &user.token).await;
    let response = app
        .post("/auth/revoke")
        .form(&[("token_type_hint", "x")])
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert_eq!(error_locs(&body), vec![json!(["body", "token"])]);
}

async fn users_list_and_end_their_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let other = app.user().await;
    let response = app
        .post("/auth/token")
        .header("user-agent", "phone/1.0")
        .form(&[
            ("username", user.email.as_str()),
            ("password", user.password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let phone = response.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let list = |token: &str| app.get("/users/me/sessions").bearer_auth(token).send();
    let response = list(&user.token).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let sessions: Value = response.json().await.unwrap();
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    for session in sessions {
        for field in ["id", "created_at", "last_used_at"] {
            assert!(session[field].is_string(), "{field}");
        }
    }
    assert_eq!(sessions[0]["current"], true);
    assert_eq!(sessions[1]["user_agent"], "phone/1.0");
    let phone_session = sessions[1]["id"].as_str().unwrap().to_string();
    let end = |token: &str, id: &str| {
        app.request(reqwest::Method::DELETE, &format!("/users/me/sessions/{id}"))
            .bearer_auth(token)
            .send()
    };
    // Someone else's session, or an unknown one: 404.
    for (token, id) in [
        (other.token.as_str(), phone_session.as_str()),
        (user.token.as_str(), "nope"),
    ] {
        assert_problem(
            end(token, id).await.unwrap(),
            StatusCode::NOT_FOUND,
            Some("Session not found"),
        )
        .await;
    }
    assert_token_works(&app, &phone).await;
    let response = end(&user.token, &phone_session).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_token_refused(&app, &phone).await;
    let sessions: Value = list(&user.token).await.unwrap().json().await.unwrap();
    assert_eq!(sessions.as_array().unwrap().len(), 1);
    assert_problem(
        end(&user.token, &phone_session).await.unwrap(),
        StatusCode::NOT_FOUND,
        Some("Session not found"),
    )
    .await;
    let response = app.get("/users/me/sessions").send().await.unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, None).await;
}

/// Two server processes on one PostgreSQL database: a session ended through one is refused
/// by the other on the very next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(larder_test_postgres),
    ignore = "LARDER_TEST_DATABASE_URL is not set"
)]
async fn a_session_ended_through_one_process_is_refused_by_another() {
    let secret = "one-secret-shared-by-two-processes!!";
    let first = TestApp::spawn_with(Backend::Postgres, |settings| {
        settings.jwt_secret = Some(secret.into())
    })
    .await;
    let larder::config::DatabaseUrl::Postgres(url) = first.database_url.clone() else {
        unreachable!("a PostgreSQL app")
    };
    let second = TestApp::spawn_with_database(Backend::Postgres, url, |settings| {
        settings.jwt_secret = Some(secret.into())
    })
    .await;
    let user = first.user().await;
    let (phone, phone_refresh) = first.login_pair(&user.email, &user.password).await;
    // Each process accepts the other's tokens.
    assert_token_works(&second, &phone).await;
    let sessions: Value = second
        .get("/users/me/sessions")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let phone_session = sessions[1]["id"].as_str().unwrap().to_string();
    let response = second
        .request(
            reqwest::Method::DELETE,
            &format!("/users/me/sessions/{phone_session}"),
        )
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_token_refused(&first, &phone).await;
    assert_invalid_grant(refresh(&first, &phone_refresh).await).await;
    // Revocation through the first, refusal by the second.
    let response = first
        .post("/auth/revoke")
        .form(&[("token", user.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_token_refused(&second, &user.token).await;
}
