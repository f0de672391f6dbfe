//! YAQL's syntax: tokens, then a Pratt parser into [`Expr`].
//!
//! Operator precedence follows YAQL's standard table, from tightest to
//! loosest: `.` `?.` `[]` (postfix); unary `+` `-`; `*` `/` `mod`; `+` `-`;
//! `<` `>` `<=` `>=` `=` `!=` `in`; `not`; `and`; `or`; `->` (right
//! associative). `=>` only separates a name from its value in arguments.

use super::Error;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// `$`: the data the expression is evaluated against.
    Dollar,
    /// `$name`: a context variable.
    Var(String),
    List(Vec<Expr>),
    Dict(Vec<(Expr, Expr)>),
    /// `x.name`, or `x?.name` when `null_safe`.
    Attr {
        target: Box<Expr>,
        name: String,
        null_safe: bool,
    },
    /// `x[i]`.
    Index(Box<Expr>, Box<Expr>),
    /// `f(args)`, or `x.f(args)` with `x` as the receiver (the first
    /// argument).
    Call {
        name: String,
        receiver: Option<Box<Expr>>,
        args: Vec<Arg>,
    },
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `a -> b`: `b` evaluated with `$` bound to `a` (and the variables a
    /// `let` on the left sets).
    Chain(Box<Expr>, Box<Expr>),
}

/// A call's argument: positional, `name => value`, or `key => value` with
/// any other expression as the key (`switch($ > 1 => 'big', true => 0)`).
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Pos(Expr),
    Named(String, Expr),
    Pair(Expr, Expr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Plus,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Mul,
    Div,
    Mod,
    Add,
    Sub,
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    In,
    And,
    Or,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Float(f64),
    Str(String),
    Ident(String),
    Dollar(Option<String>),
    Punct(&'static str),
}

const PUNCTS: &[&str] = &[
    "?.", "=>", "->", "!=", "<=", ">=", ".", "(", ")", "[", "]", "{", "}", ",", "=", "<", ">", "+",
    "-", "*", "/",
];

fn tokenize(src: &str) -> Result<Vec<(usize, Tok)>, Error> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() {
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let is_float = i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit();
            if is_float {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().collect();
            let tok = if is_float {
                Tok::Float(
                    text.parse()
                        .map_err(|_| Error::syntax(src, start, "bad number"))?,
                )
            } else {
                Tok::Int(
                    text.parse()
                        .map_err(|_| Error::syntax(src, start, "integer too large"))?,
                )
            };
            out.push((start, tok));
            continue;
        }
        if c == '\'' || c == '"' {
            i += 1;
            let mut text = String::new();
            loop {
                let Some(&d) = chars.get(i) else {
                    return Err(Error::syntax(src, start, "unterminated string"));
                };
                i += 1;
                match d {
                    '\\' => {
                        let Some(&e) = chars.get(i) else {
                            return Err(Error::syntax(src, start, "unterminated string"));
                        };
                        i += 1;
                        text.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => other,
                        });
                    }
                    d if d == c => break,
                    d => text.push(d),
                }
            }
            out.push((start, Tok::Str(text)));
            continue;
        }
        if c == '$' {
            i += 1;
            let name_start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[name_start..i].iter().collect();
            out.push((start, Tok::Dollar((!name.is_empty()).then_some(name))));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((start, Tok::Ident(chars[start..i].iter().collect())));
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let Some(p) = PUNCTS.iter().find(|p| rest.starts_with(**p)) else {
            return Err(Error::syntax(src, start, &format!("unexpected '{c}'")));
        };
        i += p.chars().count();
        out.push((start, Tok::Punct(p)));
    }
    Ok(out)
}

/// Parse one YAQL expression (the text between `<%` and `%>`).
pub fn parse(src: &str) -> Result<Expr, Error> {
    let tokens = tokenize(src)?;
    let mut p = Parser {
        src,
        tokens,
        pos: 0,
    };
    if p.tokens.is_empty() {
        return Err(Error::syntax(src, 0, "empty expression"));
    }
    let e = p.expr(0)?;
    if let Some((at, t)) = p.tokens.get(p.pos) {
        return Err(Error::syntax(
            src,
            *at,
            &format!("unexpected {}", describe(t)),
        ));
    }
    Ok(e)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Int(n) => format!("number {n}"),
        Tok::Float(n) => format!("number {n}"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Dollar(None) => "'$'".to_owned(),
        Tok::Dollar(Some(n)) => format!("'${n}'"),
        Tok::Punct(p) => format!("'{p}'"),
    }
}

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<(usize, Tok)>,
    pos: usize,
}

