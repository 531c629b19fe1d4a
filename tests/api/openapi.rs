//! §6: the OpenAPI document and the router agree, both ways, and answers stay inside the
//! statuses each operation documents.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(
    every_route_is_documented_and_every_documented_route_exists,
    the_document_is_what_client_generators_need,
);

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
            // A database fault (500, 503) wherever the database is used; `/readyz` has its
            // own 503, and the rest never wait on a database call that can fail them.
            let faults: &[&str] = match path.as_str() {
                "/healthz" | "/metrics" | "/validate" => &[],
                "/readyz" => &["503"],
                _ => &["500", "503"],
            };
            for status in ["500", "503"] {
                assert_eq!(
                    statuses.iter().any(|s| *s == status),
                    faults.contains(&status),
                    "{method} {path}: whether it documents {status}"
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

/// What openapi-python-client, openapi-typescript and `redocly lint` need of the document
/// (clients/check.sh runs them; this keeps the reasons close to the code).
async fn the_document_is_what_client_generators_need(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let spec: Value = app.get_json("/openapi.json").await;
    let schemas = &spec["components"]["schemas"];

    assert_eq!(
        spec["servers"],
        serde_json::json!([{"url": "/", "description": "The server that serves this document"}])
    );
    assert_eq!(
        spec["info"]["license"]["identifier"],
        "LicenseRef-Proprietary"
    );
    for tag in spec["tags"].as_array().unwrap() {
        assert!(
            tag["description"].is_string(),
            "tag {} has no description",
            tag["name"]
        );
    }

    let mut headers = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            // Every operation states its security: the bearer scheme, or none (`[]`).
            let security = operation["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} states no security"));
            assert!(
                security.is_empty() || security == &[serde_json::json!({"bearer": []})],
                "{method} {path}: {security:?}"
            );
            // A header a client may leave out is a plain string, never `null`.
            for param in operation["parameters"].as_array().into_iter().flatten() {
                if param["in"] == "header" {
                    headers += 1;
                    assert_eq!(
                        param["schema"]["type"], "string",
                        "{method} {path} {}",
                        param["name"]
                    );
                }
            }
            // One media type per request body schema, except PATCH's merge patch.
            if let Some(content) = operation["requestBody"]["content"].as_object()
                && method != "patch"
            {
                assert_eq!(content.len(), 1, "{method} {path}: {:?}", content.keys());
            }
        }
    }
    assert!(
        headers >= 6,
        "the header parameters went missing: {headers}"
    );
    assert!(
        spec["paths"]["/items"]["get"]["security"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        spec["paths"]["/items"]["post"]["security"],
        serde_json::json!([{"bearer": []}])
    );

    let token = &spec["paths"]["/auth/token"]["post"]["requestBody"]["content"];
    assert_eq!(
        token.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["application/x-www-form-urlencoded"]
    );

    // Typed results and bodies, not bare objects.
    assert_eq!(
        schemas["JobView"]["properties"]["result"]["oneOf"][0]["$ref"],
        "#/components/schemas/ImportResult"
    );
    assert_eq!(
        schemas["ImportResult"]["required"],
        serde_json::json!(["created", "created_count", "rejected", "rejected_count"])
    );
    assert_eq!(
        schemas["RejectedRow"]["properties"]["errors"]["items"]["$ref"],
        "#/components/schemas/FieldError"
    );
    assert_eq!(
        spec["paths"]["/validate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/ValidateInput"
    );
    assert_eq!(
        schemas["ValidateInput"]["required"],
        serde_json::json!(["required_field"])
    );

    // A schema default makes openapi-typescript require the member.
    let quantity = &schemas["ItemInput"]["properties"]["quantity"];
    assert!(quantity.get("default").is_none(), "{quantity}");
    assert!(
        quantity["description"]
            .as_str()
            .unwrap()
            .contains("default 0")
    );
    assert_eq!(
        schemas["ItemInput"]["required"],
        serde_json::json!(["name", "price"])
    );
}
