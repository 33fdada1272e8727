//! Walks over the store graph: closures (what `gc` keeps, `path-info -r`) and the chains of
//! `why-depends`.
//!
//! Pure: each function takes a lookup of a node's out-edges instead of reading the database,
//! so the same walk serves runtime references (`refs`), build-time inputs (`drv_inputs`) and
//! plain values in tests. A node is a store path name (`<hash>-<name>`) or a source
//! (`source:<name>`); an edge carries the input name it comes through.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;

/// One edge of a chain: `from` refers to (or was built from) `to` through input `reason`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// Everything reachable from `roots` (the roots included) over `next`.
pub fn closure<N, E>(
    roots: impl IntoIterator<Item = N>,
    mut next: impl FnMut(&N) -> Result<Vec<N>, E>,
) -> Result<HashSet<N>, E>
where
    N: Eq + Hash + Clone,
{
    let mut seen = HashSet::new();
    let mut stack: Vec<N> = roots.into_iter().collect();
    while let Some(n) = stack.pop() {
        if seen.contains(&n) {
            continue;
        }
        for m in next(&n)? {
            if !seen.contains(&m) {
                stack.push(m);
            }
        }
        seen.insert(n);
    }
    Ok(seen)
}

/// An order of `nodes` in which every node comes before the nodes it refers to (within
/// `nodes`): the order in which paths can be invalidated without ever leaving a valid path
/// that refers to an invalid one (gc deletes referrers first). `refs` gives out-edges; edges
/// leaving `nodes` are ignored. Ties are broken by name, so the order is stable.
pub fn referrers_first<N, E>(
    nodes: &BTreeSet<N>,
    mut refs: impl FnMut(&N) -> Result<Vec<N>, E>,
) -> Result<Vec<N>, E>
where
    N: Ord + Clone + Hash,
{
    let mut indegree: HashMap<&N, usize> = nodes.iter().map(|n| (n, 0)).collect();
    let mut out_edges: HashMap<&N, Vec<&N>> = HashMap::with_capacity(nodes.len());
    for n in nodes {
        let mut targets = Vec::new();
        for m in refs(n)? {
            if let Some((k, _)) = indegree.get_key_value(&m)
                && *k != n
            {
                targets.push(*k);
            }
        }
        targets.sort();
        targets.dedup();
        for t in &targets {
            *indegree.get_mut(t).expect("in the set") += 1;
        }
        out_edges.insert(n, targets);
    }
    // Kahn's algorithm; a BTreeSet as the ready queue keeps the order stable.
    let mut ready: BTreeSet<&N> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| *n)
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(n) = ready.pop_first() {
        order.push(n.clone());
        for t in &out_edges[n] {
            let d = indegree.get_mut(t).expect("in the set");
            *d -= 1;
            if *d == 0 {
                ready.insert(t);
            }
        }
    }
    // A cycle cannot happen (references point to paths registered earlier); if the database
    // says otherwise, the rest goes last rather than being lost.
    if order.len() < nodes.len() {
        let placed: HashSet<&N> = order.iter().collect();
        let rest: Vec<N> = nodes
            .iter()
            .filter(|n| !placed.contains(n))
            .cloned()
            .collect();
        order.extend(rest);
    }
    Ok(order)
}

/// Out-edges of a node: (node, input name).
pub type EdgeLookup<'a, E> = dyn FnMut(&str) -> Result<Vec<(String, String)>, E> + 'a;

/// What `why_depends` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Chains {
    /// Each chain from `from` to a node matching the target, as its edges; shortest first.
    pub chains: Vec<Vec<Edge>>,
    /// More chains exist than the limit allowed.
    pub truncated: bool,
}

