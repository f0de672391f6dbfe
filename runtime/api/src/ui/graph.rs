//! A workflow's graph as SVG, drawn from its definition: tasks left to
//! right by their distance from the start, each transition an arrow
//! labelled with its condition, each task coloured (and labelled) by the
//! status of its last execution, and a link to it.

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;
use squall_workflow::spec::{Target, Workflow};

use super::html::escape;

/// What ran of one task: its last execution, and how many there were.
#[derive(Debug, Clone)]
pub(crate) struct TaskRun {
    pub(crate) id: String,
    pub(crate) status: String,
    pub(crate) runs: usize,
}

const NODE_W: usize = 170;
const NODE_H: usize = 54;
const GAP_X: usize = 90;
const GAP_Y: usize = 28;
const MARGIN: usize = 16;

/// The SVG of `spec`, with `runs` by task name.
pub(crate) fn svg(spec: &Workflow, runs: &BTreeMap<String, TaskRun>) -> String {
    // Each task's column: its distance from a start task (a task no
    // transition reaches from the start goes in the first column).
    let mut column: BTreeMap<&str, usize> = BTreeMap::new();
    let mut queue: VecDeque<&str> = spec.start_tasks().into_iter().collect();
    // Every task reached from another (a cycle): begin with the first.
    if queue.is_empty()
        && let Some(first) = spec.tasks.keys().next()
    {
        queue.push_back(first);
    }
    for start in &queue {
        column.insert(start, 0);
    }
    while let Some(name) = queue.pop_front() {
        let here = column[name];
        for target in targets(spec, name) {
            if let Some((known, _)) = spec.tasks.get_key_value(target)
                && !column.contains_key(known.as_str())
            {
                column.insert(known, here + 1);
                queue.push_back(known);
            }
        }
    }
    for name in spec.tasks.keys() {
        column.entry(name).or_insert(0);
    }
    let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
    let mut at: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (name, col) in &column {
        let row = rows.entry(*col).or_insert(0);
        at.insert(name, (*col, *row));
        *row += 1;
    }
    let columns = column.values().max().map_or(1, |c| c + 1);
    let most_rows = rows.values().max().copied().unwrap_or(1);
    let width = MARGIN * 2 + columns * NODE_W + (columns - 1) * GAP_X;
    let height = MARGIN * 2 + most_rows * NODE_H + most_rows.saturating_sub(1) * GAP_Y;
    let place = |(col, row): (usize, usize)| {
        (
            MARGIN + col * (NODE_W + GAP_X),
            MARGIN + row * (NODE_H + GAP_Y),
        )
    };
    let mut out = format!(
        "<svg class=\"graph\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-labelledby=\"graph-title\">\
         <title id=\"graph-title\">The workflow's tasks and transitions</title>\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" class=\"arrow\"/></marker></defs>"
    );
    for (name, task) in &spec.tasks {
        let (x1, y1) = place(at[name.as_str()]);
        for transition in &task.next {
            let label = transition.when.as_ref().map(condition).unwrap_or_default();
            for target in &transition.targets {
                let Target::Task(to) = target else { continue };
                let Some(&cell) = at.get(to.as_str()) else {
                    continue;
                };
                let (x2, y2) = place(cell);
                let (sx, sy) = (x1 + NODE_W, y1 + NODE_H / 2);
                let (ex, ey) = (x2, y2 + NODE_H / 2);
                let path = if ex > sx {
                    let mid = (sx + ex) / 2;
                    format!("M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}")
                } else {
                    // Back to an earlier column (a cycle): around below.
                    let below = height.saturating_sub(MARGIN / 2);
                    format!(
                        "M{sx},{sy} C{},{below} {},{below} {},{}",
                        sx + GAP_X / 2,
                        ex.saturating_sub(GAP_X / 2),
                        ex + NODE_W / 2,
                        ey + NODE_H / 2
                    )
                };
                out.push_str(&format!(
                    "<path class=\"edge\" d=\"{path}\" marker-end=\"url(#arrow)\"/>"
                ));
                if !label.is_empty() {
                    out.push_str(&format!(
                        "<text class=\"edge-label\" x=\"{}\" y=\"{}\">{}</text>",
                        (sx + ex) / 2,
                        (sy + ey) / 2 - 4,
                        escape(&label)
                    ));
                }
            }
        }
    }
    for name in spec.tasks.keys() {
        let (x, y) = place(at[name.as_str()]);
        let run = runs.get(name);
        let status = run.map_or("not run", |r| r.status.as_str());
        let class = run.map_or("not-run".to_owned(), |r| format!("status-{}", r.status));
        let detail = match run {
            Some(r) if r.runs > 1 => format!("{status} ({} runs)", r.runs),
            _ => status.to_owned(),
        };
        let node = format!(
            "<g class=\"node {class}\"><rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"6\"/>\
             <text class=\"node-name\" x=\"{}\" y=\"{}\">{}</text>\
             <text class=\"node-status\" x=\"{}\" y=\"{}\">{}</text></g>",
            x + 10,
            y + 22,
            escape(&short(name, 20)),
            x + 10,
            y + 42,
            escape(&detail)
        );
        match run {
            Some(r) => out.push_str(&format!(
                "<a href=\"/ui/executions/{}\" aria-label=\"task {}: {}\">{node}</a>",
                escape(&r.id),
                escape(name),
                escape(&detail)
            )),
            None => out.push_str(&node),
        }
    }
    out.push_str("</svg>");
    out
}

