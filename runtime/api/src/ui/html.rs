//! HTML the templates cannot easily make: a JSON value as a tree of
//! collapsible sections. Every string in it is escaped here.

use serde_json::Value;

/// `text` with HTML's special characters escaped, for element content and
/// quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// Objects and arrays deeper than this are shown as JSON text.
const MAX_DEPTH: usize = 32;

/// `value` as nested `<details>`: objects and arrays collapse (the top two
/// levels start open), scalars are shown as JSON.
pub(crate) fn json_tree(value: &Value) -> String {
    let mut out = String::new();
    node(value, 0, &mut out);
    out
}

fn node(value: &Value, depth: usize, out: &mut String) {
    let (open, close, entries): (&str, &str, Vec<(String, &Value)>) = match value {
        Value::Object(map) if !map.is_empty() && depth < MAX_DEPTH => (
            "{",
            "}",
            map.iter().map(|(k, v)| (format!("{k:?}"), v)).collect(),
        ),
        Value::Array(items) if !items.is_empty() && depth < MAX_DEPTH => (
            "[",
            "]",
            items
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
        ),
        scalar => {
            let class = match scalar {
                Value::String(_) => "str",
                Value::Number(_) => "num",
                Value::Bool(_) => "bool",
                Value::Null => "null",
                _ => "raw",
            };
            out.push_str(&format!(
                "<span class=\"json-{class}\">{}</span>",
                escape(&scalar.to_string())
            ));
            return;
        }
    };
    let opened = if depth < 2 { " open" } else { "" };
    out.push_str(&format!(
        "<details class=\"json\"{opened}><summary>{open} <span class=\"json-count\">{} {}</span></summary><ul>",
        entries.len(),
        if open == "{" { "keys" } else { "items" }
    ));
    for (key, child) in entries {
        out.push_str(&format!(
            "<li><span class=\"json-key\">{}</span>: ",
            escape(&key)
        ));
        node(child, depth + 1, out);
        out.push_str("</li>");
    }
    out.push_str(&format!("</ul>{close}</details>"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_and_keys_is_escaped() {
        let tree = json_tree(&serde_json::json!({
            "<script>alert(1)</script>": ["<img src=x onerror=alert(2)>", 1, null, true],
        }));
        assert!(!tree.contains("<script>"), "{tree}");
        assert!(!tree.contains("<img"), "{tree}");
        assert!(
            tree.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{tree}"
        );
        assert!(
            tree.contains("&lt;img src=x onerror=alert(2)&gt;"),
            "{tree}"
        );
        assert!(tree.contains("<span class=\"json-num\">1</span>"), "{tree}");
        assert!(
            tree.contains("<span class=\"json-null\">null</span>"),
            "{tree}"
        );
    }

    #[test]
    fn deep_values_stop_nesting() {
        let mut value = serde_json::json!(0);
        for _ in 0..100 {
            value = serde_json::json!([value]);
        }
        let tree = json_tree(&value);
        assert_eq!(tree.matches("<details").count(), MAX_DEPTH);
    }
}
