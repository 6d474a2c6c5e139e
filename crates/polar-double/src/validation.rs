//! Request validation that reproduces the error items FastAPI/pydantic v2 put in a 422
//! (`type`, `loc`, `msg`, `input`, `ctx`), including pydantic's lax coercions
//! (`"5"`, `5.0` and `true` are accepted where an integer is expected).

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::time;

pub(crate) const MAX_INT32: i64 = 2_147_483_647;

#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<Value>);

impl Errors {
    pub(crate) fn push(
        &mut self,
        kind: &str,
        loc: Vec<Value>,
        msg: impl Into<String>,
        input: Value,
        ctx: Option<Value>,
    ) {
        let mut item = json!({ "type": kind, "loc": loc, "msg": msg.into(), "input": input });
        if let Some(ctx) = ctx {
            item["ctx"] = ctx;
        }
        self.0.push(item);
    }

    pub(crate) fn missing(&mut self, loc: Vec<Value>, input: Value) {
        self.push("missing", loc, "Field required", input, None);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn into_vec(self) -> Vec<Value> {
        self.0
    }
}

pub(crate) fn loc(prefix: &[Value], field: &str) -> Vec<Value> {
    let mut loc = prefix.to_vec();
    loc.push(Value::from(field));
    loc
}

/// A field of a partial update: absent fields are left alone, `null` clears.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Patch<T> {
    Absent,
    Null,
    Set(T),
}

impl<T> Patch<T> {
    pub(crate) fn into_option(self) -> Option<T> {
        match self {
            Patch::Set(v) => Some(v),
            Patch::Absent | Patch::Null => None,
        }
    }
}

struct Failure {
    kind: &'static str,
    msg: String,
    ctx: Option<Value>,
}

impl Failure {
    fn new(kind: &'static str, msg: impl Into<String>) -> Failure {
        Failure {
            kind,
            msg: msg.into(),
            ctx: None,
        }
    }
}

fn lax_int(value: &Value) -> Result<i128, Failure> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Ok(i128::from(u))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if !f.is_finite() {
                    Err(Failure::new(
                        "finite_number",
                        "Input should be a finite number",
                    ))
                } else if f.fract() != 0.0 {
                    Err(Failure::new(
                        "int_from_float",
                        "Input should be a valid integer, got a number with a fractional part",
                    ))
                } else {
                    Ok(f as i128)
                }
            }
        }
        Value::String(s) => s.trim().parse::<i128>().map_err(|_| {
            Failure::new(
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
            )
        }),
        Value::Bool(b) => Ok(i128::from(*b)),
        _ => Err(Failure::new("int_type", "Input should be a valid integer")),
    }
}

fn bounded_int(value: &Value, min: i64, max: i64) -> Result<i64, Failure> {
    let n = lax_int(value)?;
    if n < i128::from(min) {
        return Err(Failure {
            kind: "greater_than_equal",
            msg: format!("Input should be greater than or equal to {min}"),
            ctx: Some(json!({ "ge": min })),
        });
    }
    if n > i128::from(max) {
        return Err(Failure {
            kind: "less_than_equal",
            msg: format!("Input should be less than or equal to {max}"),
            ctx: Some(json!({ "le": max })),
        });
    }
    Ok(n as i64)
}

fn string(value: &Value, min_len: usize) -> Result<String, Failure> {
    let Value::String(s) = value else {
        return Err(Failure::new(
            "string_type",
            "Input should be a valid string",
        ));
    };
    if s.chars().count() < min_len {
        let plural = if min_len == 1 { "" } else { "s" };
        return Err(Failure {
            kind: "string_too_short",
            msg: format!("String should have at least {min_len} character{plural}"),
            ctx: Some(json!({ "min_length": min_len })),
        });
    }
    Ok(s.clone())
}

fn datetime(value: &Value) -> Result<String, Failure> {
    let Value::String(s) = value else {
        return Err(Failure::new(
            "datetime_type",
            "Input should be a valid datetime",
        ));
    };
    time::parse_datetime(s).ok_or_else(|| {
        Failure::new(
            "datetime_from_date_parsing",
            "Input should be a valid datetime or date, invalid datetime format",
        )
    })
}

/// Pydantic's `UUID4`: any textual UUID form `uuid` accepts, then version 4 only.
pub(crate) fn uuid4(input: &str, loc: Vec<Value>, errors: &mut Errors) -> Option<Uuid> {
    match Uuid::parse_str(input) {
        Err(e) => {
            errors.push(
                "uuid_parsing",
                loc,
                format!("Input should be a valid UUID, {e}"),
                Value::from(input),
                Some(json!({ "error": e.to_string() })),
            );
            None
        }
        Ok(id) if id.get_version_num() != 4 => {
            errors.push(
                "uuid_version",
                loc,
                "UUID version 4 expected",
                Value::from(input),
                Some(json!({ "expected_version": 4 })),
            );
            None
        }
        Ok(id) => Some(id),
    }
}

fn record<T>(
    result: Result<T, Failure>,
    loc: Vec<Value>,
    input: &Value,
    errors: &mut Errors,
) -> Option<T> {
    result
        .map_err(|f| errors.push(f.kind, loc, f.msg, input.clone(), f.ctx))
        .ok()
}

