//! Reading a JSON object field by field, collecting every failure with FastAPI's wording,
//! so one answer reports all the fields that are wrong.

use serde_json::{Map, Value};

use crate::domain::error::FieldError;

/// The fields of one JSON object, and the errors found while reading them.
pub struct Fields<'a> {
    object: &'a Map<String, Value>,
    pub errors: Vec<FieldError>,
}

pub fn error(field: &str, kind: &str, msg: impl Into<String>) -> FieldError {
    FieldError::new(vec![field.into()], kind, msg)
}

/// The error for a body that is JSON but not an object.
pub fn not_an_object() -> FieldError {
    FieldError::new(
        vec![],
        "model_attributes_type",
        "Input should be a valid dictionary or object to extract fields from",
    )
}

impl<'a> Fields<'a> {
    pub fn of(value: &'a Value) -> Result<Self, Vec<FieldError>> {
        match value {
            Value::Object(object) => Ok(Fields {
                object,
                errors: Vec::new(),
            }),
            _ => Err(vec![not_an_object()]),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.object.contains_key(name)
    }

    /// The raw value, `None` when absent. JSON `null` counts as present.
    pub fn raw(&self, name: &str) -> Option<&'a Value> {
        self.object.get(name)
    }

    fn missing(&mut self, name: &str) {
        self.errors.push(error(name, "missing", "Field required"));
    }

    pub fn push(&mut self, name: &str, kind: &str, msg: impl Into<String>) {
        self.errors.push(error(name, kind, msg));
    }

    pub fn required_str(&mut self, name: &str) -> Option<&'a str> {
        match self.object.get(name) {
            None => {
                self.missing(name);
                None
            }
            Some(value) => self.str_value(name, value),
        }
    }

    /// Absent or `null` is `Some(None)`; a wrong type is `None` with the error recorded.
    pub fn optional_str(&mut self, name: &str) -> Option<Option<&'a str>> {
        match self.object.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(value) => self.str_value(name, value).map(Some),
        }
    }

    fn str_value(&mut self, name: &str, value: &'a Value) -> Option<&'a str> {
        match value {
            Value::String(text) if text.contains('\0') => {
                self.push(
                    name,
                    "string_pattern_mismatch",
                    "String should not contain NUL characters",
                );
                None
            }
            Value::String(text) => Some(text),
            _ => {
                self.push(name, "string_type", "Input should be a valid string");
                None
            }
        }
    }

    pub fn required_number(&mut self, name: &str) -> Option<f64> {
        match self.object.get(name) {
            None => {
                self.missing(name);
                None
            }
            Some(value) => self.number_value(name, value),
        }
    }

    pub fn number_value(&mut self, name: &str, value: &Value) -> Option<f64> {
        match value.as_f64() {
            Some(number) if value.is_number() && number.is_finite() => Some(number),
            _ => {
                self.push(name, "float_type", "Input should be a valid number");
                None
            }
        }
    }

    /// An integer; `2.0` counts (as pydantic has it), `2.5`, `"2"` and `true` do not.
    pub fn integer_value(&mut self, name: &str, value: &Value) -> Option<i64> {
        if let Some(integer) = value.as_i64() {
            return Some(integer);
        }
        match value {
            Value::Number(number) if number.is_u64() => {
                self.push(
                    name,
                    "int_too_big",
                    "Input should be a valid integer, number too large",
                );
                None
            }
            Value::Number(number) => match number.as_f64() {
                Some(float) if float.fract() == 0.0 && float.abs() < 9.0e15 => Some(float as i64),
                _ => {
                    self.push(
                        name,
                        "int_from_float",
                        "Input should be a valid integer, got a number with a fractional part",
                    );
                    None
                }
            },
            _ => {
                self.push(name, "int_type", "Input should be a valid integer");
                None
            }
        }
    }

    /// Ok when nothing failed, else every error found.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        match value {
            Some(value) if self.errors.is_empty() => Ok(value),
            _ => Err(self.errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collects_every_error() {
        let value = json!({"a": 1, "b": "x"});
        let mut fields = Fields::of(&value).unwrap();
        assert_eq!(fields.required_str("a"), None);
        assert_eq!(fields.required_number("b"), None);
        assert_eq!(fields.required_str("c"), None);
        let kinds: Vec<_> = fields.errors.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["string_type", "float_type", "missing"]);
    }

    #[test]
    fn integers_are_never_coerced_from_fractions_strings_or_booleans() {
        let value = json!({});
        let mut fields = Fields::of(&value).unwrap();
        assert_eq!(fields.integer_value("q", &json!(2.0)), Some(2));
        assert_eq!(fields.integer_value("q", &json!(1.5)), None);
        assert_eq!(fields.integer_value("q", &json!("2")), None);
        assert_eq!(fields.integer_value("q", &json!(true)), None);
        assert_eq!(fields.errors.len(), 3);
    }

    #[test]
    fn rejects_non_objects() {
        assert!(Fields::of(&json!([1])).is_err());
        assert!(Fields::of(&json!("x")).is_err());
    }
}
