//! HS256 access tokens with `sub`, `sid` (the session), `iat`, `exp`, `iss` (the
//! installation), `aud` and `jti`.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

/// Clock skew tolerated on `exp` and `iat`, in seconds.
const LEEWAY: i64 = 30;
/// The audience every larder token names.
pub const AUDIENCE: &str = "larder";
/// The longest lifetime a token may have (24 h): `LARDER_TOKEN_TTL` cannot exceed it, and a
/// token that claims more is refused whatever signed it.
pub const MAX_TTL_SECS: u64 = 24 * 60 * 60;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    /// The session the token belongs to: revoking it ends the token at once.
    sid: String,
    iat: i64,
    exp: i64,
    iss: String,
    aud: String,
    jti: String,
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user_id: i64,
    pub session_id: String,
    /// `iat`: a user's tokens issued before their password was last set are refused.
    pub issued_at: i64,
}

pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    header: Header,
    ttl_secs: u64,
    issuer: String,
}

impl Tokens {
    /// Tokens signed with `secret`, living `ttl_secs`, issued by the installation whose
    /// database made `installation` (so another database's tokens are refused). An empty
    /// secret is refused (jsonwebtoken will not make an HMAC key of it).
    pub fn new(secret: &[u8], ttl_secs: u64, installation: &str) -> anyhow::Result<Self> {
        let issuer = format!("larder:{installation}");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY as u64;
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[AUDIENCE]);
        Ok(Tokens {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            validation,
            header: Header::new(Algorithm::HS256),
            ttl_secs: ttl_secs.min(MAX_TTL_SECS),
            issuer,
        })
    }

    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// The `iss` this installation's tokens carry.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn issue(&self, user_id: i64, session_id: &str) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            iat: now,
            exp: now + self.ttl_secs as i64,
            iss: self.issuer.clone(),
            aud: AUDIENCE.to_string(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        Ok(encode(&self.header, &claims, &self.encoding)?)
    }

    /// What a token says, if it is signed by us with HS256 for this installation and this
    /// audience, unexpired, not from the future, and no longer-lived than [`MAX_TTL_SECS`].
    /// `alg: none` and every other algorithm are refused by the validation.
    pub fn verify(&self, token: &str) -> Option<Verified> {
        let claims = decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()?
            .claims;
        if claims.iat > chrono::Utc::now().timestamp() + LEEWAY
            || claims.exp.saturating_sub(claims.iat) > MAX_TTL_SECS as i64
            || claims.jti.is_empty()
            || claims.sid.is_empty()
        {
            return None;
        }
        Some(Verified {
            user_id: claims.sub.parse().ok()?,
            session_id: claims.sid,
            issued_at: claims.iat,
        })
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

    fn claims(iat: i64, exp: i64) -> Claims {
        Claims {
            sub: "1".into(),
            sid: "s".into(),
            iat,
            exp,
            iss: "larder:here".into(),
            aud: AUDIENCE.into(),
            jti: "j".into(),
        }
    }

    fn sign(claims: &Claims) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn issued_tokens_verify() {
        let tokens = Tokens::new(SECRET, 60, "here").unwrap();
        let token = tokens.issue(42, "s").unwrap();
        assert_eq!(tokens.verify(&token).map(|v| v.user_id), Some(42));
        let now = chrono::Utc::now().timestamp();
        assert_eq!(
            tokens
                .verify(&sign(&claims(now, now + 60)))
                .map(|v| v.user_id),
            Some(1)
        );
    }

    #[test]
    fn another_installation_audience_or_an_overlong_life_is_refused() {
        let tokens = Tokens::new(SECRET, 60, "here").unwrap();
        let elsewhere = Tokens::new(SECRET, 60, "elsewhere").unwrap();
        assert_eq!(tokens.verify(&elsewhere.issue(1, "s").unwrap()), None);
        let now = chrono::Utc::now().timestamp();
        let mut other_audience = claims(now, now + 60);
        other_audience.aud = "someone-else".into();
        assert_eq!(tokens.verify(&sign(&other_audience)), None);
        let forever = claims(now, now + MAX_TTL_SECS as i64 + 1);
        assert_eq!(tokens.verify(&sign(&forever)), None);
        assert_eq!(
            Tokens::new(SECRET, 10 * MAX_TTL_SECS, "here")
                .unwrap()
                .ttl_secs(),
            MAX_TTL_SECS
        );
    }

    #[test]
    fn other_keys_none_and_expired_are_refused() {
        let tokens = Tokens::new(SECRET, 60, "here").unwrap();
        let other = Tokens::new(b"another-secret-another-secret-xx", 60, "here").unwrap();
        assert_eq!(tokens.verify(&other.issue(1, "s").unwrap()), None);
        let now = chrono::Utc::now().timestamp();
        let none = forge(
            r#"{"alg":"none","typ":"JWT"}"#,
            &format!(r#"{{"sub":"1","iat":{now},"exp":{}}}"#, now + 60),
            "",
        );
        assert_eq!(tokens.verify(&none), None);
        assert_eq!(tokens.verify(&sign(&claims(now - 7200, now - 3600))), None);
        assert_eq!(tokens.verify(&sign(&claims(now + 3600, now + 7200))), None);
        assert_eq!(tokens.verify("not.a.token"), None);
    }

    #[test]
    fn only_hs256_with_an_expiry_passes_and_an_empty_secret_is_refused() {
        let tokens = Tokens::new(SECRET, 60, "here").unwrap();
        let now = chrono::Utc::now().timestamp();
        let good = claims(now, now + 60);
        for algorithm in [Algorithm::HS384, Algorithm::HS512] {
            let key = EncodingKey::from_secret(SECRET).unwrap();
            let token = encode(&Header::new(algorithm), &good, &key).unwrap();
            assert_eq!(tokens.verify(&token), None, "{algorithm:?}");
        }
        let no_exp = serde_json::json!({"sub": "1", "sid": "s", "iat": now, "iss": "larder:here",
            "aud": AUDIENCE, "jti": "j"});
        let key = EncodingKey::from_secret(SECRET).unwrap();
        let token = encode(&Header::new(Algorithm::HS256), &no_exp, &key).unwrap();
        assert_eq!(tokens.verify(&token), None);
        assert!(Tokens::new(b"", 60, "here").is_err());
    }
}
