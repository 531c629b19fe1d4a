//! Authentication without HTTP: password hashing (Argon2id) and bearer tokens (HS256).

pub mod password;
pub mod token;
