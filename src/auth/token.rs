//! HS256 access tokens with `sub`, `iat` and `exp`.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

/// Clock skew tolerated on `exp` and `iat`, in seconds.
const LEEWAY: i64 = 30;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
}

pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    header: Header,
    ttl_secs: u64,
}

impl Tokens {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY as u64;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            header: Header::new(Algorithm::HS256),
            ttl_secs,
        }
    }

    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    pub fn issue(&self, user_id: i64) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            iat: now,
            exp: now + self.ttl_secs as i64,
        };
        Ok(encode(&self.header, &claims, &self.encoding)?)
    }

    /// The user id a token names, if it is signed by us with HS256, unexpired and not from
    /// the future. `alg: none` and every other algorithm are refused by the validation.
    pub fn verify(&self, token: &str) -> Option<i64> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        if data.claims.iat > chrono::Utc::now().timestamp() + LEEWAY {
            return None;
        }
        data.claims.sub.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn forge(header: &str, claims: &str, signature: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims),
            signature
        )
    }

    #[test]
    fn issued_tokens_verify() {
        let tokens = Tokens::new(SECRET, 60);
        let token = tokens.issue(42).unwrap();
        assert_eq!(tokens.verify(&token), Some(42));
    }

    #[test]
    fn other_keys_none_and_expired_are_refused() {
        let tokens = Tokens::new(SECRET, 60);
        let other = Tokens::new(b"another-secret-another-secret-xx", 60);
        assert_eq!(tokens.verify(&other.issue(1).unwrap()), None);
        let now = chrono::Utc::now().timestamp();
        let none = forge(
            r#"{"alg":"none","typ":"JWT"}"#,
            &format!(r#"{{"sub":"1","iat":{now},"exp":{}}}"#, now + 60),
            "",
        );
        assert_eq!(tokens.verify(&none), None);
        let expired = Claims {
            sub: "1".into(),
            iat: now - 7200,
            exp: now - 3600,
        };
        let token = encode(
            &Header::new(Algorithm::HS256),
            &expired,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(tokens.verify(&token), None);
        let future = Claims {
            sub: "1".into(),
            iat: now + 3600,
            exp: now + 7200,
        };
        let token = encode(
            &Header::new(Algorithm::HS256),
            &future,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(tokens.verify(&token), None);
        assert_eq!(tokens.verify("not.a.token"), None);
    }
}
