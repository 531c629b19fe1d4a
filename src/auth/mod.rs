//! Authentication without HTTP: password hashing (Argon2id), bearer tokens (HS256), and the
//! opaque secrets of refresh and password-reset tokens, and the mail that carries a reset link.

pub mod mail;
pub mod password;
pub mod secret;
pub mod token;
