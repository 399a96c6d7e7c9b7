//! Choosing one option per item (a type per tensor) so that the bytes fit a budget and the summed
//! error is as small as we can find: a multiple-choice knapsack, solved in three steps.
//!
//! 1. **Lagrangian path.** Each item's options are reduced to their lower convex hull in the
//!    (bytes, error) plane. Starting from every item's smallest option, the upgrade with the
//!    largest error decrease per byte is taken next, as long as it fits; this visits exactly the
//!    solutions that minimise `error + λ·bytes` as λ falls, i.e. the Lagrangian relaxation's
//!    optimum, stopped at the budget.
//! 2. **Fill.** Single moves to any option (not only hull points) that lower the error and still
//!    fit, best error decrease per byte first, until none is left.
//! 3. **Greedy exchange.** Pairs of moves — one item down, another up — that lower the error and
//!    fit the budget together, the best pair first, each followed by another fill, until no pair
//!    helps.
//!
//! Steps 2 and 3 also run from any start the caller gives (e.g. llama-quantize's fixed mix): a
//! feasible start can only be improved, so the result is never worse than the best start.
//! Everything is deterministic (ties broken by index).

use std::cmp::Ordering;

/// One option of one item.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    /// What choosing it costs (bytes).
    pub bytes: u64,
    /// Its estimated error (≥ 0).
    pub error: f64,
}

/// One option picked per item.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    /// Index into each item's options.
    pub picks: Vec<usize>,
    /// Σ bytes of the picks.
    pub bytes: u64,
    /// Σ error of the picks.
    pub error: f64,
}

/// Upper bound on exchange rounds (each lowers the error; real cases end far earlier).
const MAX_EXCHANGE_ROUNDS: usize = 100_000;

/// The cheapest option of every item, or `None` where an item has no options.
fn smallest(items: &[Vec<Choice>]) -> Option<Vec<usize>> {
    items
        .iter()
        .map(|opts| {
            (0..opts.len()).min_by(|&a, &b| {
                (opts[a].bytes, opts[a].error)
                    .partial_cmp(&(opts[b].bytes, opts[b].error))
                    .unwrap_or(Ordering::Equal)
            })
        })
        .collect()
}

/// The fewest bytes any allocation needs (each item's smallest option), `None` if an item has
/// no options.
pub fn minimum_bytes(items: &[Vec<Choice>]) -> Option<u64> {
    let picks = smallest(items)?;
    Some(picks.iter().zip(items).map(|(&p, o)| o[p].bytes).sum())
}

/// The lower convex hull of an item's options, as option indices by increasing bytes and
/// strictly decreasing error.
fn convex_hull(opts: &[Choice]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..opts.len()).collect();
    order.sort_by(|&a, &b| {
        (opts[a].bytes, opts[a].error, a)
            .partial_cmp(&(opts[b].bytes, opts[b].error, b))
            .unwrap_or(Ordering::Equal)
    });
    // Pareto front first: each kept option is strictly better than every cheaper one.
    let mut front: Vec<usize> = Vec::new();
    for i in order {
        if front
            .last()
            .is_none_or(|&l| opts[i].error < opts[l].error && opts[i].bytes > opts[l].bytes)
        {
            front.push(i);
        }
    }
    let mut hull: Vec<usize> = Vec::new();
    for i in front {
        while hull.len() >= 2 {
            let (a, b) = (opts[hull[hull.len() - 2]], opts[hull[hull.len() - 1]]);
            let c = opts[i];
            // b lies on or above the chord a→c: not on the lower hull.
            let cross = (b.bytes - a.bytes) as f64 * (c.error - a.error)
                - (b.error - a.error) * (c.bytes - a.bytes) as f64;
            if cross <= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(i);
    }
    hull
}

fn total(items: &[Vec<Choice>], picks: &[usize]) -> (u64, f64) {
    picks
        .iter()
        .zip(items)
        .fold((0, 0.0), |(b, e), (&p, o)| (b + o[p].bytes, e + o[p].error))
}

/// Step 1: walk the hulls from the smallest options, best marginal error per byte first.
fn lagrangian_path(items: &[Vec<Choice>], budget: u64, start: &[usize]) -> Vec<usize> {
    let hulls: Vec<Vec<usize>> = items.iter().map(|o| convex_hull(o)).collect();
    let mut picks = start.to_vec();
    let mut pos = vec![0usize; items.len()];
    for (i, h) in hulls.iter().enumerate() {
        picks[i] = h[0];
    }
    let (mut bytes, _) = total(items, &picks);
    let slope = |i: usize, k: usize| {
        let (a, b) = (items[i][hulls[i][k]], items[i][hulls[i][k + 1]]);
        (a.error - b.error) / (b.bytes - a.bytes) as f64
    };
    let mut live: Vec<usize> = (0..items.len()).filter(|&i| hulls[i].len() > 1).collect();
    loop {
        let best = live
            .iter()
            .copied()
            .filter(|&i| pos[i] + 1 < hulls[i].len())
            .max_by(|&a, &b| {
                slope(a, pos[a])
                    .partial_cmp(&slope(b, pos[b]))
                    .unwrap_or(Ordering::Equal)
                    .then(b.cmp(&a))
            });
        let Some(i) = best else { break };
        let next = items[i][hulls[i][pos[i] + 1]];
        let cur = items[i][picks[i]];
        if bytes - cur.bytes + next.bytes <= budget {
            bytes = bytes - cur.bytes + next.bytes;
            pos[i] += 1;
            picks[i] = hulls[i][pos[i]];
        } else {
            // Further hull steps of this item cost even more; the fill step may still find a
            // smaller upgrade for it.
            live.retain(|&j| j != i);
        }
    }
    picks
}

