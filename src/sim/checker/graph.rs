//! A directed graph in compressed form, Tarjan's strongly connected components (iterative: the
//! graphs have as many vertices as a run has messages) and a short-cycle search inside a
//! component.

use std::collections::VecDeque;

/// A directed graph over vertices `0..n`; each edge carries a witness `W` (why it exists).
pub(super) struct Graph<W> {
    /// `start[v]..start[v + 1]` are v's edges in `edges`.
    start: Vec<usize>,
    /// `(target, witness)`, sorted by source.
    edges: Vec<(u32, W)>,
}

/// An edge of a cycle: source, target and witness.
pub(super) type Step<W> = (u32, u32, W);

impl<W: Copy> Graph<W> {
    /// Builds the graph; of several edges with the same source and target, the first one given
    /// is kept. A counting sort by source, then a stable sort of each source's few edges.
    pub(super) fn new(n: usize, edges: Vec<Step<W>>) -> Graph<W> {
        let mut start = vec![0; n + 1];
        for &(from, _, _) in &edges {
            start[from as usize + 1] += 1;
        }
        for v in 0..n {
            start[v + 1] += start[v];
        }
        let Some(&(_, _, filler)) = edges.first() else {
            return Graph {
                start,
                edges: Vec::new(),
            };
        };
        let mut placed: Vec<(u32, W)> = vec![(0, filler); edges.len()];
        let mut fill = start.clone();
        for (from, to, why) in edges {
            placed[fill[from as usize]] = (to, why);
            fill[from as usize] += 1;
        }
        let mut kept = 0;
        for v in 0..n {
            let (lo, hi) = (start[v], start[v + 1]);
            placed[lo..hi].sort_by_key(|&(to, _)| to); // stable: the first witness stays first
            start[v] = kept;
            let mut last = None;
            for i in lo..hi {
                let edge = placed[i];
                if last != Some(edge.0) {
                    last = Some(edge.0);
                    placed[kept] = edge;
                    kept += 1;
                }
            }
        }
        start[n] = kept;
        placed.truncate(kept);
        Graph {
            start,
            edges: placed,
        }
    }

    fn vertices(&self) -> usize {
        self.start.len() - 1
    }

    fn out(&self, v: u32) -> &[(u32, W)] {
        &self.edges[self.start[v as usize]..self.start[v as usize + 1]]
    }

    /// The strongly connected components that contain a cycle (more than one vertex, or one
    /// vertex with an edge to itself), each as its vertices in increasing order.
    pub(super) fn cyclic_components(&self) -> Vec<Vec<u32>> {
        const UNSEEN: u32 = u32::MAX;
        let n = self.vertices();
        let mut index = vec![UNSEEN; n];
        let mut low = vec![0u32; n];
        let mut on_stack = vec![false; n];
        let mut stack: Vec<u32> = Vec::new();
        // (vertex, position of the next edge to look at)
        let mut calls: Vec<(u32, usize)> = Vec::new();
        let mut next_index = 0u32;
        let mut cyclic = Vec::new();
        for root in 0..n as u32 {
            if index[root as usize] != UNSEEN {
                continue;
            }
            index[root as usize] = next_index;
            low[root as usize] = next_index;
            next_index += 1;
            stack.push(root);
            on_stack[root as usize] = true;
            calls.push((root, self.start[root as usize]));
            while let Some(&(v, edge)) = calls.last() {
                let vu = v as usize;
                if edge < self.start[vu + 1] {
                    if let Some(call) = calls.last_mut() {
                        call.1 += 1;
                    }
                    let w = self.edges[edge].0;
                    let wu = w as usize;
                    if index[wu] == UNSEEN {
                        index[wu] = next_index;
                        low[wu] = next_index;
                        next_index += 1;
                        stack.push(w);
                        on_stack[wu] = true;
                        calls.push((w, self.start[wu]));
                    } else if on_stack[wu] {
                        low[vu] = low[vu].min(index[wu]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(u, _)) = calls.last() {
                    low[u as usize] = low[u as usize].min(low[vu]);
                }
                if low[vu] == index[vu] {
                    let mut members = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w as usize] = false;
                        members.push(w);
                        if w == v {
                            break;
                        }
                    }
                    let self_loop = self.out(v).iter().any(|&(w, _)| w == v);
                    if members.len() > 1 || self_loop {
                        members.sort_unstable();
                        cyclic.push(members);
                    }
                }
            }
        }
        cyclic
    }

