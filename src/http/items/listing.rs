//! What `GET /items` and `GET /items/export` are asked for: filters and sort (both), a page's
//! `limit` and `cursor` (the page only), parsed into the store's terms with every bad
//! parameter reported at once, FastAPI style (`loc` `["query", name]`).
//!
//! A cursor names the last row of a page in its sort's order: the sort's name, the sort
//! key's value in that row and the row's id. The id alone is the cursor of the default sort
//! (plain digits, as before sorts existed); every other sort's cursor starts with the sort's
//! name, so a cursor given with another sort is refused instead of silently misread.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::domain::error::FieldError;
use crate::http::error::{ApiError, ApiResult};
use crate::store::items::{After, ItemFilter, ItemQuery, Sort, SortKey, SortValue};

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// The sorts, by the names the API takes, in the order its documentation lists them.
pub const SORTS: [(&str, Sort); 6] = [
    ("id", sort(SortKey::Id, false)),
    ("-id", sort(SortKey::Id, true)),
    ("price", sort(SortKey::Price, false)),
    ("-price", sort(SortKey::Price, true)),
    ("created_at", sort(SortKey::CreatedAt, false)),
    ("-created_at", sort(SortKey::CreatedAt, true)),
];

const fn sort(key: SortKey, descending: bool) -> Sort {
    Sort { key, descending }
}

fn sort_name(sort: Sort) -> &'static str {
    SORTS
        .iter()
        .find(|(_, known)| *known == sort)
        .map(|(name, _)| *name)
        .expect("every sort has a name")
}

fn parse_sort(name: &str) -> Option<Sort> {
    SORTS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, sort)| *sort)
}

/// A page of a listing: which items, from where, how many.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest {
    pub query: ItemQuery,
    pub after: Option<After>,
    pub limit: i64,
}

fn error(name: &str, kind: &str, msg: impl Into<String>) -> FieldError {
    FieldError::new(vec!["query".into(), name.into()], kind, msg)
}

fn int(params: &HashMap<String, String>, name: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    let raw = params.get(name)?;
    match raw.parse::<i64>() {
        Ok(value) => Some(value),
        Err(_) => {
            errors.push(error(
                name,
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
            ));
            None
        }
    }
}

fn number(
    params: &HashMap<String, String>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<f64> {
    let raw = params.get(name)?;
    match raw.trim().parse::<f64>() {
        Ok(value) if value.is_finite() => Some(value),
        Ok(_) => {
            errors.push(error(
                name,
                "finite_number",
                "Input should be a finite number",
            ));
            None
        }
        Err(_) => {
            errors.push(error(
                name,
                "float_parsing",
                "Input should be a valid number, unable to parse string as a number",
            ));
            None
        }
    }
}

/// The filters and the sort; `errors` gets every bad one.
fn parse_query(params: &HashMap<String, String>, errors: &mut Vec<FieldError>) -> ItemQuery {
    let owner_id = int(params, "owner_id", errors);
    let min_price = number(params, "min_price", errors);
    let max_price = number(params, "max_price", errors);
    if let (Some(min), Some(max)) = (min_price, max_price)
        && min > max
    {
        errors.push(error(
            "max_price",
            "value_error",
            "Value error, max_price must be greater than or equal to min_price",
        ));
    }
    let sort = match params.get("sort") {
        None => Sort::BY_ID,
        Some(name) => parse_sort(name).unwrap_or_else(|| {
            errors.push(error(
                "sort",
                "literal_error",
                "Input should be 'id', '-id', 'price', '-price', 'created_at' or '-created_at'",
            ));
            Sort::BY_ID
        }),
    };
    ItemQuery {
        filter: ItemFilter {
            owner_id,
            name_contains: params.get("q").cloned(),
            min_price,
            max_price,
        },
        sort,
    }
}

/// `GET /items/export`'s parameters: the filters and the sort.
pub fn export_query(params: &HashMap<String, String>) -> ApiResult<ItemQuery> {
    let mut errors = Vec::new();
    let query = parse_query(params, &mut errors);
    if errors.is_empty() {
        Ok(query)
    } else {
        Err(ApiError::validation(errors))
    }
}

/// `GET /items`'s parameters: the filters, the sort, `limit` and `cursor`.
pub fn page_request(params: &HashMap<String, String>) -> ApiResult<PageRequest> {
    let mut errors = Vec::new();
    let query = parse_query(params, &mut errors);
    let sort_understood = params
        .get("sort")
        .is_none_or(|name| parse_sort(name).is_some());
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<i64>() {
            Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
            Ok(_) => {
                errors.push(error(
                    "limit",
                    "less_than_equal",
                    "Input should be between 1 and 100",
                ));
                DEFAULT_LIMIT
            }
            Err(_) => {
                errors.push(error(
                    "limit",
                    "int_parsing",
                    "Input should be a valid integer, unable to parse string as an integer",
                ));
                DEFAULT_LIMIT
            }
        },
    };
    let after = match params.get("cursor") {
        None => None,
        Some(raw) => match decode_cursor(raw) {
            None => {
                errors.push(error("cursor", "value_error", "Invalid cursor"));
                None
            }
            // Only worth comparing with a sort that was understood.
            Some((sort, _)) if sort != query.sort && sort_understood => {
                errors.push(error(
                    "cursor",
                    "value_error",
                    format!(
                        "The cursor belongs to sort '{}', not '{}'",
                        sort_name(sort),
                        sort_name(query.sort)
                    ),
                ));
                None
            }
            Some((_, after)) => Some(after),
        },
    };
    if errors.is_empty() {
        Ok(PageRequest {
            query,
            after,
            limit,
        })
    } else {
        Err(ApiError::validation(errors))
    }
}

