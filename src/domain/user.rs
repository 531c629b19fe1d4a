//! Users: email, password and name as values that are valid once they exist.

use serde_json::Value;

use super::fields::{Fields, error};
use crate::domain::error::FieldError;

/// An email address as the user typed it; `key()` is the case-insensitive identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let Some((local, domain)) = value.rsplit_once('@') else {
            return Err(
                "value is not a valid email address: An email address must have an @-sign.".into(),
            );
        };
        let bad = |why: &str| Err(format!("value is not a valid email address: {why}"));
        if local.is_empty() {
            return bad("There must be something before the @-sign.");
        }
        if local.len() > 64 || value.len() > 254 {
            return bad("The email address is too long.");
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("The email address contains invalid characters.");
        }
        if local.contains('@')
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
        {
            return bad("The part before the @-sign is not valid.");
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |label: &&str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return bad("The part after the @-sign is not valid. It should have a period.");
        }
        Ok(Email(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What comes before the (last) @.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(local, _)| local)
    }

    /// The form the uniqueness constraint compares: lower case.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

/// A password that meets the policy (NIST SP 800-63B §5.1.1.2): 8 to 256 characters, not a
/// commonly used password, not containing its owner's email local part. Only its Argon2id
/// hash is ever stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// 19,640 passwords seen most often in public breach corpora: the list Django ships
/// (`django/contrib/auth/common-passwords.txt.gz`, BSD-3-Clause, compiled by Royce Williams),
/// lowercased, one per line.
static COMMON_PASSWORDS: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
    std::sync::LazyLock::new(|| include_str!("common-passwords.txt").lines().collect());

/// Local parts shorter than this are not looked for in the password: nearly every password
/// contains some one- or two-letter string.
const LOCAL_PART_MIN: usize = 3;

impl Password {
    pub const MIN: usize = 8;
    pub const MAX: usize = 256;