/// Step 2: single improving moves that fit, best error decrease per byte first.
fn fill(items: &[Vec<Choice>], budget: u64, picks: &mut [usize]) {
    let (mut bytes, _) = total(items, picks);
    loop {
        let mut best: Option<(f64, usize, usize)> = None;
        for (i, opts) in items.iter().enumerate() {
            let cur = opts[picks[i]];
            for (k, c) in opts.iter().enumerate() {
                if c.error >= cur.error || bytes - cur.bytes + c.bytes > budget {
                    continue;
                }
                let gain = cur.error - c.error;
                let score = if c.bytes <= cur.bytes {
                    f64::INFINITY
                } else {
                    gain / (c.bytes - cur.bytes) as f64
                };
                if best.is_none_or(|(s, _, _)| score > s) {
                    best = Some((score, i, k));
                }
            }
        }
        let Some((_, i, k)) = best else { break };
        bytes = bytes - items[i][picks[i]].bytes + items[i][k].bytes;
        picks[i] = k;
    }
}

/// One candidate move of the exchange step.
#[derive(Clone, Copy)]
struct Move {
    item: usize,
    to: usize,
    /// Bytes saved (downgrade) or spent (upgrade), always ≥ 0 here.
    bytes: u64,
    /// Error added (downgrade) or removed (upgrade).
    error: f64,
}

/// Step 3, one round: the best pair (one item down, another up) that fits and lowers the
/// error, applied. Returns whether one was found.
fn exchange_once(items: &[Vec<Choice>], budget: u64, picks: &mut [usize]) -> bool {
    let (bytes, err_total) = total(items, picks);
    let slack = budget - bytes;
    let mut downs: Vec<Move> = Vec::new();
    let mut ups: Vec<Move> = Vec::new();
    for (i, opts) in items.iter().enumerate() {
        let cur = opts[picks[i]];
        for (k, c) in opts.iter().enumerate() {
            if c.bytes < cur.bytes {
                downs.push(Move {
                    item: i,
                    to: k,
                    bytes: cur.bytes - c.bytes,
                    error: c.error - cur.error,
                });
            } else if c.bytes > cur.bytes && c.error < cur.error {
                ups.push(Move {
                    item: i,
                    to: k,
                    bytes: c.bytes - cur.bytes,
                    error: cur.error - c.error,
                });
            }
        }
    }
    if downs.is_empty() || ups.is_empty() {
        return false;
    }
    // Upgrades by cost, with the two best gains (of different items) among each prefix, so each
    // downgrade finds its best partner by a binary search.
    ups.sort_by(|a, b| a.bytes.cmp(&b.bytes).then(a.item.cmp(&b.item)));
    let mut top2: Vec<(Option<usize>, Option<usize>)> = Vec::with_capacity(ups.len());
    let (mut first, mut second): (Option<usize>, Option<usize>) = (None, None);
    for (u, m) in ups.iter().enumerate() {
        let better = |x: Option<usize>| x.is_none_or(|x| m.error > ups[x].error);
        if first.is_some_and(|f| ups[f].item == m.item) {
            if better(first) {
                first = Some(u);
            }
        } else if better(first) {
            second = first;
            first = Some(u);
        } else if better(second) {
            second = Some(u);
        }
        top2.push((first, second));
    }
    // A relative tolerance keeps float noise from cycling.
    let eps = 1e-12 * err_total.max(f64::MIN_POSITIVE);
    let mut best: Option<(f64, Move, Move)> = None;
    for d in &downs {
        let limit = slack + d.bytes;
        let n = ups.partition_point(|m| m.bytes <= limit);
        if n == 0 {
            continue;
        }
        let (f, s) = top2[n - 1];
        let partner = match f {
            Some(f) if ups[f].item != d.item => Some(f),
            _ => s,
        };
        let Some(u) = partner else { continue };
        let gain = ups[u].error - d.error;
        if gain > eps && best.is_none_or(|(g, _, _)| gain > g) {
            best = Some((gain, *d, ups[u]));
        }
    }
    match best {
        Some((_, d, u)) => {
            picks[d.item] = d.to;
            picks[u.item] = u.to;
            true
        }
        None => false,
    }
}

