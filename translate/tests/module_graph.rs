//! The translator's modules and what they import from each other (outside
//! tests), read from the sources: no import cycles. Stages that import each
//! other cannot be told apart (or run apart); a leaf module for what two
//! modules share keeps the graph one-way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The modules `lib.rs` declares for the library (test-only ones left out).
fn library_modules(src: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let mut out = Vec::new();
    let mut test_only = false;
    for line in lib.lines().map(str::trim) {
        if line == "#[cfg(test)]" {
            test_only = true;
            continue;
        }
        if let Some(name) = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("mod "))
            .and_then(|rest| rest.strip_suffix(';'))
            && !test_only
        {
            out.push(name.to_string());
        }
        test_only = false;
    }
    out
}

/// A module's source without its tests: files up to their first
/// `#[cfg(test)]` (the test module comes last in this crate's files).
fn library_source(src: &Path, module: &str) -> String {
    let file = src.join(format!("{module}.rs"));
    let files = if file.is_file() {
        vec![file]
    } else {
        let dir = src.join(module);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        files.sort();
        files
    };
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("read module");
            text.split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The first path segments after `crate::`, grouped imports included.
fn referenced_modules(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in source.match_indices("crate::") {
        let rest = &source[i + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or_default()
                .split(',')
                .collect(),
            None => vec![rest],
        };
        for name in names {
            let ident: String = name
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !ident.is_empty() {
                out.insert(ident);
            }
        }
    }
    out
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

#[test]
fn translator_modules_import_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = library_modules(&src);
    assert!(modules.len() > 30, "too few modules found: {modules:?}");
    let graph: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| {
            let deps = referenced_modules(&library_source(&src, m))
                .into_iter()
                .filter(|d| d != m && modules.contains(d))
                .collect();
            (m.clone(), deps)
        })
        .collect();
    assert!(
        graph.values().map(BTreeSet::len).sum::<usize>() > 50,
        "too few imports found: {graph:?}"
    );
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "import cycles among {found:?}; break them (a shared leaf module, or the importer owning the item)"
    );
}

#[test]
fn the_cycle_finder_sees_a_cycle_through_grouped_imports() {
    let graph = BTreeMap::from([
        (
            "a".to_string(),
            referenced_modules("use crate::{b, names};"),
        ),
        ("b".to_string(), referenced_modules("use crate::a::Thing;")),
        ("names".to_string(), BTreeSet::new()),
    ]);
    assert_eq!(
        cycles(&graph),
        [BTreeSet::from(["a".to_string(), "b".to_string()])]
    );
}