/// The chains of edges from `from` to nodes for which `is_target` holds, like
/// `nix why-depends`: without `all`, one shortest chain (ties broken by input name, then by
/// node name); with `all`, every chain (a chain ends at the first target it reaches), at most
/// `limit` of them. `edges` gives a node's out-edges as (node, input name).
pub fn why_depends<E>(
    from: &str,
    is_target: &dyn Fn(&str) -> bool,
    edges: &mut EdgeLookup<'_, E>,
    all: bool,
    limit: usize,
) -> Result<Chains, E> {
    if is_target(from) {
        return Ok(Chains::default());
    }
    // Explore the reachable graph once, breadth-first, remembering edges in a stable order.
    let mut adj: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut parent: HashMap<String, Edge> = HashMap::new();
    let mut queue = VecDeque::from([from.to_string()]);
    let mut seen: HashSet<String> = HashSet::from([from.to_string()]);
    let mut first_hit: Option<String> = None;
    while let Some(n) = queue.pop_front() {
        if is_target(&n) {
            // Targets are chain ends: not expanded.
            continue;
        }
        let mut out = edges(&n)?;
        out.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
        out.dedup();
        for (m, reason) in &out {
            if seen.insert(m.clone()) {
                parent.insert(
                    m.clone(),
                    Edge {
                        from: n.clone(),
                        to: m.clone(),
                        reason: reason.clone(),
                    },
                );
                if first_hit.is_none() && is_target(m) {
                    first_hit = Some(m.clone());
                }
                queue.push_back(m.clone());
            }
        }
        adj.insert(n, out);
        if !all && first_hit.is_some() {
            break;
        }
    }
    let Some(hit) = first_hit else {
        return Ok(Chains::default());
    };
    if !all {
        let mut chain = Vec::new();
        let mut at = hit;
        while let Some(e) = parent.get(&at) {
            at = e.from.clone();
            chain.push(e.clone());
        }
        chain.reverse();
        return Ok(Chains {
            chains: vec![chain],
            truncated: false,
        });
    }
    // Nodes from which a target can be reached: only those are worth descending into.
    let mut reaches: HashSet<&str> = HashSet::new();
    let mut changed = true;
    while changed {
        changed = false;
        for (n, out) in &adj {
            if reaches.contains(n.as_str()) {
                continue;
            }
            if out
                .iter()
                .any(|(m, _)| is_target(m) || reaches.contains(m.as_str()))
            {
                reaches.insert(n);
                changed = true;
            }
        }
    }
    let mut chains = Vec::new();
    let mut truncated = false;
    let mut path: Vec<Edge> = Vec::new();
    enumerate(
        from,
        &adj,
        &reaches,
        is_target,
        &mut path,
        &mut chains,
        limit,
        &mut truncated,
    );
    chains.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    Ok(Chains { chains, truncated })
}

