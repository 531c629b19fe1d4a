//! The domain's own error: which field is wrong and why, in FastAPI's words (`loc`, `msg`,
//! `type`). The domain knows nothing of HTTP; `http::error` renders these in problem bodies.

use std::fmt;

use serde::Serialize;

/// One step of a `loc`: a field name or the index of a list element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Loc {
    Name(String),
    Index(usize),
}

impl From<&str> for Loc {
    fn from(name: &str) -> Self {
        Loc::Name(name.to_string())
    }
}

impl From<String> for Loc {
    fn from(name: String) -> Self {
        Loc::Name(name)
    }
}

impl From<usize> for Loc {
    fn from(index: usize) -> Self {
        Loc::Index(index)
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Name(name) => f.write_str(name),
            Loc::Index(index) => write!(f, "{index}"),
        }
    }
}

/// One failing field: where (`loc`), why in words (`msg`) and as a stable code (`type`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    pub loc: Vec<Loc>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    pub fn new(loc: Vec<Loc>, kind: &str, msg: impl Into<String>) -> Self {
        FieldError {
            loc,
            msg: msg.into(),
            kind: kind.to_string(),
        }
    }

    /// The same error, one level deeper (`["price"]` under `"body"` becomes `["body","price"]`).
    pub fn under(mut self, prefix: impl Into<Loc>) -> Self {
        self.loc.insert(0, prefix.into());
        self
    }
}
