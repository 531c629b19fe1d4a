//! A request body as sent: arbitrary bytes → `parse_json` → each domain type a JSON body
//! becomes (`ItemDraft` for POST/PUT /items, `NewUser` for POST /users, `Credentials` for
//! POST /auth/token), and the body used as a merge patch on a stored item (PATCH /items/{id}).
#![no_main]

#[path = "common.rs"]
mod common;

use larder::domain::item::merge_patch;
use larder::http::extract::parse_json;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let value = match parse_json(data) {
        Ok(value) => value,
        Err(error) => return common::check_parse_error(data, error),
    };
    assert!(!data.iter().all(u8::is_ascii_whitespace));

    common::check_item_value(&value);
    common::check_new_user_value(&value);
    common::check_credentials_value(&value);

    let stored = json!({"name": "Jam", "description": null, "price": 2.5, "quantity": 1});
    let patched = merge_patch(stored.clone(), &value);
    common::check_merge_patch(&stored, &value, &patched);
    assert_eq!(merge_patch(patched.clone(), &value), patched, "merge patch is not idempotent");
    common::check_item_value(&patched);
});
