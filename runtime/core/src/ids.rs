//! Typed identifiers. A bare `String` never crosses a crate boundary where one
//! of these is meant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} '{value}': {reason}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// The tenant that owns a row. Every table carries one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// The tenant used until tenants are managed explicitly.
    pub const DEFAULT: &'static str = "default";

    pub fn default_tenant() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        check_name("tenant id", &value)?;
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pack's ref: `^[a-z0-9_]+$`, as StackStorm requires.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PackRef(String);

impl PackRef {
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        check_name("pack ref", &value)?;
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PackRef {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        Self::new(value)
    }
}

impl From<PackRef> for String {
    fn from(value: PackRef) -> Self {
        value.0
    }
}

impl fmt::Display for PackRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `<pack>.<name>`, e.g. `core.echo`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ActionRef {
    pack: PackRef,
    name: String,
}

impl ActionRef {
    pub fn new(pack: PackRef, name: impl Into<String>) -> Result<Self, IdError> {
        let name = name.into();
        check_action_name(&name)?;
        Ok(Self { pack, name })
    }

    pub fn pack(&self) -> &PackRef {
        &self.pack
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

fn check_action_name(name: &str) -> Result<(), IdError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(IdError {
            kind: "action name",
            value: name.to_owned(),
            reason: "use letters, digits, '_' or '-'",
        })
    }
}

impl FromStr for ActionRef {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let (pack, name) = s.split_once('.').ok_or_else(|| IdError {
            kind: "action ref",
            value: s.to_owned(),
            reason: "expected <pack>.<action>, e.g. core.echo",
        })?;
        Self::new(PackRef::new(pack)?, name)
    }
}

impl TryFrom<String> for ActionRef {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        value.parse()
    }
}

impl From<ActionRef> for String {
    fn from(value: ActionRef) -> Self {
        value.to_string()
    }
}

impl fmt::Display for ActionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.pack, self.name)
    }
}

/// An execution's id: a UUIDv7 in its 32-hex-digit form, so ids sort by
/// creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExecutionId(String);

impl ExecutionId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ExecutionId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric());
        if ok {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(IdError {
                kind: "execution id",
                value: s.to_owned(),
                reason: "expected the hex id printed by `squall execution list`",
            })
        }
    }
}

impl TryFrom<String> for ExecutionId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        value.parse()
    }
}

impl From<ExecutionId> for String {
    fn from(value: ExecutionId) -> Self {
        value.0
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_name(kind: &'static str, value: &str) -> Result<(), IdError> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(IdError {
            kind,
            value: value.to_owned(),
            reason: "use lowercase letters, digits and '_'",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_ref_round_trips() {
        let r: ActionRef = "core.echo".parse().expect("valid ref");
        assert_eq!(r.pack().as_str(), "core");
        assert_eq!(r.name(), "echo");
        assert_eq!(r.to_string(), "core.echo");
    }

    #[test]
    fn action_ref_rejects_garbage() {
        assert!("echo".parse::<ActionRef>().is_err());
        assert!("Core.echo".parse::<ActionRef>().is_err());
        assert!("core.".parse::<ActionRef>().is_err());
        assert!("core.ec ho".parse::<ActionRef>().is_err());
    }

    #[test]
    fn execution_ids_sort_by_creation() {
        let a = ExecutionId::generate();
        let b = ExecutionId::generate();
        assert!(a < b);
        assert_eq!(a.as_str().len(), 32);
        assert_eq!(a.as_str().parse::<ExecutionId>().expect("parses"), a);
    }
}
