//! The translator's modules and what they import from each other (outside
//! tests), read from the sources: no import cycles, and stage 1
//! (`resolve`) imports nothing of stage 2 (`emit`). Stages that import
//! each other cannot be told apart (or run apart); a leaf module for what
//! two modules share keeps the graph one-way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Files that only tests compile.
const TEST_ONLY: [&str; 4] = [
    "test_support",
    "envoy_validation",
    "generated_meshes",
    "emit::gateway::gateway_tests",
];

/// Every library module under `src` by its path (`emit::sidecar::inbound`;
/// a directory's `mod.rs` is the directory's module) with its source
/// without tests: the text up to its first `#[cfg(test)]` (test modules
/// and test-only declarations come last in this crate's files).
fn library_modules(src: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            if path.is_dir() {
                let mut inner = prefix.to_vec();
                inner.push(stem);
                walk(&path, &inner, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || (prefix.is_empty() && stem == "lib") {
                continue;
            }
            let mut segments = prefix.to_vec();
            if stem != "mod" {
                segments.push(stem);
            }
            let name = segments.join("::");
            if TEST_ONLY
                .iter()
                .any(|t| name == *t || name.starts_with(&format!("{t}::")))
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read module");
            let library = text.split("#[cfg(test)]").next().unwrap_or_default();
            out.insert(name, library.to_string());
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &[], &mut out);
    out
}

/// The paths after `crate::` (`emit::sidecar::inbound::Thing`), grouped
/// imports included, as written.
fn referenced_paths(source: &str) -> BTreeSet<String> {
    let path_of = |text: &str| -> String {
        text.trim()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect::<String>()
            .trim_end_matches(':')
            .to_string()
    };
    let mut out = BTreeSet::new();
    for (i, _) in source.match_indices("crate::") {
        let rest = &source[i + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => out.extend(
                group
                    .split('}')
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(path_of),
            ),
            None => {
                out.insert(path_of(rest));
            }
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

/// The module a path names: its longest prefix that is a module.
fn module_of(path: &str, modules: &BTreeMap<String, String>) -> Option<String> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|candidate| modules.contains_key(candidate))
}

fn import_graph(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    modules
        .iter()
        .map(|(name, source)| {
            let deps = referenced_paths(source)
                .iter()
                .filter_map(|p| module_of(p, modules))
                .filter(|d| d != name)
                .collect();
            (name.clone(), deps)
        })
        .collect()
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in &self.graph[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    component.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

fn translator_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = library_modules(&src);
    assert!(modules.len() > 30, "too few modules found: {modules:?}");
    let graph = import_graph(&modules);
    assert!(
        graph.values().map(BTreeSet::len).sum::<usize>() > 50,
        "too few imports found: {graph:?}"
    );
    graph
}

#[test]
fn translator_modules_import_no_cycle() {
    let found = cycles(&translator_graph());
    assert!(
        found.is_empty(),
        "import cycles among {found:?}; break them (a shared leaf module, or the importer owning the item)"
    );
}

#[test]
fn resolving_imports_nothing_of_emitting() {
    let graph = translator_graph();
    let stage_one: Vec<_> = graph
        .iter()
        .filter(|(m, _)| *m == "resolve" || m.starts_with("resolve::"))
        .collect();
    assert!(stage_one.len() >= 5, "{stage_one:?}");
    for (module, deps) in stage_one {
        let emitting: Vec<_> = deps
            .iter()
            .filter(|d| *d == "emit" || d.starts_with("emit::"))
            .collect();
        assert!(
            emitting.is_empty(),
            "{module} (stage 1) imports {emitting:?} (stage 2)"
        );
    }
}

#[test]
fn the_cycle_finder_sees_a_cycle_through_grouped_and_nested_imports() {
    let modules: BTreeMap<String, String> = [
        ("a", "use crate::{b::Thing, names};"),
        ("b", "use crate::emit::sidecar::c::Other;"),
        ("names", ""),
        ("emit::sidecar::c", "use crate::a;"),
    ]
    .into_iter()
    .map(|(m, s)| (m.to_string(), s.to_string()))
    .collect();
    assert_eq!(
        cycles(&import_graph(&modules)),
        [BTreeSet::from([
            "a".to_string(),
            "b".to_string(),
            "emit::sidecar::c".to_string()
        ])]
    );
}
