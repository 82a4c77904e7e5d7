//! Rendering plans and goal trees: an indented text tree with status marks, a Mermaid
//! flowchart and Graphviz DOT.

use std::fmt::Write as _;

use crate::graph::PlanGraph;
use crate::model::{Step, StepKind};
use crate::state::{RunState, StepStatus};
use crate::tree::{GoalNode, GoalTree, PATH_SEPARATOR};

/// Longest description shown in a text tree, in characters; longer ones end with `…`.
const TEXT_DESCRIPTION_CHARS: usize = 80;

/// The mark of a status in a text tree: `[ ]` pending, `[~]` running, `[x]` completed,
/// `[!]` failed, `[-]` skipped, `[/]` cancelled.
pub fn status_mark(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Pending => "[ ]",
        StepStatus::Running => "[~]",
        StepStatus::Completed => "[x]",
        StepStatus::Failed => "[!]",
        StepStatus::Skipped => "[-]",
        StepStatus::Cancelled => "[/]",
    }
}

/// The first line of `text`, cut to `max` characters with `…`.
fn short(text: &str, max: usize) -> String {
    let line = text.trim().lines().next().unwrap_or("").trim();
    let cut = line.chars().count() > max || text.trim().lines().nth(1).is_some();
    let mut out: String = line.chars().take(max).collect();
    if cut {
        out = out.trim_end().to_owned();
        out.push('…');
    }
    out
}

fn step_line(step: &Step) -> String {
    let mut line = format!(
        "{}: {}",
        step.id,
        short(&step.description, TEXT_DESCRIPTION_CHARS)
    );
    if step.kind != StepKind::Action {
        let _ = write!(line, " [{}]", step.kind);
    }
    line
}

/// The plan as an indented tree, one line per step, with status marks when `state` is
/// given.
///
/// A DAG is not a tree: each step is shown under the dependency that finishes last on the
/// longest chain (its *primary* dependency), and any other dependencies are listed after
/// it as `(after a, b)`. Every step appears exactly once; siblings are in plan order.
pub fn render_text(graph: &PlanGraph, state: Option<&RunState>) -> String {
    let n = graph.len();
    // Primary parent: the dependency on the deepest level (latest in plan order on ties).
    let mut level = vec![0usize; n];
    let mut parent: Vec<Option<usize>> = vec![None; n];
    for i in graph.topological_order() {
        let mut best: Option<usize> = None;
        for &d in graph.dependencies(i) {
            if best.is_none_or(|b| (level[d], d) > (level[b], b)) {
                best = Some(d);
            }
        }
        level[i] = best.map_or(0, |b| level[b] + 1);
        parent[i] = best;
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut roots = Vec::new();
    for (i, p) in parent.iter().enumerate() {
        match *p {
            Some(p) => children[p].push(i),
            None => roots.push(i),
        }
    }

    let mut out = format!("Goal: {}\n", short(&graph.plan().goal, 200));
    let line = |i: usize| -> String {
        let step = graph.step(i);
        let mut text = String::new();
        if let Some(state) = state {
            let mark = state.status(step.id.as_str()).map_or("[?]", status_mark);
            text.push_str(mark);
            text.push(' ');
        }
        text.push_str(&step_line(step));
        let others: Vec<&str> = graph
            .dependencies(i)
            .iter()
            .filter(|&&d| Some(d) != parent[i])
            .map(|&d| graph.step(d).id.as_str())
            .collect();
        if !others.is_empty() {
            let _ = write!(text, " (after {})", others.join(", "));
        }
        text
    };
    // Depth-first, with an explicit stack of (step, prefix for its children, is last).
    let mut stack: Vec<(usize, String, bool)> = Vec::new();
    for (k, &r) in roots.iter().enumerate().rev() {
        stack.push((r, String::new(), k + 1 == roots.len()));
    }
    while let Some((i, prefix, last)) = stack.pop() {
        let _ = writeln!(
            out,
            "{prefix}{}{}",
            if last { "└─ " } else { "├─ " },
            line(i)
        );
        let child_prefix = format!("{prefix}{}", if last { "   " } else { "│  " });
        let kids = &children[i];
        for (k, &c) in kids.iter().enumerate().rev() {
            stack.push((c, child_prefix.clone(), k + 1 == kids.len()));
        }
    }
    out
}

/// The rolled-up status of a sub-goal from its leaves: completed when all completed,
/// failed when any failed, skipped when all skipped, running when any started, else
/// pending.
fn rolled_up(statuses: &[Option<StepStatus>]) -> &'static str {
    let all = |f: fn(StepStatus) -> bool| statuses.iter().all(|s| s.is_some_and(f));
    let any = |f: fn(StepStatus) -> bool| statuses.iter().any(|s| s.is_some_and(f));
    if all(StepStatus::is_completed) {
        "[x]"
    } else if any(|s| matches!(s, StepStatus::Failed)) {
        "[!]"
    } else if all(|s| matches!(s, StepStatus::Skipped)) {
        "[-]"
    } else if any(|s| !matches!(s, StepStatus::Pending)) {
        "[~]"
    } else {
        "[ ]"
    }
}