/// Binding powers: (left, right) of each infix operator.
fn infix(t: &Tok) -> Option<(u8, u8)> {
    Some(match t {
        Tok::Punct("->") => (2, 1),
        Tok::Ident(w) if w == "or" => (3, 4),
        Tok::Ident(w) if w == "and" => (5, 6),
        // `not` (prefix) binds at 7.
        Tok::Punct("=" | "!=" | "<" | ">" | "<=" | ">=") => (9, 10),
        Tok::Ident(w) if w == "in" => (9, 10),
        Tok::Punct("+" | "-") => (11, 12),
        Tok::Punct("*" | "/") => (13, 14),
        Tok::Ident(w) if w == "mod" => (13, 14),
        _ => return None,
    })
}

const NOT_POWER: u8 = 7;
const UNARY_POWER: u8 = 15;

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map_or(self.src.len(), |(at, _)| *at)
    }

    fn error(&self, message: &str) -> Error {
        Error::syntax(self.src, self.at(), message)
    }

    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(q)) if *q == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &str) -> Result<(), Error> {
        if self.eat(p) {
            Ok(())
        } else {
            let found = self.peek().map_or_else(|| "the end".to_owned(), describe);
            Err(self.error(&format!("expected '{p}', found {found}")))
        }
    }

    fn expr(&mut self, min: u8) -> Result<Expr, Error> {
        let mut left = self.prefix()?;
        while let Some(t) = self.peek() {
            let Some((l, r)) = infix(t) else { break };
            if l < min {
                break;
            }
            let t = t.clone();
            self.pos += 1;
            let right = self.expr(r)?;
            left = match t {
                Tok::Punct("->") => Expr::Chain(Box::new(left), Box::new(right)),
                t => {
                    let op = match t {
                        Tok::Punct("=") => BinOp::Eq,
                        Tok::Punct("!=") => BinOp::Ne,
                        Tok::Punct("<") => BinOp::Lt,
                        Tok::Punct(">") => BinOp::Gt,
                        Tok::Punct("<=") => BinOp::Le,
                        Tok::Punct(">=") => BinOp::Ge,
                        Tok::Punct("+") => BinOp::Add,
                        Tok::Punct("-") => BinOp::Sub,
                        Tok::Punct("*") => BinOp::Mul,
                        Tok::Punct("/") => BinOp::Div,
                        Tok::Ident(w) => match w.as_str() {
                            "mod" => BinOp::Mod,
                            "in" => BinOp::In,
                            "and" => BinOp::And,
                            _ => BinOp::Or,
                        },
                        _ => unreachable!("infix() only admits operators"),
                    };
                    Expr::Binary(op, Box::new(left), Box::new(right))
                }
            };
        }
        Ok(left)
    }

    fn prefix(&mut self) -> Result<Expr, Error> {
        let Some((_, t)) = self.tokens.get(self.pos).cloned() else {
            return Err(self.error("the expression ends too early"));
        };
        self.pos += 1;
        let atom = match t {
            Tok::Punct("-") => {
                return Ok(Expr::Unary(UnOp::Neg, Box::new(self.expr(UNARY_POWER)?)));
            }
            Tok::Punct("+") => {
                return Ok(Expr::Unary(UnOp::Plus, Box::new(self.expr(UNARY_POWER)?)));
            }
            Tok::Ident(w) if w == "not" => {
                return Ok(Expr::Unary(UnOp::Not, Box::new(self.expr(NOT_POWER)?)));
            }
            Tok::Int(n) => Expr::Int(n),
            Tok::Float(n) => Expr::Float(n),
            Tok::Str(s) => Expr::Str(s),
            Tok::Dollar(None) => Expr::Dollar,
            Tok::Dollar(Some(name)) => Expr::Var(name),
            Tok::Ident(w) => match w.as_str() {
                "true" => Expr::Bool(true),
                "false" => Expr::Bool(false),
                "null" => Expr::Null,
                _ if self.eat("(") => Expr::Call {
                    args: self.args()?,
                    name: w,
                    receiver: None,
                },
                // A bare name is a string, as YAQL reads `$.a` and `dict(a => 1)`.
                _ => Expr::Str(w),
            },
            Tok::Punct("(") => {
                let e = self.expr(0)?;
                self.expect(")")?;
                e
            }
            Tok::Punct("[") => {
                let mut items = Vec::new();
                if !self.eat("]") {
                    loop {
                        items.push(self.expr(0)?);
                        if self.eat("]") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                Expr::List(items)
            }
            Tok::Punct("{") => {
                let mut pairs = Vec::new();
                if !self.eat("}") {
                    loop {
                        let k = self.expr(0)?;
                        self.expect("=>")?;
                        let v = self.expr(0)?;
                        pairs.push((k, v));
                        if self.eat("}") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                Expr::Dict(pairs)
            }
            other => {
                self.pos -= 1;
                return Err(self.error(&format!("unexpected {}", describe(&other))));
            }
        };
        self.postfix(atom)
    }

    fn postfix(&mut self, mut e: Expr) -> Result<Expr, Error> {
        loop {
            let null_safe = if self.eat(".") {
                false
            } else if self.eat("?.") {
                true
            } else if self.eat("[") {
                let index = self.expr(0)?;
                self.expect("]")?;
                e = Expr::Index(Box::new(e), Box::new(index));
                continue;
            } else {
                return Ok(e);
            };
            let Some((_, Tok::Ident(name))) = self.tokens.get(self.pos).cloned() else {
                return Err(self.error("expected a name after '.'"));
            };
            self.pos += 1;
            e = if self.eat("(") {
                Expr::Call {
                    args: self.args()?,
                    name,
                    receiver: Some(Box::new(e)),
                }
            } else {
                Expr::Attr {
                    target: Box::new(e),
                    name,
                    null_safe,
                }
            };
        }
    }

    /// Arguments after `(`, through `)`.
    fn args(&mut self) -> Result<Vec<Arg>, Error> {
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            let key = self.expr(0)?;
            args.push(if self.eat("=>") {
                let value = self.expr(0)?;
                match key {
                    Expr::Str(name) => Arg::Named(name, value),
                    key => Arg::Pair(key, value),
                }
            } else {
                Arg::Pos(key)
            });
            if self.eat(")") {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Expr {
        parse(src).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary(op, Box::new(a), Box::new(b))
    }

    #[test]
    fn precedence_follows_yaql() {
        assert_eq!(
            p("1 + 2 * 3"),
            bin(
                BinOp::Add,
                Expr::Int(1),
                bin(BinOp::Mul, Expr::Int(2), Expr::Int(3))
            )
        );
        assert_eq!(
            p("not $a = 1 and $b"),
            bin(
                BinOp::And,
                Expr::Unary(
                    UnOp::Not,
                    Box::new(bin(BinOp::Eq, Expr::Var("a".into()), Expr::Int(1)))
                ),
                Expr::Var("b".into())
            )
        );
        assert_eq!(
            p("$a or $b and $c"),
            bin(
                BinOp::Or,
                Expr::Var("a".into()),
                bin(BinOp::And, Expr::Var("b".into()), Expr::Var("c".into()))
            )
        );
        assert_eq!(
            p("-1 - 2"),
            bin(
                BinOp::Sub,
                Expr::Unary(UnOp::Neg, Box::new(Expr::Int(1))),
                Expr::Int(2)
            )
        );
    }

    #[test]
    fn postfix_calls_and_named_arguments() {
        assert_eq!(
            p("$.items.select($.name)"),
            Expr::Call {
                name: "select".into(),
                receiver: Some(Box::new(Expr::Attr {
                    target: Box::new(Expr::Dollar),
                    name: "items".into(),
                    null_safe: false
                })),
                args: vec![Arg::Pos(Expr::Attr {
                    target: Box::new(Expr::Dollar),
                    name: "name".into(),
                    null_safe: false
                })],
            }
        );
        assert_eq!(
            p("st2kv('k', decrypt => true)"),
            Expr::Call {
                name: "st2kv".into(),
                receiver: None,
                args: vec![
                    Arg::Pos(Expr::Str("k".into())),
                    Arg::Named("decrypt".into(), Expr::Bool(true))
                ],
            }
        );
        assert_eq!(
            p("let(x => 1) -> $x"),
            Expr::Chain(
                Box::new(Expr::Call {
                    name: "let".into(),
                    receiver: None,
                    args: vec![Arg::Named("x".into(), Expr::Int(1))]
                }),
                Box::new(Expr::Var("x".into()))
            )
        );
        assert!(matches!(
            p("ctx().a[0]?.b"),
            Expr::Attr {
                null_safe: true,
                ..
            }
        ));
        assert_eq!(
            p("{'a' => [1, 2.5]}"),
            Expr::Dict(vec![(
                Expr::Str("a".into()),
                Expr::List(vec![Expr::Int(1), Expr::Float(2.5)])
            )])
        );
    }

    #[test]
    fn syntax_errors_say_where() {
        for (src, needle) in [
            ("1 +", "ends too early"),
            ("ctx(", "ends too early"),
            ("'open", "unterminated string"),
            ("1 2", "at 2: unexpected number 2"),
            ("a # b", "unexpected '#'"),
            ("", "empty expression"),
            ("f(1,)", "unexpected ')'"),
        ] {
            let e = parse(src).expect_err(src).to_string();
            assert!(e.contains(needle), "{src}: {e}");
        }
    }
}
