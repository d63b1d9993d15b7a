//! Shrinks a case Envoy rejected to the fewest objects and fields that it
//! still rejects, so a failure reads as one small object, not a page of
//! generated YAML.

use serde_json::Value;

use super::{Case, PROXIES, check};

/// Attempts at removing one field; each costs one Envoy run.
const BUDGET: usize = 600;

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// The report for a rejected `case`: how to reproduce it, the smallest
/// objects still rejected, and Envoy's message for them.
pub fn report(case: &Case, message: &str, rejected: impl Fn(&Case) -> bool) -> String {
    let mut small = case.clone();
    let mut budget = BUDGET;
    // Whole objects first, then fields, deepest paths last.
    let mut i = 0;
    while i < small.documents.len() && small.documents.len() > 1 {
        let mut trial = small.clone();
        trial.documents.remove(i);
        budget = budget.saturating_sub(1);
        if rejected(&trial) {
            small = trial;
        } else {
            i += 1;
        }
    }
    for doc in 0..small.documents.len() {
        let mut progress = true;
        while progress && budget > 0 {
            progress = false;
            let mut paths = Vec::new();
            subpaths(
                &small.documents[doc]["spec"],
                &mut vec![Step::Key("spec".into())],
                &mut paths,
            );
            for path in paths {
                if budget == 0 {
                    break;
                }
                budget -= 1;
                let mut trial = small.clone();
                remove(&mut trial.documents[doc], &path);
                if rejected(&trial) {
                    small = trial;
                    progress = true;
                    break;
                }
            }
        }
    }
    let envoy = check(&small)
        .envoy
        .err()
        .unwrap_or_else(|| message.to_string());
    let yaml: Vec<String> = small
        .documents
        .iter()
        .map(|d| serde_saphyr::to_string(d).unwrap_or_else(|_| d.to_string()))
        .collect();
    format!(
        "seed {seed} ({proxy}); reproduce with PILOTFISH_GENERATED_SEED={seed} PILOTFISH_GENERATED_MESHES=1\n\
         smallest objects Envoy still rejects:\n{}\nEnvoy said:\n{envoy}",
        yaml.join("---\n"),
        seed = case.seed,
        proxy = PROXIES[case.proxy],
    )
}

/// Every path below `value`, parents before children.
fn subpaths(value: &Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                at.push(Step::Key(k.clone()));
                out.push(at.clone());
                subpaths(v, at, out);
                at.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                at.push(Step::Index(i));
                out.push(at.clone());
                subpaths(v, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn remove(doc: &mut Value, path: &[Step]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = doc;
    for step in parents {
        node = match (step, node) {
            (Step::Key(k), Value::Object(map)) => match map.get_mut(k) {
                Some(v) => v,
                None => return,
            },
            (Step::Index(i), Value::Array(items)) => match items.get_mut(*i) {
                Some(v) => v,
                None => return,
            },
            _ => return,
        };
    }
    match (last, node) {
        (Step::Key(k), Value::Object(map)) => {
            map.remove(k);
        }
        (Step::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
        }
        _ => {}
    }
}
