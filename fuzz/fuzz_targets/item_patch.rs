//! PATCH /items/{id} end to end without the database: the bytes before the first NUL are a
//! stored item (any JSON that validates as an `ItemDraft`, else a fixed one), the bytes after
//! it the merge-patch body. The patched document must re-validate as `ItemDraft` or be a 422.
#![no_main]

#[path = "common.rs"]
mod common;

use larder::domain::item::{ItemDraft, merge_patch};
use larder::http::extract::{into_domain, parse_json};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let (stored, body) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b""[..], data),
    };
    let current = parse_json(stored)
        .ok()
        .and_then(|value| into_domain::<ItemDraft>(&value).ok())
        .unwrap_or_else(|| {
            into_domain(&json!({"name": "Jam", "description": "sweet", "price": 2.5, "quantity": 1}))
                .expect("the fallback item is valid")
        });
    common::check_item(&current);

    let patch = match parse_json(body) {
        Ok(patch) => patch,
        Err(error) => return common::check_parse_error(body, error),
    };
    let document = common::item_document(&current);
    let patched = merge_patch(document.clone(), &patch);
    common::check_merge_patch(&document, &patch, &patched);
    assert_eq!(merge_patch(patched.clone(), &patch), patched, "merge patch is not idempotent");
    if let Some(updated) = common::check_item_value(&patched) {
        // An empty patch changes nothing.
        if patch.as_object().is_some_and(|members| members.is_empty()) {
            assert_eq!(updated, current);
        }
    }
});