/// Reads an optional, nullable field of a request object.
pub(crate) struct Fields<'a> {
    pub(crate) object: &'a Map<String, Value>,
    pub(crate) prefix: Vec<Value>,
}

impl Fields<'_> {
    fn field<T>(
        &self,
        name: &str,
        errors: &mut Errors,
        check: impl FnOnce(&Value) -> Result<T, Failure>,
    ) -> Patch<T> {
        match self.object.get(name) {
            None => Patch::Absent,
            Some(Value::Null) => Patch::Null,
            Some(v) => match record(check(v), loc(&self.prefix, name), v, errors) {
                Some(t) => Patch::Set(t),
                None => Patch::Absent,
            },
        }
    }

    pub(crate) fn int(&self, name: &str, min: i64, max: i64, errors: &mut Errors) -> Patch<i64> {
        self.field(name, errors, |v| bounded_int(v, min, max))
    }

    pub(crate) fn string(&self, name: &str, min_len: usize, errors: &mut Errors) -> Patch<String> {
        self.field(name, errors, |v| string(v, min_len))
    }

    pub(crate) fn datetime(&self, name: &str, errors: &mut Errors) -> Patch<String> {
        self.field(name, errors, datetime)
    }

    pub(crate) fn object(&self, name: &str, errors: &mut Errors) -> Patch<Map<String, Value>> {
        self.field(name, errors, |v| match v {
            Value::Object(m) => Ok(m.clone()),
            _ => Err(Failure::new(
                "dict_type",
                "Input should be a valid dictionary",
            )),
        })
    }

    pub(crate) fn uuid4_list(&self, name: &str, errors: &mut Errors) -> Patch<Vec<Uuid>> {
        let Some(value) = self.object.get(name) else {
            return Patch::Absent;
        };
        let items = match value {
            Value::Null => return Patch::Null,
            Value::Array(items) => items,
            other => {
                errors.push(
                    "list_type",
                    loc(&self.prefix, name),
                    "Input should be a valid list",
                    other.clone(),
                    None,
                );
                return Patch::Absent;
            }
        };
        let mut ids = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let mut item_loc = loc(&self.prefix, name);
            item_loc.push(Value::from(i));
            match item {
                Value::String(s) => ids.extend(uuid4(s, item_loc, errors)),
                other => errors.push(
                    "uuid_type",
                    item_loc,
                    "UUID input should be a string, bytes or UUID object",
                    other.clone(),
                    None,
                ),
            }
        }
        Patch::Set(ids)
    }

    /// A required or optional choice among fixed strings (a pydantic `Enum`).
    pub(crate) fn choice(
        &self,
        name: &str,
        allowed: &[&str],
        errors: &mut Errors,
    ) -> Patch<String> {
        self.field(name, errors, |v| {
            v.as_str()
                .filter(|s| allowed.contains(s))
                .map(str::to_owned)
                .ok_or_else(|| {
                    let expected = expected_list(allowed);
                    Failure {
                        kind: "enum",
                        msg: format!("Input should be {expected}"),
                        ctx: Some(json!({ "expected": expected })),
                    }
                })
        })
    }
}

/// `'a', 'b' or 'c'`, as pydantic lists enum members.
pub(crate) fn expected_list(allowed: &[&str]) -> String {
    let quoted: Vec<String> = allowed.iter().map(|s| format!("'{s}'")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// A query-string integer (`page`, `limit`): strict `int` parsing plus `gt`.
pub(crate) fn query_int_gt(
    raw: &str,
    gt: i64,
    loc: Vec<Value>,
    errors: &mut Errors,
) -> Option<i64> {
    let input = Value::from(raw);
    let n = record(lax_int(&input), loc.clone(), &input, errors)?;
    if n <= i128::from(gt) {
        errors.push(
            "greater_than",
            loc,
            format!("Input should be greater than {gt}"),
            input,
            Some(json!({ "gt": gt })),
        );
        return None;
    }
    Some(n.min(i128::from(i64::MAX)) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_int(v: Value) -> Result<i64, &'static str> {
        bounded_int(&v, 1, MAX_INT32).map_err(|f| f.kind)
    }

    #[test]
    fn integers_follow_pydantic_lax_mode() {
        assert_eq!(check_int(json!(5)), Ok(5));
        assert_eq!(check_int(json!("7")), Ok(7));
        assert_eq!(check_int(json!(3.0)), Ok(3));
        assert_eq!(check_int(json!(true)), Ok(1));
        assert_eq!(check_int(json!(0)), Err("greater_than_equal"));
        assert_eq!(check_int(json!(2_147_483_648_i64)), Err("less_than_equal"));
        assert_eq!(check_int(json!(1e30)), Err("less_than_equal"));
        assert_eq!(check_int(json!(2.5)), Err("int_from_float"));
        assert_eq!(check_int(json!("two")), Err("int_parsing"));
        assert_eq!(check_int(json!([1])), Err("int_type"));
    }

    #[test]
    fn enum_expectations_read_like_pydantic() {
        assert_eq!(
            expected_list(&["once", "forever", "repeating"]),
            "'once', 'forever' or 'repeating'"
        );
        assert_eq!(expected_list(&["fixed"]), "'fixed'");
    }
}