    /// `owner` is the account's email; `None` only where that email is itself invalid (the
    /// request fails anyway, and this still reports the password's own faults).
    pub fn parse(value: &str, owner: Option<&Email>) -> Result<Self, FieldError> {
        let length = value.chars().count();
        if length < Self::MIN {
            return Err(error(
                "password",
                "string_too_short",
                format!("String should have at least {} characters", Self::MIN),
            ));
        }
        if length > Self::MAX {
            return Err(error(
                "password",
                "string_too_long",
                format!("String should have at most {} characters", Self::MAX),
            ));
        }
        let normalized = value.trim().to_lowercase();
        if COMMON_PASSWORDS.contains(normalized.as_str()) {
            return Err(error(
                "password",
                "value_error",
                "Value error, This password is too common",
            ));
        }
        if let Some(owner) = owner {
            let local = owner.local_part().to_lowercase();
            if local.chars().count() >= LOCAL_PART_MIN && normalized.contains(&local) {
                return Err(error(
                    "password",
                    "value_error",
                    "Value error, The password must not contain the part of the email before the @",
                ));
            }
        }
        Ok(Password(value.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A registration: what `POST /users` accepts.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub password: Password,
    pub full_name: Option<String>,
}

pub const FULL_NAME_MAX: usize = 200;

impl TryFrom<&Value> for NewUser {
    type Error = Vec<FieldError>;

    fn try_from(value: &Value) -> Result<Self, Self::Error> {
        let mut fields = Fields::of(value)?;
        let email = fields.required_str("email").and_then(|raw| {
            Email::parse(raw)
                .map_err(|msg| fields.push("email", "value_error", msg))
                .ok()
        });
        let password = fields.required_str("password").and_then(|raw| {
            Password::parse(raw, email.as_ref())
                .map_err(|e| fields.errors.push(e))
                .ok()
        });
        let full_name = fields
            .optional_str("full_name")
            .and_then(|name| match name {
                Some(name) if name.chars().count() > FULL_NAME_MAX => {
                    fields.push(
                        "full_name",
                        "string_too_long",
                        format!("String should have at most {FULL_NAME_MAX} characters"),
                    );
                    None
                }
                other => Some(other.map(str::to_string)),
            });
        let user = match (email, password, full_name) {
            (Some(email), Some(password), Some(full_name)) => Some(NewUser {
                email,
                password,
                full_name,
            }),
            _ => None,
        };
        fields.finish(user)
    }
}

/// The longest `username` a login takes: the longest email address (RFC 5321). Checked
/// before anything else happens to it, so no throttle key or hash ever holds more.
pub const USERNAME_MAX: usize = 254;

/// What `POST /auth/token` accepts, from a form or from JSON.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl TryFrom<&Value> for Credentials {
    type Error = Vec<FieldError>;

    fn try_from(value: &Value) -> Result<Self, Self::Error> {
        let mut fields = Fields::of(value)?;
        let mut username = fields.required_str("username");
        if username.is_some_and(|name| name.chars().count() > USERNAME_MAX) {
            fields.push(
                "username",
                "string_too_long",
                format!("String should have at most {USERNAME_MAX} characters"),
            );
            username = None;
        }
        let password = fields.required_str("password");
        let credentials = match (username, password) {
            (Some(username), Some(password)) => Some(Credentials {
                username: username.to_string(),
                password: password.to_string(),
            }),
            _ => None,
        };
        fields.finish(credentials)
    }
}

/// The longest refresh or reset token accepted (larder's are 43 characters).
pub const OPAQUE_TOKEN_MAX: usize = 512;

/// What `POST /auth/token` is asked for: the password grant (the default) or a refresh.
#[derive(Debug, Clone)]
pub enum Grant {
    Password(Credentials),
    RefreshToken(String),
}

impl TryFrom<&Value> for Grant {
    type Error = Vec<FieldError>;

    fn try_from(value: &Value) -> Result<Self, Self::Error> {
        let mut fields = Fields::of(value)?;
        match fields.optional_str("grant_type") {
            Some(None | Some("" | "password")) => Credentials::try_from(value).map(Grant::Password),
            Some(Some("refresh_token")) => {
                let token = fields
                    .required_str("refresh_token")
                    .map(|token| bounded_token(&mut fields, "refresh_token", token));
                fields.finish(token.flatten().map(Grant::RefreshToken))
            }
            Some(Some(_)) => {
                fields.push(
                    "grant_type",
                    "string_pattern_mismatch",
                    "String should match pattern '^(password|refresh_token)$'",
                );
                fields.finish(None)
            }
            None => fields.finish(None),
        }
    }
}

/// An opaque token no longer than [`OPAQUE_TOKEN_MAX`].
fn bounded_token(fields: &mut Fields<'_>, name: &str, token: &str) -> Option<String> {
    if token.len() > OPAQUE_TOKEN_MAX {
        fields.push(
            name,
            "string_too_long",
            format!("String should have at most {OPAQUE_TOKEN_MAX} characters"),
        );
        return None;
    }
    Some(token.to_string())
}

/// What `POST /auth/revoke` accepts (RFC 7009; `token_type_hint` is ignored).
#[derive(Debug, Clone)]
pub struct Revocation {
    pub token: String,
}

impl TryFrom<&Value> for Revocation {
    type Error = Vec<FieldError>;

    fn try_from(value: &Value) -> Result<Self, Self::Error> {
        let mut fields = Fields::of(value)?;
        // Access tokens are longer than refresh tokens, but not this long.
        let token = fields.required_str("token").and_then(|token| {
            if token.len() > 4 * OPAQUE_TOKEN_MAX {
                fields.push(
                    "token",
                    "string_too_long",
                    format!(
                        "String should have at most {} characters",
                        4 * OPAQUE_TOKEN_MAX
                    ),
                );
                None
            } else {
                Some(token.to_string())
            }
        });
        fields.finish(token.map(|token| Revocation { token }))
    }
}

/// A full name: at most [`FULL_NAME_MAX`] characters; `Some(None)` clears it.
fn full_name_field(fields: &mut Fields<'_>) -> Option<Option<String>> {
    fields
        .optional_str("full_name")
        .and_then(|name| match name {
            Some(name) if name.chars().count() > FULL_NAME_MAX => {
                fields.push(
                    "full_name",
                    "string_too_long",
                    format!("String should have at most {FULL_NAME_MAX} characters"),
                );
                None
            }
            other => Some(other.map(str::to_string)),
        })
}

/// What `PATCH /users/me` accepts: each field is changed only when present.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    pub email: Option<Email>,
    /// `Some(None)` clears the name.
    pub full_name: Option<Option<String>>,
}

impl TryFrom<&Value> for ProfileChange {
    type Error = Vec<FieldError>;

    fn try_from(value: &Value) -> Result<Self, Self::Error> {
        let mut fields = Fields::of(value)?;
        let mut change = ProfileChange::default();
        if fields.has("email") {
            change.email = fields.required_str("email").and_then(|raw| {
                Email::parse(raw)
                    .map_err(|msg| fields.push("email", "value_error", msg))
                    .ok()
            });
        }
        if fields.has("full_name") {
            change.full_name = full_name_field(&mut fields);
        }
        fields.finish(Some(change))
    }
}

/// What `PATCH /users/{user_id}` accepts (admins): each field is changed only when present.
#[derive(Debug, Clone, Default)]
pub struct AccountChange {
    pub role: Option<Role>,
    pub is_active: Option<bool>,
    pub full_name: Option<Option<String>>,
}

impl TryFrom<&Value> for AccountChange {
    type Error = Vec<FieldError>;