/// The tasks `name`'s transitions lead to.
fn targets<'a>(spec: &'a Workflow, name: &str) -> impl Iterator<Item = &'a str> {
    spec.tasks
        .get(name)
        .into_iter()
        .flat_map(|t| &t.next)
        .flat_map(|n| &n.targets)
        .filter_map(|t| match t {
            Target::Task(to) => Some(to.as_str()),
            _ => None,
        })
}

/// A transition's condition as its label: the expression without its
/// delimiters, cut short.
fn condition(when: &Value) -> String {
    let text = match when {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let bare = text
        .trim()
        .trim_start_matches("<%")
        .trim_end_matches("%>")
        .trim_start_matches("{{")
        .trim_end_matches("}}")
        .trim();
    short(bare, 24)
}

fn short(text: &str, most: usize) -> String {
    match text.char_indices().nth(most) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW: &str = r#"
version: 1.0
tasks:
  start:
    action: core.noop
    next:
      - when: <% succeeded() %>
        do: [check, odd]
  check:
    action: core.echo message=hi
    next:
      - when: <% result().n < 3 %>
        do: check
  odd:
    action: core.noop
"#;

    #[test]
    fn graphs_lay_tasks_out_by_distance_and_color_them_by_status() {
        let spec = Workflow::parse(FLOW).expect("valid");
        let runs = BTreeMap::from([
            (
                "start".to_owned(),
                TaskRun {
                    id: "01a".into(),
                    status: "succeeded".into(),
                    runs: 2,
                },
            ),
            (
                "check".to_owned(),
                TaskRun {
                    id: "01b".into(),
                    status: "failed".into(),
                    runs: 1,
                },
            ),
        ]);
        let svg = svg(&spec, &runs);
        assert!(svg.starts_with("<svg class=\"graph\""), "{svg}");
        assert!(svg.contains("<g class=\"node status-succeeded\">"), "{svg}");
        assert!(svg.contains("succeeded (2 runs)"), "{svg}");
        assert!(
            svg.contains("<a href=\"/ui/executions/01b\" aria-label=\"task check: failed\">"),
            "{svg}"
        );
        assert!(svg.contains("<g class=\"node not-run\">"), "{svg}");
        // Conditions label the arrows, escaped (and cut short).
        assert!(svg.contains(">succeeded()</text>"), "{svg}");
        assert!(svg.contains(">result().n &lt; 3</text>"), "{svg}");
        // Three arrows: two forward, one back to the task itself.
        assert_eq!(svg.matches("class=\"edge\"").count(), 3, "{svg}");
        // The start is in the first column, the others in the second.
        assert!(
            svg.contains(&format!("<rect x=\"{MARGIN}\" y=\"{MARGIN}\"")),
            "{svg}"
        );
        assert!(
            svg.contains(&format!("<rect x=\"{}\"", MARGIN + NODE_W + GAP_X)),
            "{svg}"
        );
    }
}
