//! Authentication: password hashing, bearer tokens, the `AuthUser` extractor, login throttling.

pub mod extract;
pub mod password;
pub mod token;

pub use extract::{AuthUser, MaybeAuthUser};
