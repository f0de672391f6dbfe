//! Expressions inside strings: YAQL's `<% ... %>` and Jinja's `{{ ... }}`
//! (with `{% ... %}` blocks). One language per string, as Orquesta has it.

use crate::yaql;

/// An expression language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Yaql,
    Jinja,
}

/// A piece of a string: text, or an expression in a language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Yaql(&'a str),
    /// A `{{ ... }}` expression (its inside).
    Jinja(&'a str),
}

/// Split `s` into text and YAQL / Jinja expressions. `{% %}` blocks are
/// left in the text: a string holding one is rendered whole as a Jinja
/// template (see [`has_jinja_blocks`]).
pub fn pieces(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let yaql = rest.find("<%");
        let jinja = rest.find("{{");
        let (at, open, close) = match (yaql, jinja) {
            (None, None) => break,
            (Some(y), Some(j)) if j < y => (j, "{{", "}}"),
            (Some(y), _) => (y, "<%", "%>"),
            (None, Some(j)) => (j, "{{", "}}"),
        };
        if at > 0 {
            out.push(Piece::Text(&rest[..at]));
        }
        let inner_start = at + open.len();
        let Some(len) = rest[inner_start..].find(close) else {
            return Err(format!("'{open}' without its '{close}'"));
        };
        let inner = &rest[inner_start..inner_start + len];
        out.push(if open == "<%" {
            Piece::Yaql(inner)
        } else {
            Piece::Jinja(inner)
        });
        rest = &rest[inner_start + len + close.len()..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Whether `s` holds an expression.
pub fn has_expression(s: &str) -> bool {
    s.contains("<%") || s.contains("{{") || has_jinja_blocks(s)
}

/// Whether `s` holds Jinja `{% %}` blocks.
pub fn has_jinja_blocks(s: &str) -> bool {
    s.contains("{%")
}

/// Whether `s` is exactly one expression (so it evaluates to the value's own
/// type rather than to text).
pub fn is_single(s: &str) -> bool {
    matches!(
        pieces(s.trim()).as_deref(),
        Ok([Piece::Yaql(_) | Piece::Jinja(_)])
    ) && !has_jinja_blocks(s)
}

/// The languages `s` uses.
pub fn languages(s: &str) -> Vec<Lang> {
    let mut found = Vec::new();
    for piece in pieces(s).unwrap_or_default() {
        let lang = match piece {
            Piece::Yaql(_) => Lang::Yaql,
            Piece::Jinja(_) => Lang::Jinja,
            Piece::Text(_) => continue,
        };
        if !found.contains(&lang) {
            found.push(lang);
        }
    }
    if has_jinja_blocks(s) && !found.contains(&Lang::Jinja) {
        found.push(Lang::Jinja);
    }
    found
}

/// Check the syntax of every expression in `s`: one language, YAQL that
/// parses, Jinja that compiles.
pub fn check(s: &str) -> Result<(), String> {
    if !has_expression(s) {
        return Ok(());
    }
    let pieces = pieces(s)?;
    if languages(s).len() > 1 {
        return Err(format!(
            "'{s}' mixes YAQL and Jinja; use one language per string"
        ));
    }
    for piece in &pieces {
        if let Piece::Yaql(e) = piece {
            yaql::parse(e).map_err(|e| format!("invalid YAQL: {e}"))?;
        }
    }
    if languages(s) == [Lang::Jinja] {
        let env = minijinja::Environment::new();
        env.template_from_str(s)
            .map_err(|e| format!("invalid Jinja in '{s}': {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_split_into_text_and_expressions() {
        assert_eq!(
            pieces("<% ctx(a) %>, <% result().stdout %>!").expect("splits"),
            [
                Piece::Yaql(" ctx(a) "),
                Piece::Text(", "),
                Piece::Yaql(" result().stdout "),
                Piece::Text("!"),
            ]
        );
        assert_eq!(
            pieces("hi {{ ctx('x') }}").expect("splits"),
            [Piece::Text("hi "), Piece::Jinja(" ctx('x') ")]
        );
        assert!(is_single(" <% ctx(a) %> "));
        assert!(!is_single("<% ctx(a) %>!"));
        assert!(!has_expression("plain"));
    }

    #[test]
    fn syntax_is_checked() {
        assert!(check("<% ctx(a) + 1 %>").is_ok());
        assert!(check("{{ ctx('a') | upper }}").is_ok());
        for (s, needle) in [
            ("<% ctx( %>", "invalid YAQL"),
            ("<% 1 %> {{ 2 }}", "mixes YAQL and Jinja"),
            ("{{ ctx( }}", "invalid Jinja"),
            ("<% never closed", "'<%' without its '%>'"),
        ] {
            let e = check(s).expect_err(s);
            assert!(e.contains(needle), "{s}: {e}");
        }
    }
}
