//! The code's map, as a newcomer reads it: inside `verify` the data flows down (no module
//! imports one that imports it back, the parent included), no function needs a
//! `too_many_arguments` allowance (what a function reads comes in one struct), one module
//! walks an error's causes (`notes`), and README's layout table names every module, unit
//! and script.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use common::repo;

/// Every file under `dir` (subdirectories included), sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect()
}

/// The code of a file without its comments and its `#[cfg(test)]` module (tests may look
/// at anything).
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every path `code` names after `prefix` (`super::`, `crate::verify::`,
/// or a module name itself), brace groups included: `super::{a, b::C}` names `a` and `b`.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        let after = &rest[i + prefix.len()..];
        rest = after;
        // a path segment of its own: not `super::super::`, not `x_super::`
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.insert(first_segment(&item));
        } else {
            out.insert(first_segment(after));
        }
    }
    out.remove("");
    out
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// `verify`'s import graph: module -> the modules it uses. `verify` is the parent (mod.rs);
/// a child that uses an item of the parent (`super::Check`) has an edge to `verify`.
fn verify_graph() -> BTreeMap<String, BTreeSet<String>> {
    let dir = repo().join("src/verify");
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for path in rust_files(&dir) {
        let rel = path.strip_prefix(&dir).unwrap();
        let module = match rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap()
        {
            "mod.rs" => "verify".to_string(),
            first => first.trim_end_matches(".rs").to_string(),
        };
        files.entry(module).or_default().push(path);
    }
    let children: BTreeSet<String> = files.keys().filter(|m| *m != "verify").cloned().collect();
    let mut graph = BTreeMap::new();
    for (module, paths) in &files {
        let mut uses = BTreeSet::new();
        for path in paths {
            let code = code(path);
            let mut named = names_after(&code, "crate::verify::");
            if module == "verify" {
                for child in &children {
                    if !names_after(&code, &format!("{child}::")).is_empty() {
                        uses.insert(child.clone());
                    }
                }
            } else if path.parent() == Some(dir.as_path()) {
                // `super::` of a file directly in src/verify is the parent
                named.extend(names_after(&code, "super::"));
            }
            for name in named {
                uses.insert(if children.contains(&name) {
                    name
                } else {
                    "verify".to_string()
                });
            }
        }
        uses.remove(module);
        graph.insert(module.clone(), uses);
    }
    graph
}

/// A cycle of `graph`, if it has one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut found = path[i..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(graph, next, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(graph, node, &mut Vec::new(), &mut done))
}

#[test]
fn verify_modules_import_downward_only() {
    let graph = verify_graph();
    if let Some(found) = cycle(&graph) {
        panic!(
            "src/verify has an import cycle: {} (a module imports one that imports it back; \
             move what both need below them)\n{graph:#?}",
            found.join(" -> ")
        );
    }
    // the graph is read right: the parent orchestrates the checks, which use the causes
    for (from, to) in [("verify", "checks"), ("checks", "causes")] {
        assert!(
            graph[from].contains(to),
            "the graph misses {from} -> {to}: {graph:#?}"
        );
    }
}

#[test]
fn no_function_needs_a_too_many_arguments_allowance() {
    let found: Vec<String> = rust_files(&repo().join("src"))
        .into_iter()
        .filter(|p| {
            fs::read_to_string(p)
                .unwrap()
                .contains("too_many_arguments")
        })
        .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    assert!(
        found.is_empty(),
        "clippy::too_many_arguments allowed in {found:?}: gather the arguments into a struct"
    );
}

/// One way to show an error chain: `notes` (error_chain, error_lines, error_report) walks an
/// error's sources; any other walk is a second printer that can drift from it.
#[test]
fn error_chains_are_walked_by_notes_only() {
    let found: Vec<String> = rust_files(&repo().join("src"))
        .into_iter()
        .filter(|p| !p.ends_with("src/notes.rs") && !p.ends_with("tests.rs"))
        .filter(|p| {
            let code = code(p);
            code.contains(".source()") || code.contains("Error::source(")
        })
        .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    assert!(
        found.is_empty(),
        "{found:?} walk an error's sources themselves: show the error with \
         notes::error_chain (one line) or notes::error_report (main's layout) instead"
    );
}

/// README's layout table: its rows, `path` -> `what`.
fn layout_rows() -> Vec<(String, String)> {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let table = readme
        .split("\n## Layout\n")
        .nth(1)
        .expect("README.md has a '## Layout' section");
    table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let mut cells = l.trim_matches('|').splitn(2, '|');
            let path = cells.next()?.trim().trim_matches('`').to_string();
            Some((path, cells.next()?.trim().to_string()))
        })
        .filter(|(path, _)| path != "path" && !path.starts_with("---"))
        .collect()
}

/// The words of a table cell: `executor/files (x, y)` -> executor, files, x, y.
fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_alphanumeric() || "_.-".contains(c)))
        .map(|w| w.trim_matches('.').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Every module, unit and script has a line in README's layout table: the row of its
/// directory (the longest path that holds it; `src/*.rs` for `src/`) names it. A
/// directory's `mod.rs` is its row, and `tests.rs` its unit tests.
#[test]
fn readme_layout_names_every_module_unit_and_script() {
    let rows = layout_rows();
    let mut files: Vec<PathBuf> = ["src", "systemd", "scripts"]
        .iter()
        .flat_map(|dir| files_under(&repo().join(dir)))
        .collect();
    for entry in fs::read_dir(repo().join("tests/e2e")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "sh") {
            files.push(path);
        }
    }
    files.sort();
    let mut missing = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(repo())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let name = path.file_name().unwrap().to_str().unwrap();
        if name == "mod.rs" || name == "tests.rs" {
            continue;
        }
        let stem = name.trim_end_matches(".rs");
        // the rows of the longest path that holds the file
        let holders: Vec<(usize, &(String, String))> = rows
            .iter()
            .map(|row| (row.0.trim_end_matches("*.rs"), row))
            .filter(|(dir, _)| rel.starts_with(dir))
            .map(|(dir, row)| (dir.len(), row))
            .collect();
        let longest = holders.iter().map(|(len, _)| *len).max();
        let rows_of: Vec<&(String, String)> = holders
            .iter()
            .filter(|(len, _)| Some(*len) == longest)
            .map(|(_, row)| *row)
            .collect();
        let text: String = rows_of
            .iter()
            .map(|(_, what)| what.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let named = words(&text);
        if !(named.contains(name) || named.contains(stem)) {
            let row = rows_of.first().map_or("none", |(p, _)| p.as_str());
            missing.push(format!("{rel} (row `{row}`)"));
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's layout table does not name (add one short phrase each):\n  {}",
        missing.join("\n  ")
    );
}
