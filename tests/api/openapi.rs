//! §6: the OpenAPI document and the router agree, both ways, and answers stay inside the
//! statuses each operation documents.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(every_route_is_documented_and_every_documented_route_exists);

/// Every route the router serves, besides `/openapi.json` and `/docs` themselves.
/// Kept here on purpose: adding a route without documenting it fails this test.
const SERVED: &[(&str, &str)] = &[
    ("DELETE", "/admin/users/{user_id}"),
    ("GET", "/api/data"),
    ("POST", "/auth/password-reset"),
    ("POST", "/auth/password-reset/confirm"),
    ("POST", "/auth/revoke"),
    ("POST", "/auth/token"),
    ("GET", "/healthz"),
    ("GET", "/items"),
    ("GET", "/items/export"),
    ("POST", "/items"),
    ("DELETE", "/items/{item_id}"),
    ("GET", "/items/{item_id}"),
    ("PATCH", "/items/{item_id}"),
    ("PUT", "/items/{item_id}"),
    ("GET", "/jobs"),
    ("GET", "/jobs/{job_id}"),
    ("POST", "/jobs/{job_id}/cancel"),
    ("GET", "/jobs/{job_id}/events"),
    ("GET", "/metrics"),
    ("POST", "/process"),
    ("GET", "/protected"),
    ("GET", "/readyz"),
    ("GET", "/users"),
    ("POST", "/users"),
    ("DELETE", "/users/me"),
    ("GET", "/users/me"),
    ("PATCH", "/users/me"),
    ("PUT", "/users/me/password"),
    ("GET", "/users/me/sessions"),
    ("DELETE", "/users/me/sessions/{session_id}"),
    ("GET", "/users/{user_id}"),
    ("PATCH", "/users/{user_id}"),
    ("POST", "/validate"),
];

fn concrete(path: &str) -> String {
    path.replace("{item_id}", "1")
        .replace("{user_id}", "1")
        .replace("{job_id}", "00000000-0000-4000-8000-000000000000")
}

async fn every_route_is_documented_and_every_documented_route_exists(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user().await;
    let spec: Value = app.get_json("/openapi.json").await;
    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let method = method.to_uppercase();
            documented.insert((method.clone(), path.clone()));
            let statuses: Vec<&String> =
                operation["responses"].as_object().unwrap().keys().collect();
            for status in ["500", "503"] {
                assert!(
                    statuses.iter().any(|s| *s == status),
                    "{method} {path} documents no {status}"
                );
            }
            // Call it: a documented route must exist (no router 404/405), and what it
            // answers must be among the statuses it documents.
            let request = app
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    &concrete(path),
                )
                .bearer_auth(&user.token)
                .header("client", "openapi-test");
            let request = if ["POST", "PUT", "PATCH"].contains(&method.as_str()) {
                request.json(&serde_json::json!({}))
            } else {
                request
            };
            let response = request.send().await.unwrap();
            let status = response.status();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!(
                !(status == StatusCode::NOT_FOUND && body["detail"] == "Not Found"),
                "{method} {path} is documented but not routed"
            );
            assert!(
                statuses.iter().any(|s| *s == status.as_str()),
                "{method} {path} answered {status}, documented {statuses:?}"
            );
        }
    }
    let served: BTreeSet<(String, String)> = SERVED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not in the served list: {unserved:?}"
    );
    // The security scheme is the password flow against the token endpoint.
    let scheme = &spec["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["flows"]["password"]["tokenUrl"], "/auth/token");
}
