//! Items: the editable fields, checked once, and merge patches applied to them.

use serde_json::{Map, Value};

use super::fields::Fields;
use crate::domain::error::FieldError;

pub const NAME_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 2000;

/// An item's editable fields, valid by construction: a trimmed name of 1–200 characters,
/// a description of at most 2000, a finite price ≥ 0 and a quantity ≥ 0.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemDraft {
    name: String,
    description: Option<String>,
    price: f64,
    quantity: i64,
}

impl ItemDraft {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    pub fn price(&self) -> f64 {
        self.price
    }
    pub fn quantity(&self) -> i64 {
        self.quantity
    }
}

/// RFC 7396: `patch` applied to `target`. A `null` removes a member, so nulling a required
/// field leaves it missing when the result is checked as a whole item.
pub fn merge_patch(mut target: Value, patch: &Value) -> Value {
    merge(&mut target, patch);
    target
}

fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

impl TryFrom<&Value> for ItemDraft {
    type Error = Vec<FieldError>;

    fn try_from(value: &Value) -> Result<Self, Self::Error> {
        let mut fields = Fields::of(value)?;
        let name = fields.required_str("name").and_then(|raw| {
            let trimmed = raw.trim();
            let length = trimmed.chars().count();
            if length == 0 {
                fields.push(
                    "name",
                    "string_too_short",
                    "String should have at least 1 character",
                );
                None
            } else if length > NAME_MAX {
                fields.push(
                    "name",
                    "string_too_long",
                    format!("String should have at most {NAME_MAX} characters"),
                );
                None
            } else {
                Some(trimmed.to_string())
            }
        });
        let description = fields
            .optional_str("description")
            .and_then(|text| match text {
                Some(text) if text.chars().count() > DESCRIPTION_MAX => {
                    fields.push(
                        "description",
                        "string_too_long",
                        format!("String should have at most {DESCRIPTION_MAX} characters"),
                    );
                    None
                }
                other => Some(other.map(str::to_string)),
            });
        let price = fields.required_number("price").and_then(|price| {
            if price < 0.0 {
                fields.push(
                    "price",
                    "greater_than_equal",
                    "Input should be greater than or equal to 0",
                );
                None
            } else {
                // -0.0 passes `< 0.0`; store it as the zero it means.
                Some(price + 0.0)
            }
        });
        let quantity = match fields.raw("quantity") {
            None | Some(Value::Null) => Some(0),
            Some(raw) => fields.integer_value("quantity", raw).and_then(|quantity| {
                if quantity < 0 {
                    fields.push(
                        "quantity",
                        "greater_than_equal",
                        "Input should be greater than or equal to 0",
                    );
                    None
                } else {
                    Some(quantity)
                }
            }),
        };
        let draft = match (name, description, price, quantity) {
            (Some(name), Some(description), Some(price), Some(quantity)) => Some(ItemDraft {
                name,
                description,
                price,
                quantity,
            }),
            _ => None,
        };
        fields.finish(draft)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kinds(value: Value) -> Vec<String> {
        ItemDraft::try_from(&value)
            .unwrap_err()
            .into_iter()
            .map(|e| format!("{}:{}", e.loc[0], e.kind))
            .collect()
    }

    #[test]
    fn a_valid_item_is_trimmed_and_defaults_quantity() {
        let draft = ItemDraft::try_from(&json!({"name": "  Jam ", "price": 2.5})).unwrap();
        assert_eq!(draft.name(), "Jam");
        assert_eq!(draft.quantity(), 0);
        assert_eq!(draft.description(), None);
    }

    #[test]
    fn every_failing_field_is_reported() {
        assert_eq!(
            kinds(json!({"name": "   ", "price": "cheap", "quantity": 1.5})),
            [
                "name:string_too_short",
                "price:float_type",
                "quantity:int_from_float"
            ]
        );
        assert_eq!(
            kinds(json!({"price": -1, "quantity": -2, "description": 5})),
            [
                "name:missing",
                "description:string_type",
                "price:greater_than_equal",
                "quantity:greater_than_equal"
            ]
        );
        assert_eq!(
            kinds(json!({"name": "x".repeat(201), "price": 1}))[0],
            "name:string_too_long"
        );
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let item = json!({"name": "Jam", "description": "sweet", "price": 2, "quantity": 1});
        let patched = merge_patch(item.clone(), &json!({"description": null, "quantity": 3}));
        assert_eq!(patched, json!({"name": "Jam", "price": 2, "quantity": 3}));
        let draft = ItemDraft::try_from(&patched).unwrap();
        assert_eq!(draft.description(), None);
        assert!(ItemDraft::try_from(&merge_patch(item.clone(), &json!({"name": null}))).is_err());
        assert_eq!(merge_patch(item, &json!([1, 2])), json!([1, 2]));
        assert_eq!(
            merge_patch(
                json!({"a": {"b": 1, "c": 2}}),
                &json!({"a": {"b": null, "d": 3}})
            ),
            json!({"a": {"c": 2, "d": 3}})
        );
    }
}
