//! YAQL, the expression language of most Orquesta workflows (`<% ... %>`).
//!
//! No Rust implementation of YAQL exists, so this is Squall's own: a Pratt
//! parser ([`parse`]) and an evaluator over JSON values ([`evaluate`]) for
//! the subset workflows use — `$`, `$.x`, `$name`, literals, lists and dicts,
//! the operators, indexing, method calls, `->` and `let`, `=>` named
//! arguments, and YAQL's common standard functions. Functions it does not
//! know are asked of a [`Host`] (Orquesta's `ctx()`, `result()`, ...).

mod eval;
mod parse;

pub use eval::{Host, NoHost, truthy};
pub use parse::{Arg, BinOp, Expr, UnOp, parse};

/// A YAQL expression that could not be parsed or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("syntax error at {at}: {message} (in '{expression}')")]
    Syntax {
        expression: String,
        at: usize,
        message: String,
    },
    #[error("{0}")]
    Eval(String),
}

impl Error {
    fn syntax(expression: &str, at: usize, message: &str) -> Self {
        Self::Syntax {
            expression: expression.to_owned(),
            at,
            message: message.to_owned(),
        }
    }
}

/// Parse `src` and evaluate it with `$` bound to `data`.
pub fn evaluate(
    src: &str,
    data: &serde_json::Value,
    host: &dyn Host,
) -> Result<serde_json::Value, Error> {
    eval::evaluate(&parse(src)?, data, host)
}

/// Evaluate an already parsed expression.
pub fn evaluate_expr(
    expr: &Expr,
    data: &serde_json::Value,
    host: &dyn Host,
) -> Result<serde_json::Value, Error> {
    eval::evaluate(expr, data, host)
}