/// The cursor that continues `sort`'s order after `after`.
pub fn encode_cursor(sort: Sort, after: &After) -> String {
    let name = sort_name(sort);
    match after.value {
        SortValue::Id if !sort.descending => after.id.to_string(),
        SortValue::Id => format!("{name}.{}", after.id),
        SortValue::Price(price) => format!("{name}.{:016x}.{}", price.to_bits(), after.id),
        SortValue::CreatedAt(at) => {
            let nanos = i128::from(at.timestamp()) * 1_000_000_000
                + i128::from(at.timestamp_subsec_nanos());
            format!("{name}.{nanos}.{}", after.id)
        }
    }
}

fn id(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A cursor's sort and position, if it is one larder made.
pub fn decode_cursor(cursor: &str) -> Option<(Sort, After)> {
    if let Some(id) = id(cursor) {
        let after = After {
            value: SortValue::Id,
            id,
        };
        return Some((Sort::BY_ID, after));
    }
    let (name, rest) = cursor.split_once('.')?;
    let sort = parse_sort(name)?;
    let (value, id) = match sort.key {
        SortKey::Id if sort.descending => (SortValue::Id, id(rest)?),
        SortKey::Id => return None,
        SortKey::Price => {
            let (bits, last) = rest.split_once('.')?;
            if bits.len() != 16 || !bits.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return None;
            }
            let price = f64::from_bits(u64::from_str_radix(bits, 16).ok()?);
            if !price.is_finite() {
                return None;
            }
            (SortValue::Price(price), id(last)?)
        }
        SortKey::CreatedAt => {
            let (nanos, last) = rest.rsplit_once('.')?;
            let digits = nanos.strip_prefix('-').unwrap_or(nanos);
            if digits.is_empty() || digits.len() > 30 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let nanos: i128 = nanos.parse().ok()?;
            let seconds = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
            let subsec = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
            let at: DateTime<Utc> = DateTime::from_timestamp(seconds, subsec)?;
            (SortValue::CreatedAt(at), id(last)?)
        }
    };
    Some((sort, After { value, id }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cursors_round_trip_under_every_sort() {
        let at = DateTime::from_timestamp(1_764_000_000, 123_456_789).unwrap();
        let before_1970 = DateTime::from_timestamp(-5, 7).unwrap();
        for (_, sort) in SORTS {
            for value in [
                SortValue::Id,
                SortValue::Price(4.5),
                SortValue::Price(0.0),
                SortValue::Price(1e300),
                SortValue::CreatedAt(at),
                SortValue::CreatedAt(before_1970),
            ] {
                let after = After { value, id: 42 };
                if !after.fits(sort) {
                    continue;
                }
                let cursor = encode_cursor(sort, &after);
                assert_eq!(decode_cursor(&cursor), Some((sort, after)), "{cursor}");
            }
        }
        assert_eq!(
            encode_cursor(
                Sort::BY_ID,
                &After {
                    value: SortValue::Id,
                    id: 7
                }
            ),
            "7"
        );
    }

    #[test]
    fn garbage_is_not_a_cursor() {
        for bad in [
            "",
            "garbage!",
            "-1",
            "+1",
            "1.5",
            " 1",
            "1234567890123456789",
            "bm90LWEtY3Vyc29y",
            "id.5",
            "-id.",
            "price.5",
            "price.7ff8000000000000.1",
            "price.400C000000000000.1",
            "created_at.x.1",
            "created_at.1",
            "-created_at..1",
            "nosuch.1.1",
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_bad_parameter_is_reported_at_once() {
        let Err(error) = page_request(&params(&[
            ("sort", "name"),
            ("limit", "0"),
            ("min_price", "abc"),
            ("owner_id", "x"),
        ])) else {
            panic!("accepted")
        };
        assert_eq!(error.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn a_cursor_of_another_sort_is_refused() {
        let cursor = encode_cursor(
            sort(SortKey::Price, false),
            &After {
                value: SortValue::Price(1.0),
                id: 3,
            },
        );
        assert!(page_request(&params(&[("sort", "price"), ("cursor", &cursor)])).is_ok());
        assert!(page_request(&params(&[("sort", "-price"), ("cursor", &cursor)])).is_err());
        assert!(page_request(&params(&[("cursor", &cursor)])).is_err());
        assert!(page_request(&params(&[("sort", "-id"), ("cursor", "3")])).is_err());
    }

    #[test]
    fn min_above_max_is_refused_and_equal_is_fine() {
        assert!(page_request(&params(&[("min_price", "5"), ("max_price", "4")])).is_err());
        assert!(page_request(&params(&[("min_price", "5"), ("max_price", "5")])).is_ok());
        assert!(page_request(&params(&[("min_price", "inf")])).is_err());
    }
}