#[allow(clippy::too_many_arguments)]
fn enumerate(
    n: &str,
    adj: &HashMap<String, Vec<(String, String)>>,
    reaches: &HashSet<&str>,
    is_target: &dyn Fn(&str) -> bool,
    path: &mut Vec<Edge>,
    out: &mut Vec<Vec<Edge>>,
    limit: usize,
    truncated: &mut bool,
) {
    let Some(next) = adj.get(n) else { return };
    for (m, reason) in next {
        if *truncated {
            return;
        }
        let hit = is_target(m);
        if !hit && !reaches.contains(m.as_str()) {
            continue;
        }
        // The graph is a DAG, but a corrupt database might not be: never loop.
        if path.iter().any(|e| e.from == *m) {
            continue;
        }
        path.push(Edge {
            from: n.to_string(),
            to: m.clone(),
            reason: reason.clone(),
        });
        if hit {
            if out.len() >= limit {
                *truncated = true;
            } else {
                out.push(path.clone());
            }
        } else {
            enumerate(m, adj, reaches, is_target, path, out, limit, truncated);
        }
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The KD-GAT shape for one dataset: student eval → {data, vgae, gat, dqn}; student gat →
    /// {data, vgae, teacher gat}; dqn → {data, vgae, gat}; vgae → {data, teacher vgae}.
    fn kdgat() -> HashMap<&'static str, Vec<(&'static str, &'static str)>> {
        HashMap::from([
            (
                "s-eval",
                vec![
                    ("prep", "data"),
                    ("s-vgae", "vgae"),
                    ("s-gat", "gat"),
                    ("s-dqn", "dqn"),
                ],
            ),
            (
                "s-dqn",
                vec![("prep", "data"), ("s-vgae", "vgae"), ("s-gat", "gat")],
            ),
            (
                "s-gat",
                vec![("prep", "data"), ("s-vgae", "vgae"), ("t-gat", "teacher")],
            ),
            ("s-vgae", vec![("prep", "data"), ("t-vgae", "teacher")]),
            ("t-gat", vec![("prep", "data"), ("t-vgae", "vgae")]),
            ("t-vgae", vec![("prep", "data")]),
            ("prep", vec![("source:demo", "raw")]),
        ])
    }

    fn edges_of<'a>(
        g: &'a HashMap<&'static str, Vec<(&'static str, &'static str)>>,
    ) -> impl FnMut(&str) -> Result<Vec<(String, String)>, ()> + 'a {
        move |n| {
            Ok(g.get(n)
                .map(|v| {
                    v.iter()
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .collect()
                })
                .unwrap_or_default())
        }
    }

    fn show(chain: &[Edge]) -> String {
        let mut s = chain[0].from.clone();
        for e in chain {
            s.push_str(&format!(" --{}--> {}", e.reason, e.to));
        }
        s
    }

    #[test]
    fn shortest_chain_goes_through_the_distillation_input() {
        let g = kdgat();
        let c = why_depends("s-eval", &|n| n == "t-gat", &mut edges_of(&g), false, 100).unwrap();
        assert_eq!(c.chains.len(), 1);
        assert_eq!(
            show(&c.chains[0]),
            "s-eval --gat--> s-gat --teacher--> t-gat"
        );
    }

    #[test]
    fn all_chains_are_listed_shortest_first() {
        let g = kdgat();
        let c = why_depends("s-eval", &|n| n == "t-gat", &mut edges_of(&g), true, 100).unwrap();
        let shown: Vec<String> = c.chains.iter().map(|c| show(c)).collect();
        assert_eq!(
            shown,
            vec![
                "s-eval --gat--> s-gat --teacher--> t-gat",
                "s-eval --dqn--> s-dqn --gat--> s-gat --teacher--> t-gat",
            ]
        );
        assert!(!c.truncated);
        let c = why_depends("s-eval", &|n| n == "t-gat", &mut edges_of(&g), true, 1).unwrap();
        assert_eq!(c.chains.len(), 1);
        assert!(c.truncated);
    }

    #[test]
    fn chains_reach_sources_and_stop_at_the_first_target() {
        let g = kdgat();
        let c = why_depends(
            "s-eval",
            &|n| n == "source:demo",
            &mut edges_of(&g),
            false,
            100,
        )
        .unwrap();
        assert_eq!(
            show(&c.chains[0]),
            "s-eval --data--> prep --raw--> source:demo"
        );
        // Every chain to `prep` ends there, even though prep leads on to the source.
        let c = why_depends("s-eval", &|n| n == "prep", &mut edges_of(&g), true, 1000).unwrap();
        assert!(c.chains.iter().all(|ch| ch.last().unwrap().to == "prep"));
        assert_eq!(c.chains[0].len(), 1);
    }

    #[test]
    fn no_chain_when_unrelated() {
        let g = kdgat();
        let c = why_depends("t-gat", &|n| n == "s-gat", &mut edges_of(&g), true, 100).unwrap();
        assert!(c.chains.is_empty());
        let c = why_depends("t-gat", &|n| n == "t-gat", &mut edges_of(&g), false, 100).unwrap();
        assert!(c.chains.is_empty(), "a node does not depend on itself");
    }

    #[test]
    fn closure_and_referrers_first_order() {
        let g = kdgat();
        let mut e = edges_of(&g);
        let c = closure(["s-gat".to_string()], |n: &String| {
            Ok::<_, ()>(e(n).unwrap().into_iter().map(|(m, _)| m).collect())
        })
        .unwrap();
        let mut c: Vec<_> = c.into_iter().collect();
        c.sort();
        assert_eq!(
            c,
            vec!["prep", "s-gat", "s-vgae", "source:demo", "t-gat", "t-vgae"]
        );

        let nodes: BTreeSet<String> = g.keys().map(|k| k.to_string()).collect();
        let mut e = edges_of(&g);
        let order = referrers_first(&nodes, |n: &String| {
            Ok::<_, ()>(e(n).unwrap().into_iter().map(|(m, _)| m).collect())
        })
        .unwrap();
        let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
        for (n, out) in &g {
            for (m, _) in out {
                if nodes.contains(*m) {
                    assert!(pos(n) < pos(m), "{n} before {m}: {order:?}");
                }
            }
        }
        assert_eq!(order[0], "s-eval");
    }
}