    /// A short cycle inside one component (`members`, sorted, as returned by
    /// [`Graph::cyclic_components`]): breadth-first from up to `tries` of its vertices (the
    /// first ones), keeping the shortest cycle through any of them. Memory is linear in the
    /// component, not the graph.
    pub(super) fn short_cycle(&self, members: &[u32], tries: usize) -> Vec<Step<W>> {
        let local = |v: u32| members.binary_search(&v).ok();
        let mut seen = vec![usize::MAX; members.len()];
        let mut parent: Vec<Option<(u32, W)>> = vec![None; members.len()];
        let mut best: Vec<Step<W>> = Vec::new();
        let mut queue = VecDeque::new();
        for (round, &s) in members.iter().take(tries).enumerate() {
            queue.clear();
            seen[round] = round; // members[round] == s
            parent[round] = None;
            queue.push_back((s, 0usize));
            let mut closing: Option<(u32, W)> = None;
            'bfs: while let Some((u, depth)) = queue.pop_front() {
                if !best.is_empty() && depth + 1 >= best.len() {
                    break; // cannot beat the best cycle from here
                }
                for &(w, why) in self.out(u) {
                    let Some(lw) = local(w) else { continue };
                    if w == s {
                        closing = Some((u, why));
                        break 'bfs;
                    }
                    if seen[lw] != round {
                        seen[lw] = round;
                        parent[lw] = Some((u, why));
                        queue.push_back((w, depth + 1));
                    }
                }
            }
            if let Some((last, why)) = closing {
                let mut cycle = vec![(last, s, why)];
                let mut v = last;
                while let Some((u, why)) = local(v).and_then(|lv| parent[lv]) {
                    cycle.push((u, v, why));
                    v = u;
                }
                cycle.reverse();
                if best.is_empty() || cycle.len() < best.len() {
                    best = cycle;
                }
                if best.len() == 1 {
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(n: usize, edges: &[(u32, u32)]) -> Graph<usize> {
        Graph::new(
            n,
            edges
                .iter()
                .enumerate()
                .map(|(i, &(a, b))| (a, b, i))
                .collect(),
        )
    }

    #[test]
    fn acyclic_graph_has_no_cyclic_component() {
        let g = graph(5, &[(0, 1), (1, 2), (0, 2), (2, 3), (4, 3)]);
        assert!(g.cyclic_components().is_empty());
    }

    #[test]
    fn finds_components_and_shortest_cycle() {
        // A 4-cycle 0->1->2->3->0 with a chord 2->0 (shortest: 0->1->2->0), a separate self
        // loop on 5, and 4 hanging off.
        let g = graph(6, &[(0, 1), (1, 2), (2, 3), (3, 0), (2, 0), (3, 4), (5, 5)]);
        let cyclic = g.cyclic_components();
        let mut sorted = cyclic.clone();
        sorted.sort();
        assert_eq!(sorted, [vec![0, 1, 2, 3], vec![5]]);
        let big = cyclic.iter().find(|c| c.len() == 4).unwrap();
        let cycle = g.short_cycle(big, 32);
        let hops: Vec<(u32, u32)> = cycle.iter().map(|&(a, b, _)| (a, b)).collect();
        assert_eq!(hops, [(0, 1), (1, 2), (2, 0)]);
        let cycle = g.short_cycle(&[5], 32);
        assert_eq!(
            cycle.iter().map(|&(a, b, _)| (a, b)).collect::<Vec<_>>(),
            [(5, 5)]
        );
    }

    #[test]
    fn deep_chain_does_not_overflow() {
        let n = 200_000u32;
        let mut edges: Vec<(u32, u32)> = (0..n - 1).map(|v| (v, v + 1)).collect();
        edges.push((n - 1, 0));
        let g = graph(n as usize, &edges);
        let cyclic = g.cyclic_components();
        assert_eq!(cyclic.len(), 1);
        assert_eq!(cyclic[0].len(), n as usize);
        assert_eq!(g.short_cycle(&cyclic[0], 2).len(), n as usize);
    }
}
