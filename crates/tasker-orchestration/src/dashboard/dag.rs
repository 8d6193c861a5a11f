//! A step DAG drawn as SVG on the server: steps in columns by depth (the longest path from a
//! root), each column ordered by the average row of its parents so edges cross less, and
//! each step coloured by its state through its CSS class.

use std::collections::HashMap;
use std::fmt::Write;

/// One step to draw.
pub struct Node {
    pub name: String,
    /// `None` for a template's step, which has no state.
    pub state: Option<String>,
    /// Where clicking the step leads.
    pub href: Option<String>,
    pub parents: Vec<String>,
}

const WIDTH: f64 = 170.0;
const HEIGHT: f64 = 40.0;
const COLUMN_GAP: f64 = 70.0;
const ROW_GAP: f64 = 18.0;
const MARGIN: f64 = 10.0;
/// Names longer than this are cut (the full name is in the tooltip).
const LABEL_CHARS: usize = 22;

/// Positions: the column (depth) and row of every node, by index.
fn layout(nodes: &[Node]) -> Vec<(usize, usize)> {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let parents: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            n.parents
                .iter()
                .filter_map(|p| index.get(p.as_str()).copied())
                .collect()
        })
        .collect();
    // Longest path by relaxation; a DAG settles within n rounds, and the bound keeps a
    // malformed (cyclic) graph from looping.
    let mut depth = vec![0usize; nodes.len()];
    for _ in 0..nodes.len() {
        let mut changed = false;
        for (i, ps) in parents.iter().enumerate() {
            let d = ps.iter().map(|&p| depth[p] + 1).max().unwrap_or(0);
            if d > depth[i] && d < nodes.len() {
                depth[i] = d;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let columns = depth.iter().copied().max().map_or(0, |d| d + 1);
    let mut row = vec![0usize; nodes.len()];
    for column in 0..columns {
        let mut members: Vec<(f64, usize)> = (0..nodes.len())
            .filter(|&i| depth[i] == column)
            .map(|i| {
                let ps = &parents[i];
                let key = if ps.is_empty() {
                    i as f64
                } else {
                    ps.iter().map(|&p| row[p] as f64).sum::<f64>() / ps.len() as f64
                };
                (key, i)
            })
            .collect();
        members.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (r, (_, i)) in members.into_iter().enumerate() {
            row[i] = r;
        }
    }
    depth.into_iter().zip(row).collect()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn label(name: &str) -> String {
    if name.chars().count() <= LABEL_CHARS {
        name.to_string()
    } else {
        let cut: String = name.chars().take(LABEL_CHARS - 1).collect();
        format!("{cut}…")
    }
}

/// The SVG markup (escaped, ready to embed as is).
pub fn svg(nodes: &[Node]) -> String {
    let at = layout(nodes);
    let x = |c: usize| MARGIN + c as f64 * (WIDTH + COLUMN_GAP);
    let y = |r: usize| MARGIN + r as f64 * (HEIGHT + ROW_GAP);
    let columns = at.iter().map(|p| p.0 + 1).max().unwrap_or(0);
    let rows = at.iter().map(|p| p.1 + 1).max().unwrap_or(0);
    let width =
        2.0 * MARGIN + columns as f64 * WIDTH + columns.saturating_sub(1) as f64 * COLUMN_GAP;
    let height = 2.0 * MARGIN + rows as f64 * HEIGHT + rows.saturating_sub(1) as f64 * ROW_GAP;
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="step graph">"#
    );
    out.push_str(r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>"#);
    for (child, node) in nodes.iter().enumerate() {
        for parent in node.parents.iter().filter_map(|p| index.get(p.as_str())) {
            let (pc, pr) = at[*parent];
            let (cc, cr) = at[child];
            let (x1, y1) = (x(pc) + WIDTH, y(pr) + HEIGHT / 2.0);
            let (x2, y2) = (x(cc), y(cr) + HEIGHT / 2.0);
            let mid = (x1 + x2) / 2.0;
            let _ = write!(
                out,
                r#"<path class="edge" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" marker-end="url(#arrow)"/>"#
            );
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let (c, r) = at[i];
        let name = escape(&node.name);
        let state = node.state.as_deref().map(escape);
        let class = state.as_deref().unwrap_or("template");
        let _ = write!(
            out,
            r#"<g class="node state-{class}" data-step-name="{name}""#
        );
        if let Some(s) = &state {
            let _ = write!(out, r#" data-step-state="{s}""#);
        }
        out.push('>');
        if let Some(href) = &node.href {
            let _ = write!(out, r#"<a href="{}">"#, escape(href));
        }
        let _ = write!(
            out,
            r#"<title>{name}{}</title><rect x="{}" y="{}" width="{WIDTH}" height="{HEIGHT}" rx="6"/><text x="{}" y="{}" class="name">{}</text>"#,
            state
                .as_deref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default(),
            x(c),
            y(r),
            x(c) + 8.0,
            y(r) + 16.0,
            escape(&label(&node.name)),
        );
        if let Some(s) = &state {
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" class="state">{s}</text>"#,
                x(c) + 8.0,
                y(r) + 32.0
            );
        }
        if node.href.is_some() {
            out.push_str("</a>");
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, parents: &[&str]) -> Node {
        Node {
            name: name.into(),
            state: Some("complete".into()),
            href: None,
            parents: parents.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_diamond_takes_three_columns() {
        let nodes = [
            node("start", &[]),
            node("left", &["start"]),
            node("right", &["start"]),
            node("join", &["left", "right"]),
        ];
        assert_eq!(layout(&nodes), vec![(0, 0), (1, 0), (1, 1), (2, 0)]);
        let svg = svg(&nodes);
        assert_eq!(svg.matches("<path class=\"edge\"").count(), 4);
        assert_eq!(svg.matches("data-step-state=\"complete\"").count(), 4);
    }

    #[test]
    fn depth_is_the_longest_path_and_names_are_escaped() {
        let nodes = [node("a", &[]), node("b", &["a"]), node("<c>", &["a", "b"])];
        assert_eq!(layout(&nodes)[2].0, 2);
        assert!(svg(&nodes).contains("data-step-name=\"&lt;c&gt;\""));
    }

    #[test]
    fn a_cycle_does_not_hang() {
        let nodes = [node("a", &["b"]), node("b", &["a"])];
        assert_eq!(layout(&nodes).len(), 2);
    }
}
