//! Inquiries (StackStorm's `core.ask`): the question an execution asks, who
//! may answer it, and the check of an answer against its schema.
//!
//! An inquiry is an execution of an `inquirer` action. While it waits it is
//! `pending`, and its result holds the question: `{schema, roles, users,
//! route, ttl}`. The answer is added to that result as `response`.

use serde_json::{Map, Value, json};

use crate::auth::Principal;

/// The question an inquiry asks, read from its execution's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub schema: Value,
    pub users: Vec<String>,
    pub roles: Vec<String>,
    pub route: String,
    /// Minutes it waits; 0: for ever.
    pub ttl: f64,
}

impl Question {
    /// The question from an inquirer action's resolved parameters.
    pub fn from_parameters(parameters: &Map<String, Value>) -> Self {
        Self::from_map(parameters)
    }

    /// The question kept in a pending (or answered) inquiry's result.
    pub fn from_result(result: Option<&Value>) -> Self {
        Self::from_map(result.and_then(Value::as_object).unwrap_or(&Map::new()))
    }

    fn from_map(m: &Map<String, Value>) -> Self {
        let strings = |key: &str| -> Vec<String> {
            m.get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        Self {
            schema: m.get("schema").cloned().unwrap_or_else(|| json!({})),
            users: strings("users"),
            roles: strings("roles"),
            route: m
                .get("route")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            ttl: m.get("ttl").and_then(Value::as_f64).unwrap_or(0.0),
        }
    }

    /// The execution's result while it waits (StackStorm's shape).
    pub fn to_result(&self) -> Value {
        json!({
            "schema": self.schema,
            "roles": self.roles,
            "users": self.users,
            "route": self.route,
            "ttl": ttl_value(self.ttl),
        })
    }

    /// The inquiry as `/api/v1/inquiries` shows it.
    pub fn to_api(&self, id: &str) -> Value {
        json!({
            "id": id,
            "route": self.route,
            "ttl": ttl_value(self.ttl),
            "users": self.users,
            "roles": self.roles,
            "schema": self.schema,
        })
    }

    /// Whether `who` may answer: named in `users` (when any are) and
    /// holding one of `roles` (when any are). Both must hold, as in
    /// StackStorm.
    pub fn may_answer(&self, who: &Principal) -> bool {
        let user_ok = self.users.is_empty() || self.users.contains(&who.user);
        let role_ok = self.roles.is_empty() || self.roles.iter().any(|r| r == who.role.as_str());
        user_ok && role_ok
    }

    /// The schema compiled, or why it cannot be (an inquiry with such a
    /// schema could never be answered).
    pub fn validator(&self) -> Result<jsonschema::Validator, String> {
        jsonschema::draft4::new(&draft4(&self.schema)).map_err(|e| e.to_string())
    }

    /// Check `response` against the schema; `Err` lists each problem with
    /// the field it is about.
    pub fn check(&self, response: &Value) -> Result<(), Vec<String>> {
        let validator = self.validator().map_err(|e| vec![e])?;
        let problems: Vec<String> = validator
            .iter_errors(response)
            .map(|e| {
                let path = e.instance_path().to_string();
                let field = path.trim_start_matches('/').replace('/', ".");
                if field.is_empty() {
                    e.to_string()
                } else {
                    format!("field '{field}': {e}")
                }
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// A whole number of minutes as an integer (as StackStorm shows `ttl`).
fn ttl_value(ttl: f64) -> Value {
    if ttl.fract() == 0.0 && ttl.abs() < 1e15 {
        json!(ttl as i64)
    } else {
        json!(ttl)
    }
}

/// StackStorm's inquiry schemas are JSON Schema draft 3 in one respect:
/// a property says `required: true` itself. Draft 4 lists required
/// properties in the object's `required` array. This moves the first
/// into the second, at every level, and leaves the rest as it is.
pub fn draft4(schema: &Value) -> Value {
    match schema {
        Value::Object(m) => {
            let mut out = Map::new();
            let mut required: Vec<Value> = m
                .get("required")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (key, value) in m {
                match (key.as_str(), value) {
                    ("properties", Value::Object(props)) => {
                        let mut converted = Map::new();
                        for (name, prop) in props {
                            if prop.get("required") == Some(&Value::Bool(true))
                                && !required.iter().any(|r| r == name)
                            {
                                required.push(Value::String(name.clone()));
                            }
                            converted.insert(name.clone(), draft4(prop));
                        }
                        out.insert(key.clone(), Value::Object(converted));
                    }
                    // A property's own flag, moved to its parent above.
                    ("required", _) => {}
                    _ => {
                        out.insert(key.clone(), draft4(value));
                    }
                }
            }
            if !required.is_empty() {
                out.insert("required".into(), Value::Array(required));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(draft4).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TenantId;
    use crate::auth::Role;

    fn question() -> Question {
        Question::from_parameters(
            json!({
                "schema": {
                    "type": "object",
                    "properties": {
                        "approved": {"type": "boolean", "required": true},
                        "department_id": {"type": "number", "required": true},
                        "extra": {"type": "string"},
                        "nested": {"type": "object", "properties": {"x": {"type": "integer", "required": true}}},
                    },
                },
                "users": [],
                "roles": [],
                "route": "ops",
                "ttl": 60,
            })
            .as_object()
            .expect("object"),
        )
    }

    #[test]
    fn draft3_required_flags_become_draft4_arrays() {
        let converted = draft4(&question().schema);
        assert_eq!(converted["required"], json!(["approved", "department_id"]));
        assert_eq!(converted["properties"]["nested"]["required"], json!(["x"]));
        assert!(
            converted["properties"]["approved"]
                .get("required")
                .is_none()
        );
        // Already draft 4: kept.
        let d4 = json!({"type": "object", "required": ["a"], "properties": {"a": {}}});
        assert_eq!(draft4(&d4), d4);
    }

    #[test]
    fn answers_are_checked_against_the_schema() {
        let q = question();
        q.check(&json!({"approved": true, "department_id": 7}))
            .expect("valid");
        let missing = q.check(&json!({"approved": true})).expect_err("missing");
        assert!(missing[0].contains("department_id"), "{missing:?}");
        let wrong = q
            .check(&json!({"approved": "yes", "department_id": 7}))
            .expect_err("type");
        assert!(wrong[0].starts_with("field 'approved'"), "{wrong:?}");
        let deep = q
            .check(&json!({"approved": true, "department_id": 1, "nested": {}}))
            .expect_err("nested");
        assert!(deep[0].starts_with("field 'nested'"), "{deep:?}");
    }

    #[test]
    fn users_and_roles_both_bound_who_answers() {
        let who = |user: &str, role| Principal {
            tenant: TenantId::default_tenant(),
            user: user.into(),
            role,
        };
        let mut q = question();
        assert!(q.may_answer(&who("anyone", Role::Viewer)));
        q.users = vec!["jack".into()];
        assert!(q.may_answer(&who("jack", Role::Operator)));
        assert!(!q.may_answer(&who("jill", Role::Admin)));
        q.roles = vec!["admin".into()];
        assert!(!q.may_answer(&who("jack", Role::Operator)));
        assert!(q.may_answer(&who("jack", Role::Admin)));
        q.users.clear();
        assert!(q.may_answer(&who("jill", Role::Admin)));
    }

    #[test]
    fn the_question_round_trips_through_the_result() {
        let q = question();
        assert_eq!(Question::from_result(Some(&q.to_result())), q);
        assert_eq!(q.to_result()["ttl"], json!(60));
        let api = q.to_api("abc");
        assert_eq!(api["id"], "abc");
        assert_eq!(api["route"], "ops");
    }
}