/// A goal tree as an indented tree. With a `state` (keyed by the flattened ids, see
/// [`GoalTree::flatten`]) leaves show their status mark and sub-goals a mark rolled up
/// from their leaves (completed when all are, failed when any is, running when any
/// started). Dependencies on siblings are listed as `(after a, b)`.
pub fn render_goal_tree(tree: &GoalTree, state: Option<&RunState>) -> String {
    fn leaf_ids(node: &GoalNode, path: &str, out: &mut Vec<String>) {
        if node.is_leaf() {
            out.push(path.to_owned());
        } else {
            for c in &node.children {
                leaf_ids(c, &format!("{path}{PATH_SEPARATOR}{}", c.step.id), out);
            }
        }
    }
    fn walk(
        nodes: &[GoalNode],
        path: &str,
        prefix: &str,
        state: Option<&RunState>,
        out: &mut String,
    ) {
        for (k, node) in nodes.iter().enumerate() {
            let last = k + 1 == nodes.len();
            let full = if path.is_empty() {
                node.step.id.to_string()
            } else {
                format!("{path}{PATH_SEPARATOR}{}", node.step.id)
            };
            let mut text = String::new();
            if let Some(state) = state {
                let mut leaves = Vec::new();
                leaf_ids(node, &full, &mut leaves);
                let statuses: Vec<Option<StepStatus>> =
                    leaves.iter().map(|id| state.status(id)).collect();
                let mark = if node.is_leaf() {
                    statuses[0].map_or("[?]", status_mark)
                } else {
                    rolled_up(&statuses)
                };
                text.push_str(mark);
                text.push(' ');
            }
            text.push_str(&step_line(&node.step));
            if !node.step.dependencies.is_empty() {
                let deps: Vec<&str> = node.step.dependencies.iter().map(|d| d.as_str()).collect();
                let _ = write!(text, " (after {})", deps.join(", "));
            }
            let _ = writeln!(out, "{prefix}{}{text}", if last { "└─ " } else { "├─ " });
            let child_prefix = format!("{prefix}{}", if last { "   " } else { "│  " });
            walk(&node.children, &full, &child_prefix, state, out);
        }
    }
    let mut out = format!("Goal: {}\n", short(&tree.goal, 200));
    walk(&tree.children, "", "", state, &mut out);
    out
}

/// Escapes text for a quoted Mermaid label: `#`, `"`, `<`, `>`, `&` and backticks become
/// entity codes, line breaks become `<br>`.
fn mermaid_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '#' => out.push_str("#35;"),
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '`' => out.push_str("#96;"),
            '\n' => out.push_str("<br>"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

fn status_class(status: StepStatus) -> &'static str {
    status.name()
}

/// The plan as a Mermaid flowchart (top-down). Nodes are `s0`, `s1`, ... by plan position
/// and labelled `id: description`; with a `state`, each node gets a class named after its
/// status (`completed`, `failed`, ...), styled in the chart.
pub fn render_mermaid(graph: &PlanGraph, state: Option<&RunState>) -> String {
    // The goal as the chart title (front matter); a JSON string is a valid YAML one.
    let title = serde_json::to_string(&short(&graph.plan().goal, 200)).unwrap_or_default();
    let mut out = format!("---\ntitle: {title}\n---\nflowchart TD\n");
    for i in 0..graph.len() {
        let step = graph.step(i);
        let label = format!(
            "{}: {}",
            step.id,
            short(&step.description, TEXT_DESCRIPTION_CHARS)
        );
        let _ = writeln!(out, "    s{i}[\"{}\"]", mermaid_escape(&label));
    }
    for i in 0..graph.len() {
        for &d in graph.dependencies(i) {
            let _ = writeln!(out, "    s{d} --> s{i}");
        }
    }
    if let Some(state) = state {
        out.push_str("    classDef pending fill:#f5f5f5,stroke:#9e9e9e\n");
        out.push_str("    classDef running fill:#fff8e1,stroke:#f9a825\n");
        out.push_str("    classDef completed fill:#e8f5e9,stroke:#2e7d32\n");
        out.push_str("    classDef failed fill:#ffebee,stroke:#c62828\n");
        out.push_str("    classDef skipped fill:#eceff1,stroke:#607d8b,stroke-dasharray:4\n");
        out.push_str("    classDef cancelled fill:#eceff1,stroke:#607d8b\n");
        for i in 0..graph.len() {
            if let Some(status) = state.status(graph.step(i).id.as_str()) {
                let _ = writeln!(out, "    class s{i} {}", status_class(status));
            }
        }
    }
    out
}

