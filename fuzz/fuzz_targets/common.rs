//! Invariants shared by the fuzz targets. Each `check_*` panics (a fuzz crash) when a value
//! that larder accepted breaks what its type promises, or when an error breaks the contract.
#![allow(dead_code)]

use axum::http::StatusCode;
use axum::response::IntoResponse;
use larder::domain::item::{DESCRIPTION_MAX, ItemDraft, NAME_MAX};
use larder::domain::user::{Credentials, FULL_NAME_MAX, NewUser, Password};
use larder::domain::error::Loc;
use larder::http::error::{ApiError, FieldError, Problem};
use larder::http::extract::into_domain;
use serde_json::{Value, json};

/// The field errors an `ApiError` carries (through its response, as the middleware reads them).
pub fn field_errors(error: ApiError) -> (StatusCode, Option<Vec<FieldError>>) {
    let status = error.status();
    let response = error.into_response();
    let problem = response
        .extensions()
        .get::<Problem>()
        .expect("every ApiError response carries a Problem");
    (status, problem.errors.clone())
}

/// An error from `into_domain`: 422, at least one field error, each located under "body".
pub fn check_body_error(error: ApiError) {
    let (status, errors) = field_errors(error);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let errors = errors.expect("a 422 from into_domain lists its field errors");
    assert!(!errors.is_empty(), "a 422 with no field errors");
    for error in &errors {
        assert!(error.loc.len() >= 1, "empty loc: {error:?}");
        assert_eq!(error.loc[0], Loc::from("body"), "loc not under body: {error:?}");
        assert!(
            error.loc[1..].iter().all(|step| matches!(step, Loc::Name(_))),
            "loc below body is not field names: {error:?}"
        );
        assert!(!error.kind.is_empty() && !error.msg.is_empty(), "{error:?}");
    }
}

/// What an `ItemDraft` promises: trimmed name of 1–200 characters, description of at most
/// 2000, finite price ≥ 0, quantity ≥ 0, and no NUL anywhere.
pub fn check_item(draft: &ItemDraft) {
    let name = draft.name();
    assert_eq!(name, name.trim(), "name not trimmed: {name:?}");
    let length = name.chars().count();
    assert!((1..=NAME_MAX).contains(&length), "name length {length}");
    assert!(!name.contains('\0'));
    if let Some(description) = draft.description() {
        assert!(description.chars().count() <= DESCRIPTION_MAX);
        assert!(!description.contains('\0'));
    }
    let price = draft.price();
    assert!(price.is_finite() && price >= 0.0, "price {price}");
    assert!(draft.quantity() >= 0, "quantity {}", draft.quantity());
}

/// The JSON document `PATCH /items/{id}` builds from the stored item (src/http/items.rs).
pub fn item_document(draft: &ItemDraft) -> Value {
    json!({
        "name": draft.name(),
        "description": draft.description(),
        "price": draft.price(),
        "quantity": draft.quantity(),
    })
}

/// Validates `value` as an item: an accepted one keeps every promise and survives being
/// written back out and read again unchanged; a refused one is a proper 422.
pub fn check_item_value(value: &Value) -> Option<ItemDraft> {
    match into_domain::<ItemDraft>(value) {
        Ok(draft) => {
            check_item(&draft);
            let again: ItemDraft = into_domain(&item_document(&draft))
                .unwrap_or_else(|_| panic!("a stored item no longer validates: {draft:?}"));
            assert_eq!(again, draft, "re-validation changed the item");
            Some(draft)
        }
        Err(error) => {
            check_body_error(error);
            None
        }
    }
}

pub fn check_new_user_value(value: &Value) {
    match into_domain::<NewUser>(value) {
        Ok(user) => {
            let email = user.email.as_str();
            assert!(email.contains('@'), "email without @: {email:?}");
            assert_eq!(email, email.trim());
            assert_eq!(user.email.key(), email.to_lowercase());
            let password = user.password.expose().chars().count();
            assert!((Password::MIN..=Password::MAX).contains(&password));
            assert_eq!(Some(user.password.expose()), value["password"].as_str());
            if let Some(name) = &user.full_name {
                assert!(name.chars().count() <= FULL_NAME_MAX);
                assert!(!name.contains('\0'));
            }
        }
        Err(error) => check_body_error(error),
    }
}

pub fn check_credentials_value(value: &Value) {
    match into_domain::<Credentials>(value) {
        Ok(credentials) => {
            assert_eq!(Some(credentials.username.as_str()), value["username"].as_str());
            assert_eq!(Some(credentials.password.as_str()), value["password"].as_str());
            assert!(!credentials.username.contains('\0') && !credentials.password.contains('\0'));
        }
        Err(error) => check_body_error(error),
    }
}

/// `parse_json`'s refusals: 422 `missing` under "body" for an empty body, else 400.
pub fn check_parse_error(data: &[u8], error: ApiError) {
    let empty = data.iter().all(u8::is_ascii_whitespace);
    let (status, errors) = field_errors(error);
    if empty {
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let errors = errors.expect("an empty body reports a field error");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].loc, vec![Loc::from("body")]);
    } else {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{:?}", String::from_utf8_lossy(data));
    }
}

/// RFC 7396 section 2, checked member by member against `target` and `patch`.
pub fn check_merge_patch(target: &Value, patch: &Value, result: &Value) {
    let Value::Object(members) = patch else {
        assert_eq!(result, patch, "a non-object patch replaces the target");
        return;
    };
    let result = result.as_object().expect("an object patch gives an object");
    for (key, value) in members {
        match value {
            Value::Null => assert!(!result.contains_key(key), "null did not remove {key:?}"),
            Value::Object(_) => assert!(result[key].is_object()),
            other => assert_eq!(&result[key], other, "{key:?} not replaced"),
        }
    }
    if let Value::Object(before) = target {
        for (key, value) in before {
            if !members.contains_key(key) {
                assert_eq!(result.get(key), Some(value), "{key:?} changed without being patched");
            }
        }
    }
    for key in result.keys() {
        assert!(
            members.contains_key(key) || target.get(key).is_some(),
            "{key:?} came from nowhere"
        );
    }
}