/// Steps 2 and 3 from `picks` (which must fit the budget).
fn improve(items: &[Vec<Choice>], budget: u64, picks: &mut [usize]) {
    fill(items, budget, picks);
    for _ in 0..MAX_EXCHANGE_ROUNDS {
        if !exchange_once(items, budget, picks) {
            break;
        }
        fill(items, budget, picks);
    }
}

/// Pick one option per item with Σ bytes ≤ `budget` and Σ error as small as the three steps
/// find, also trying every start in `starts` that fits. `None` when even the smallest options
/// exceed the budget (or an item has no options).
pub fn allocate(items: &[Vec<Choice>], budget: u64, starts: &[Vec<usize>]) -> Option<Allocation> {
    let smallest = smallest(items)?;
    if total(items, &smallest).0 > budget {
        return None;
    }
    let mut candidates = vec![lagrangian_path(items, budget, &smallest)];
    candidates.extend(
        starts
            .iter()
            .filter(|s| {
                s.len() == items.len()
                    && s.iter().zip(items).all(|(&p, o)| p < o.len())
                    && total(items, s).0 <= budget
            })
            .cloned(),
    );
    let mut best: Option<Allocation> = None;
    for mut picks in candidates {
        improve(items, budget, &mut picks);
        let (bytes, error) = total(items, &picks);
        if best.as_ref().is_none_or(|b| error < b.error) {
            best = Some(Allocation {
                picks,
                bytes,
                error,
            });
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(bytes: u64, error: f64) -> Choice {
        Choice { bytes, error }
    }

    /// Every combination, for small cases.
    fn brute_force(items: &[Vec<Choice>], budget: u64) -> Option<f64> {
        let mut best: Option<f64> = None;
        let mut idx = vec![0usize; items.len()];
        loop {
            let (b, e) = total(items, &idx);
            if b <= budget && best.is_none_or(|x| e < x) {
                best = Some(e);
            }
            let mut k = 0;
            loop {
                if k == items.len() {
                    return best;
                }
                idx[k] += 1;
                if idx[k] < items[k].len() {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
        }
    }

    #[test]
    fn hull_drops_dominated_and_concave_points() {
        let opts = [c(10, 5.0), c(20, 2.0), c(30, 1.9), c(40, 0.0), c(25, 3.0)];
        // (25, 3.0) is dominated by (20, 2.0); (30, 1.9) lies above the chord 20→40.
        assert_eq!(convex_hull(&opts), vec![0, 1, 3]);
    }

    #[test]
    fn too_small_a_budget_is_none_and_the_minimum_is_exact() {
        let items = vec![vec![c(5, 1.0), c(9, 0.0)], vec![c(3, 2.0), c(4, 1.0)]];
        assert_eq!(minimum_bytes(&items), Some(8));
        assert!(allocate(&items, 7, &[]).is_none());
        let a = allocate(&items, 8, &[]).unwrap();
        assert_eq!((a.picks, a.bytes), (vec![0, 0], 8));
    }

    #[test]
    fn matches_brute_force_on_random_small_cases() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut exact = 0;
        for _case in 0..300 {
            let n_items = 2 + (next() % 4) as usize;
            let items: Vec<Vec<Choice>> = (0..n_items)
                .map(|_| {
                    (0..1 + next() % 5)
                        .map(|_| c(1 + next() % 40, (next() % 1000) as f64 / 10.0))
                        .collect()
                })
                .collect();
            let min = minimum_bytes(&items).unwrap();
            let budget = min + next() % 60;
            let want = brute_force(&items, budget).unwrap();
            let got = allocate(&items, budget, &[]).unwrap();
            assert!(got.bytes <= budget);
            assert_eq!(got.bytes, total(&items, &got.picks).0);
            // A heuristic: never below the optimum, and close to it.
            assert!(got.error >= want - 1e-9);
            assert!(got.error <= want * 1.5 + 10.0, "{} vs {want}", got.error);
            exact += usize::from((got.error - want).abs() < 1e-9);
        }
        assert!(exact >= 270, "optimal in {exact} of 300 cases");
    }

    #[test]
    fn a_feasible_start_is_never_made_worse() {
        // The hull path alone ends at error 10 (item 1's middle option is off its hull);
        // the start, at the budget exactly, has 6.
        let items = vec![
            vec![c(1, 10.0), c(6, 0.0)],
            vec![c(1, 10.0), c(3, 6.0), c(5, 0.0)],
        ];
        let path = lagrangian_path(&items, 9, &[0, 0]);
        assert_eq!(total(&items, &path).1, 10.0);
        let start = vec![1, 1];
        assert_eq!(total(&items, &start), (9, 6.0));
        let got = allocate(&items, 9, &[start]).unwrap();
        assert_eq!((got.bytes, got.error), (9, 6.0));
        // An infeasible start is ignored, not used.
        let got = allocate(&items, 8, &[vec![1, 2]]).unwrap();
        assert!(got.bytes <= 8);
    }
}