    fn try_from(value: &Value) -> Result<Self, Self::Error> {
        let mut fields = Fields::of(value)?;
        let mut change = AccountChange::default();
        match fields.raw("role") {
            None => {}
            Some(Value::String(role)) if role == "user" => change.role = Some(Role::User),
            Some(Value::String(role)) if role == "admin" => change.role = Some(Role::Admin),
            Some(_) => fields.push("role", "enum", "Input should be 'user' or 'admin'"),
        }
        match fields.raw("is_active") {
            None => {}
            Some(Value::Bool(active)) => change.is_active = Some(*active),
            Some(_) => fields.push("is_active", "bool_type", "Input should be a valid boolean"),
        }
        if fields.has("full_name") {
            change.full_name = full_name_field(&mut fields);
        }
        fields.finish(Some(change))
    }
}

/// A password field checked against the policy for `owner`, reported under `name`.
pub fn password_field(
    fields: &mut Fields<'_>,
    name: &str,
    owner: Option<&Email>,
) -> Option<Password> {
    let raw = fields.required_str(name)?;
    Password::parse(raw, owner)
        .map_err(|mut error| {
            error.loc = vec![name.into()];
            fields.errors.push(error);
        })
        .ok()
}

/// What `PUT /users/me/password` accepts, for the account with email `owner`.
#[derive(Debug, Clone)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: Password,
}

impl PasswordChange {
    pub fn parse(value: &Value, owner: &Email) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::of(value)?;
        let current = fields.required_str("current_password");
        let new = password_field(&mut fields, "new_password", Some(owner));
        if let (Some(current), Some(new)) = (current, &new)
            && current == new.expose()
        {
            fields.push(
                "new_password",
                "value_error",
                "Value error, The new password must differ from the current one",
            );
        }
        let change = match (current, new) {
            (Some(current), Some(new)) => Some(PasswordChange {
                current_password: current.to_string(),
                new_password: new,
            }),
            _ => None,
        };
        fields.finish(change)
    }
}

/// What `POST /auth/password-reset` accepts.
#[derive(Debug, Clone)]
pub struct ResetRequest {
    pub email: Email,
}

impl TryFrom<&Value> for ResetRequest {
    type Error = Vec<FieldError>;

    fn try_from(value: &Value) -> Result<Self, Self::Error> {
        let mut fields = Fields::of(value)?;
        let email = fields.required_str("email").and_then(|raw| {
            Email::parse(raw)
                .map_err(|msg| fields.push("email", "value_error", msg))
                .ok()
        });
        fields.finish(email.map(|email| ResetRequest { email }))
    }
}

/// What `POST /auth/password-reset/confirm` accepts. The new password is checked here
/// against what needs no account; the email rule once the token names the account.
#[derive(Debug, Clone)]
pub struct ResetConfirm {
    pub token: String,
    pub new_password: Password,
}

impl TryFrom<&Value> for ResetConfirm {
    type Error = Vec<FieldError>;

    fn try_from(value: &Value) -> Result<Self, Self::Error> {
        let mut fields = Fields::of(value)?;
        let token = fields
            .required_str("token")
            .and_then(|token| bounded_token(&mut fields, "token", token));
        let new_password = password_field(&mut fields, "new_password", None);
        let confirm = match (token, new_password) {
            (Some(token), Some(new_password)) => Some(ResetConfirm {
                token,
                new_password,
            }),
            _ => None,
        };
        fields.finish(confirm)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn from_db(value: &str) -> Role {
        if value == "admin" {
            Role::Admin
        } else {
            Role::User
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::error::Loc;
    use serde_json::json;

    #[test]
    fn emails() {
        for good in ["a@b.co", "First.Last+tag@Example.COM", "x@sub.domain.org"] {
            assert!(Email::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "plain",
            "@b.co",
            "a@",
            "a@b",
            "a b@c.de",
            "a@b..c",
            "a@-b.co",
            "a..b@c.de",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Email::parse("Ann@Example.com").unwrap().key(),
            "ann@example.com"
        );
    }

    #[test]
    fn passwords_follow_the_policy() {
        let ann = Email::parse("ann.lee@example.com").unwrap();
        let kind = |value: &str| Password::parse(value, Some(&ann)).map_err(|e| e.kind);
        assert_eq!(kind("1234567").unwrap_err(), "string_too_short");
        assert_eq!(kind(&"x".repeat(257)).unwrap_err(), "string_too_long");
        for common in [
            "12345678",
            "password",
            "Password1",
            " qwertyuiop ",
            "iloveyou",
        ] {
            assert_eq!(kind(common).unwrap_err(), "value_error", "{common}");
        }
        assert_eq!(kind("my ANN.LEE secret").unwrap_err(), "value_error");
        assert!(kind("correct horse battery").is_ok());
        // A short local part is not looked for.
        let al = Email::parse("al@example.com").unwrap();
        assert!(Password::parse("royal blue walrus", Some(&al)).is_ok());
        assert!(COMMON_PASSWORDS.len() >= 10_000);
        assert_eq!(
            format!("{:?}", kind("correct horse battery").unwrap()),
            "Password(..)"
        );
    }

    #[test]
    fn new_user_reports_every_field() {
        let errors = NewUser::try_from(&json!({"email": "nope", "password": "short"})).unwrap_err();
        let locs: Vec<_> = errors.iter().map(|e| e.loc.clone()).collect();
        assert_eq!(
            locs,
            vec![vec![Loc::from("email")], vec![Loc::from("password")]]
        );
        let errors = NewUser::try_from(&json!({})).unwrap_err();
        assert!(errors.iter().all(|e| e.kind == "missing"));
        assert_eq!(errors.len(), 2);
    }
}
