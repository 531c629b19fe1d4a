//! Values read from headers and settings: `Idempotency-Key` (`IdempotencyKey::parse`), the
//! e-mail of a registration (`Email::parse`), and `LARDER_RATE_LIMIT` (`RateLimitSpec`).
#![no_main]

use std::str::FromStr;
use std::time::Duration;

use larder::config::RateLimitSpec;
use larder::domain::user::Email;
use larder::http::idempotency::IdempotencyKey;
use libfuzzer_sys::fuzz_target;

fn quote(key: &str) -> String {
    let mut quoted = String::from("\"");
    for c in key.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

fn check_idempotency_key(text: &str) {
    let Some(key) = IdempotencyKey::parse(text) else {
        return;
    };
    let key = key.as_str();
    assert!((1..=255).contains(&key.len()), "key of {} bytes", key.len());
    assert!(key.chars().all(|c| (' '..='~').contains(&c)), "invisible character in {key:?}");
    if !text.trim().starts_with('"') {
        assert_eq!(key, text.trim(), "a bare token is the key itself");
    }
    // The same key sent as a structured-field string reads back the same.
    let again = IdempotencyKey::parse(&quote(key)).expect("a quoted key parses");
    assert_eq!(again.as_str(), key);
}

fn check_email(text: &str) {
    let Ok(email) = Email::parse(text) else {
        return;
    };
    let address = email.as_str();
    assert!(address.contains('@'), "no @ in {address:?}");
    let (local, domain) = address.rsplit_once('@').unwrap();
    assert!(!local.is_empty() && domain.contains('.'), "{address:?}");
    assert!(address.len() <= 254 && local.len() <= 64);
    assert!(!address.chars().any(|c| c.is_whitespace() || c.is_control()));
    assert_eq!(address, text.trim());
    assert_eq!(email.key(), address.to_lowercase());
    assert_eq!(Email::parse(address).as_ref(), Ok(&email), "parsing is not idempotent");
}

fn check_rate_limit(text: &str) {
    let Ok(spec) = RateLimitSpec::from_str(text) else {
        return;
    };
    assert!(spec.requests >= 1);
    assert!(spec.window > Duration::ZERO);
    assert!(spec.window_secs() >= 1);
    assert!(spec.window_secs() as f64 >= spec.window.as_secs_f64());
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_idempotency_key(&text);
    check_email(&text);
    check_rate_limit(&text);
});