/// Escapes text for a double-quoted DOT string: backslashes and quotes are escaped, line
/// breaks become `\n`.
fn dot_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Line width DOT labels are wrapped to.
const DOT_WRAP: usize = 48;

/// Wraps each line of `text` at spaces to at most `width` characters (longer words stay
/// whole).
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len());
    for (k, line) in text.lines().enumerate() {
        if k > 0 {
            out.push('\n');
        }
        let mut used = 0;
        for word in line.split_whitespace() {
            let len = word.chars().count();
            if used > 0 && used + 1 + len > width {
                out.push('\n');
                used = 0;
            } else if used > 0 {
                out.push(' ');
                used += 1;
            }
            out.push_str(word);
            used += len;
        }
    }
    out
}

fn dot_fill(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Pending => "#f5f5f5",
        StepStatus::Running => "#fff8e1",
        StepStatus::Completed => "#e8f5e9",
        StepStatus::Failed => "#ffebee",
        StepStatus::Skipped | StepStatus::Cancelled => "#eceff1",
    }
}

/// The plan as a Graphviz DOT digraph: an edge `a -> b` means `b` depends on `a`. Nodes
/// are labelled with the step id and description (and kind when not `action`); with a
/// `state`, they are filled by status.
pub fn render_dot(graph: &PlanGraph, state: Option<&RunState>) -> String {
    let mut out = String::from("digraph plan {\n");
    let _ = writeln!(
        out,
        "    label=\"{}\";\n    labelloc=t;\n    rankdir=TB;\n    node [shape=box, style=\"rounded,filled\", fillcolor=\"#ffffff\"];",
        dot_escape(&graph.plan().goal)
    );
    for i in 0..graph.len() {
        let step = graph.step(i);
        let mut label = format!("{}\n{}", step.id, wrap(step.description.trim(), DOT_WRAP));
        if step.kind != StepKind::Action {
            let _ = write!(label, "\n[{}]", step.kind);
        }
        let mut attrs = format!("label=\"{}\"", dot_escape(&label));
        if let Some(status) = state.and_then(|s| s.status(step.id.as_str())) {
            let _ = write!(
                attrs,
                ", fillcolor=\"{}\", tooltip=\"{}\"",
                dot_fill(status),
                status.name()
            );
        }
        let _ = writeln!(out, "    s{i} [{attrs}];");
    }
    for i in 0..graph.len() {
        for &d in graph.dependencies(i) {
            let _ = writeln!(out, "    s{d} -> s{i};");
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_cuts_long_and_multi_line_text() {
        assert_eq!(short("  hello  ", 10), "hello");
        assert_eq!(short("abcdefghijkl", 5), "abcde…");
        assert_eq!(short("first line\nsecond", 80), "first line…");
        assert_eq!(short("ééééé", 3), "ééé…");
    }

    #[test]
    fn wrap_breaks_at_spaces() {
        assert_eq!(wrap("aa bb cc dd", 5), "aa bb\ncc dd");
        assert_eq!(wrap("averylongword x", 4), "averylongword\nx");
        assert_eq!(wrap("a\nb  c", 10), "a\nb c");
    }

    #[test]
    fn escapes() {
        assert_eq!(
            mermaid_escape("a \"b\" <c> #1 & `d`\ne"),
            "a #quot;b#quot; #lt;c#gt; #35;1 #amp; #96;d#96;<br>e"
        );
        assert_eq!(
            dot_escape("say \"hi\" \\ now\nok"),
            "say \\\"hi\\\" \\\\ now\\nok"
        );
    }
}
