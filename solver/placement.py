"""Placement of pipeline stages on the nodes of a pool by measured bandwidth (CP-SAT).

Real clusters are not uniform: links between racks, behind oversubscribed switches or through a
degraded NIC are several times slower than the rest, and a pipeline is only as fast as its
slowest stage boundary. Pipette (Yim et al. 2023, "Pipette: Automatic Fine-grained Large
Language Model Training Configurator for Real-World Clusters", DATE 2024, arXiv:2405.18093)
therefore profiles the attained bandwidth of every node-to-node link and assigns GPUs to the
parallel groups with that matrix in hand (there by simulated annealing on its latency model).
This module solves the pipeline part of that assignment: which nodes host which stages so that
the slowest communicating link is as fast as possible, with a proven bound.

**Layout.** Ranks follow Megatron's order (tp fastest, then cp, dp, pp outermost), so stage
``s`` holds the GPUs ``[s * stride, (s + 1) * stride)`` with ``stride = tp * cp * dp``:

* ``stride >= gpus_per_node`` (a multiple): stage ``s`` fills a block of
  ``k = stride / gpus_per_node`` nodes; GPU ``j`` of stage ``s`` sends its activations to GPU
  ``j`` of stage ``s + 1``, so the node at position ``i`` of stage ``s`` talks to the node at
  position ``i`` of stage ``s + 1``: the traffic forms ``k`` disjoint paths of ``L = pp`` nodes.
* ``stride < gpus_per_node`` (a divisor): ``g = gpus_per_node / stride`` consecutive stages
  share a node, only every ``g``-th boundary crosses nodes, and the ``L = pp / g`` units of
  ``g`` stages form one path (``k = 1``).

Unit position ``(t, i)`` (step ``t`` along path ``i``) is entry ``t * k + i`` of the returned
``nodes`` (pipeline order, ``U = k * L`` entries). A link's bandwidth is
``min(bw[a][b], bw[b][a])``. :func:`boundary_bandwidths` gives, per stage boundary, the slowest
link it uses and ``math.inf`` for a boundary inside a node, so a placement's bottleneck is the
min of that list (``inf``, reported optimal, when no boundary crosses nodes).

**Objective.** Maximise the bottleneck (the slowest communicating link); among placements with
the best bottleneck prefer a larger sum of the links (tie-break, secondary, best effort).

**Modelling** (style of d-krupke/cpsat-primer, like :mod:`solver.partition`: data prepared
before the model, a class with variable containers, one method per constraint family, time
limit / workers / seed always set, hints from a heuristic, status + objective + bound + gap in
the result, infeasibility explained):

* *Bisection over thresholds.* The optimum is one of the distinct link values. For a threshold
  ``τ``, "is there a placement using only links ``>= τ``?" asks for ``k`` vertex-disjoint paths
  of ``L`` nodes in the threshold graph ``G_τ`` (a path reversed has the same links).
* *The feasibility model* (:class:`ThresholdModel`) is a routing model, not an assignment one:
  an arc Boolean per directed link ``>= τ``, routes through a depot with a self-loop to skip a
  node (``add_circuit`` for ``k = 1``, ``add_multiple_circuit`` for ``k > 1``), ``k`` routes,
  ``U`` visited nodes, and for ``k > 1`` a step counter (0 at a start, +1 along an arc, ``L - 1``
  at an end) that fixes every route's length; each route must start on a lower node index than
  it ends (symmetry breaking). Measured on random 64-node matrices it decides thresholds in
  milliseconds where the assignment model with ``x[position][node]`` and
  ``x[p][a] ⇒ OR(x[q][b] : link(a, b) >= τ)`` clauses (tried first) needed seconds or timed
  out; CP-SAT's circuit cuts (``linearization_level = 2``, single route) settle rack-structured
  thresholds (cliques joined by a few links) at once. For ``k > 1`` a *chain* variant (one route
  of ``U`` nodes, cut into ``k`` pieces) is tried first with half of the probe's time: a
  restriction that is often found fast, whose infeasibility proves nothing.
* *Exact pruning and a necessary-condition bound.* A path lies inside one connected component
  of ``G_τ`` and needs ``L - 2`` nodes of degree ``>= 2``, so a component ``C`` hosts at most
  ``min(|C| // L, |C_deg>=2| // (L - 2))`` paths (``|C| // 2`` for ``L = 2``). Components hosting
  none are dropped from the probe (exact); the largest ``τ`` at which the components host all
  ``k`` paths is a proven upper bound on the bottleneck (the count only falls as ``τ`` rises:
  components split and degrees drop, so bisection finds it).
* *Heuristic first.* Each probe first runs a greedy path builder on ``G_τ``: from up to
  ``GREEDY_STARTS`` start nodes, extend the end to the unused neighbour with the fewest
  (Warnsdorff's rule) or the most unused neighbours, ties to the faster link, and when stuck
  apply Pósa rotations (Pósa 1976); paths one after the other, or for ``k > 1`` one chain of
  ``U`` cut in pieces. CP-SAT runs only where the greedy fails, hinted with the best placement
  so far.
* *Search.* ``lo`` = the best bottleneck found (the identity order to start with), ``hi`` = the
  bound. The bound is probed first (it is often met, which proves optimality at once), then the
  middle value. A found placement lifts ``lo`` to its own bottleneck; a CP-SAT infeasibility
  proof on the exact node set lowers the proven bound; a probe that timed out lowers ``hi`` for
  the bisection only. Each probe gets the time left divided by the probes still possible; when
  the bisection ends with time left, the unresolved range is closed from below, each probe with
  all the time left. Status ``optimal`` means the bottleneck meets the proven bound.
* *Large pools* (hundreds of nodes; 512 measured). The threshold graphs near the optimum are
  sparse, so CP-SAT sees every usable node as long as they carry at most ``MAX_MODEL_ARCS``
  arcs; beyond that, a probe's model is restricted to the best-connected usable nodes (degree in
  ``G_τ``, then summed bandwidth), as many as fit the budget, while the greedy still sees all.
  A restricted refutation is not a proof: the bound then stays the one from the full matrix,
  and the result is ``feasible`` unless that bound is met.
* *Tie-break.* At the final bottleneck ``τ*`` a deterministic local search (move a position to
  the best unused node, swap two positions) raises the sum of the links keeping every link
  ``>= τ*``; then, with the time left, the feasibility model at ``τ*`` maximises
  ``sum(weight[a, b] * arc[a, b])`` (bandwidths scaled to integers, ``WEIGHT_RESOLUTION`` steps up
  to the fastest link), hinted with the local optimum. ``total_status`` says whether that sum
  was proven maximal (``"optimal"``, up to the integer scaling) or only improved locally.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from ortools.sat.python import cp_model

from solver import cpsat
from solver.cpsat import FOUND, SolveResult, Status, status_of

MAX_MODEL_ARCS = 20_000
"""A CP-SAT probe whose usable nodes have more links ``>= τ`` (counted both ways) than this
sees only the best-connected nodes, as many as keep it within the budget."""

WEIGHT_RESOLUTION = 10**6
"""Integer steps up to the fastest link in the tie-break objective."""

GREEDY_STARTS = 32
"""Start nodes the greedy path builder tries per path ..."""

GREEDY_MIN_STARTS = 4
"""... and at least this many once the time limit has passed."""

MIN_PROBE_S = 0.005
"""A CP-SAT probe needs at least this much of the time limit left to be worth starting."""


BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


@dataclass(frozen=True)
class PlacementProblem:
    """A pool's measured bandwidths (Gb/s, ``N x N``, diagonal ignored) and a plan's layout.

    ``stride = tp * cp * dp`` GPUs per pipeline stage; ``min_link_Gbps`` optionally requires
    every node-crossing link to be at least that fast (the answer is then ``infeasible``, with
    the reason, when no placement achieves it). The matrix is stored as a tuple of float tuples
    (lists and numpy arrays are accepted).
    """

    bandwidth_Gbps: tuple[tuple[float, ...], ...]
    pp: int
    stride: int
    gpus_per_node: int
    min_link_Gbps: float = 0.0

    def __post_init__(self) -> None:
        try:
            arr = np.asarray(self.bandwidth_Gbps, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError("bandwidth_Gbps must be a square N x N matrix of numbers "
                             f"(rows of equal length): {exc}") from exc
        if arr.size == 0:
            raise ValueError("bandwidth_Gbps is empty: the pool needs at least one node")
        if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
            raise ValueError(f"bandwidth_Gbps must be a square N x N matrix, got shape "
                             f"{arr.shape}")
        n = arr.shape[0]
        off = ~np.eye(n, dtype=bool)
        bad = off & ~(np.isfinite(arr) & (arr >= 0))
        if bad.any():
            a, b = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"bandwidth_Gbps[{a}][{b}] = {arr[a, b]}: link bandwidths must be "
                             "finite and >= 0 Gb/s (the diagonal is ignored)")
        object.__setattr__(self, "bandwidth_Gbps", tuple(tuple(row) for row in arr.tolist()))
        for name in ("pp", "stride", "gpus_per_node"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
            object.__setattr__(self, name, int(v))
        if not (isinstance(self.min_link_Gbps, int | float | np.number)
                and math.isfinite(self.min_link_Gbps) and self.min_link_Gbps >= 0):
            raise ValueError(f"min_link_Gbps must be finite and >= 0, got {self.min_link_Gbps!r}")
        object.__setattr__(self, "min_link_Gbps", float(self.min_link_Gbps))
        s, gpn, pp = self.stride, self.gpus_per_node, self.pp
        if s >= gpn:
            if s % gpn:
                raise ValueError(f"layout not expressible: stride={s} GPUs per stage "
                                 f"(tp*cp*dp) is not a multiple of gpus_per_node={gpn}, so "
                                 "stages would straddle nodes unevenly")
        else:
            if gpn % s:
                raise ValueError(f"layout not expressible: stride={s} GPUs per stage "
                                 f"(tp*cp*dp) does not divide gpus_per_node={gpn}, so stages "
                                 "would straddle nodes unevenly")
            if pp % (gpn // s):
                raise ValueError(f"layout not expressible: {gpn // s} stages share each node "
                                 f"(gpus_per_node={gpn} / stride={s}), but pp={pp} is not a "
                                 "multiple of it")
        if self.n_positions > n:
            raise ValueError(f"too few nodes: the layout needs {self.n_positions} distinct "
                             f"nodes ({self._layout_words()}) but the bandwidth matrix has {n}")

    def _layout_words(self) -> str:
        if self.stages_per_node > 1:
            return (f"pp={self.pp} stages, {self.stages_per_node} per node "
                    f"(gpus_per_node={self.gpus_per_node} / stride={self.stride})")
        return (f"pp={self.pp} stages × {self.nodes_per_stage} node(s) each "
                f"(stride={self.stride} / gpus_per_node={self.gpus_per_node})")

    @property
    def n_nodes(self) -> int:
        return len(self.bandwidth_Gbps)

    @property
    def nodes_per_stage(self) -> int:
        """``k``: nodes one stage spans (1 when stages share nodes)."""
        return max(1, self.stride // self.gpus_per_node)

    @property
    def stages_per_node(self) -> int:
        """``g``: consecutive stages on one node (1 when a stage spans whole nodes)."""
        return max(1, self.gpus_per_node // self.stride)

    @property
    def path_len(self) -> int:
        """Nodes along one communication path (``pp``, or ``pp / g`` units)."""
        return self.pp // self.stages_per_node

    @property
    def n_positions(self) -> int:
        """``U``: distinct nodes the layout occupies."""
        return self.path_len * self.nodes_per_stage


@dataclass(frozen=True)
class PlacementResult(SolveResult):
    """``nodes[t * k + i]`` is the node at step ``t`` of path ``i`` (pipeline order); ``None``
    exactly when no placement was found (infeasible or unknown).

    ``bound_Gbps`` is a proven upper bound on the best bottleneck; ``gap`` is
    ``(bound - bottleneck) / bound`` (0 when proven optimal). ``naive_bottleneck_Gbps`` is the
    identity order ``0 .. U-1`` (a scheduler's default). ``total_Gbps`` is the sum of the
    communicating links (the tie-break) and ``total_status`` whether that sum is proven maximal
    among placements with this bottleneck (``"optimal"``) or only locally improved.
    """

    nodes: tuple[int, ...] | None
    bottleneck_Gbps: float | None
    bound_Gbps: float | None
    naive_bottleneck_Gbps: float | None
    total_Gbps: float | None = None
    total_status: Status | None = None


# --------------------------------------------------------------------------------------------
# Evaluation helpers (float, exact inputs) shared by the solver, the result and the tests.
# --------------------------------------------------------------------------------------------


def _check_nodes(problem: PlacementProblem, nodes: Sequence[int]) -> tuple[int, ...]:
    out = tuple(nodes)
    if len(out) != problem.n_positions:
        raise ValueError(f"nodes has {len(out)} entries; the layout has {problem.n_positions} "
                         "unit positions")
    if not all(_is_int(a) and 0 <= a < problem.n_nodes for a in out):
        raise ValueError(f"nodes must be node indices in 0..{problem.n_nodes - 1}, got {out}")
    if len(set(out)) != len(out):
        raise ValueError(f"nodes must be distinct, got {out}")
    return tuple(int(a) for a in out)


def link_Gbps(problem: PlacementProblem, a: int, b: int) -> float:
    """Bandwidth of the link between nodes ``a`` and ``b``: the slower direction."""
    bw = problem.bandwidth_Gbps
    return min(bw[a][b], bw[b][a])


def communicating_pairs(problem: PlacementProblem) -> list[tuple[int, int]]:
    """Unit positions ``(p, q)`` whose nodes exchange activations: ``(t*k+i, (t+1)*k+i)``."""
    k, n_len = problem.nodes_per_stage, problem.path_len
    return [(t * k + i, (t + 1) * k + i) for t in range(n_len - 1) for i in range(k)]


def boundary_bandwidths(problem: PlacementProblem, nodes: Sequence[int]) -> list[float]:
    """Per stage boundary ``s -> s+1`` (``pp - 1`` entries): the slowest link over the
    boundary's node pairs, ``math.inf`` for a boundary inside a node (stages sharing a node)."""
    nodes = _check_nodes(problem, nodes)
    k, g = problem.nodes_per_stage, problem.stages_per_node
    out: list[float] = []
    for s in range(problem.pp - 1):
        if g > 1:
            if (s + 1) % g:
                out.append(math.inf)
            else:
                u = s // g
                out.append(link_Gbps(problem, nodes[u], nodes[u + 1]))
        else:
            out.append(min(link_Gbps(problem, nodes[s * k + i], nodes[(s + 1) * k + i])
                           for i in range(k)))
    return out


def bottleneck_Gbps(problem: PlacementProblem, nodes: Sequence[int]) -> float:
    """The slowest node-crossing link of a placement (``inf`` when no boundary crosses)."""
    return min(boundary_bandwidths(problem, nodes), default=math.inf)


def total_Gbps(problem: PlacementProblem, nodes: Sequence[int]) -> float:
    """Sum of the communicating links of a placement (the tie-break objective)."""
    nodes = _check_nodes(problem, nodes)
    return math.fsum(link_Gbps(problem, nodes[p], nodes[q])
                     for p, q in communicating_pairs(problem))


# --------------------------------------------------------------------------------------------
# Data step: everything the models need, as arrays, before any variable exists.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PlacementData:
    link: FloatArray                       # N x N, min of both directions, diagonal -inf
    weights: IntArray                      # link scaled to integers (tie-break), diagonal 0
    n_nodes: int
    n_paths: int                           # k
    path_len: int                          # L
    pairs: tuple[tuple[int, int], ...]     # communicating unit positions
    neighbours: tuple[tuple[int, ...], ...]  # per position: positions it talks to
    pairs_of: tuple[tuple[int, ...], ...]  # per position: indices into pairs
    values: FloatArray                     # sorted distinct link values
    min_idx: int                           # first value index >= min_link_Gbps

    @property
    def n_positions(self) -> int:
        return self.n_paths * self.path_len

    def pos(self, t: int, i: int) -> int:
        return t * self.n_paths + i


def _prepare(problem: PlacementProblem) -> _PlacementData:
    bw = np.asarray(problem.bandwidth_Gbps, dtype=np.float64)
    n = bw.shape[0]
    link = np.minimum(bw, bw.T)
    np.fill_diagonal(link, -np.inf)
    values = np.unique(link[np.triu_indices(n, 1)]) if n > 1 else np.empty(0)
    top = float(values[-1]) if len(values) else 0.0
    unit = top / WEIGHT_RESOLUTION
    if not unit > 0:                # no positive link, or one so small the step underflows
        unit = 1.0
    weights = np.rint(np.where(np.isfinite(link), link, 0.0) / unit).astype(np.int64)
    pairs = tuple(communicating_pairs(problem))
    u = problem.n_positions
    neighbours = tuple(tuple(q if p == a else p for p, q in pairs if a in (p, q))
                       for a in range(u))
    pairs_of = tuple(tuple(e for e, (p, q) in enumerate(pairs) if a in (p, q))
                     for a in range(u))
    return _PlacementData(
        link=link, weights=weights, n_nodes=n, n_paths=problem.nodes_per_stage,
        path_len=problem.path_len, pairs=pairs, neighbours=neighbours, pairs_of=pairs_of,
        values=values, min_idx=int(np.searchsorted(values, problem.min_link_Gbps, "left")),
    )


def _bottleneck(data: _PlacementData, nodes: Sequence[int]) -> float:
    return min((float(data.link[nodes[p], nodes[q]]) for p, q in data.pairs), default=math.inf)


def _total(data: _PlacementData, nodes: Sequence[int]) -> float:
    return math.fsum(float(data.link[nodes[p], nodes[q]]) for p, q in data.pairs)


def _value_index(data: _PlacementData, value: float) -> int:
    return int(np.searchsorted(data.values, value, "left"))


def _canonical(data: _PlacementData, nodes: Sequence[int]) -> tuple[int, ...]:
    """The representative the symmetry breaking keeps: every path starts on a lower node than it
    ends, paths ordered by their first node. Same links, same bottleneck and sum."""
    k, n_len = data.n_paths, data.path_len
    paths = [[int(nodes[data.pos(t, i)]) for t in range(n_len)] for i in range(k)]
    paths = [p if p[0] <= p[-1] else p[::-1] for p in paths]
    paths.sort(key=lambda p: p[0])
    out = [0] * data.n_positions
    for i, path in enumerate(paths):
        for t, a in enumerate(path):
            out[data.pos(t, i)] = a
    return tuple(out)


# ---------------------------------------------------------------- threshold graph analysis


def _components(allowed: BoolArray, members: IntArray) -> list[IntArray]:
    """Connected components of the graph ``allowed`` induced on ``members`` (node indices)."""
    sub = allowed[np.ix_(members, members)]
    m = len(members)
    seen_any = np.zeros(m, dtype=bool)
    comps: list[IntArray] = []
    for s in range(m):
        if seen_any[s]:
            continue
        seen = np.zeros(m, dtype=bool)
        seen[s] = True
        frontier = seen.copy()
        while frontier.any():
            frontier = sub[frontier].any(axis=0) & ~seen
            seen |= frontier
        seen_any |= seen
        comps.append(members[seen])
    return comps


@dataclass(frozen=True)
class _Fit:
    """How many paths of ``path_len`` nodes the components of ``G_τ`` can host (a necessary
    condition, see the module docstring) and the nodes of the components hosting any."""

    paths: int
    usable: BoolArray
    sizes: tuple[int, ...]         # component sizes (nodes with a link >= τ), largest first
    deg2: tuple[int, ...]          # of those, nodes with two such links


def _fit(allowed: BoolArray, path_len: int) -> _Fit:
    deg = allowed.sum(axis=1)
    comps = _components(allowed, np.flatnonzero(deg >= 1))
    usable = np.zeros(allowed.shape[0], dtype=bool)
    total = 0
    info = []
    for comp in comps:
        size, d2 = len(comp), int((deg[comp] >= 2).sum())
        hosted = size // 2 if path_len == 2 else min(size // path_len, d2 // (path_len - 2))
        total += hosted
        if hosted:
            usable[comp] = True
        info.append((size, d2))
    info.sort(reverse=True)
    return _Fit(paths=total, usable=usable, sizes=tuple(s for s, _ in info),
                deg2=tuple(d for _, d in info))


def _allowed(data: _PlacementData, tau: float) -> BoolArray:
    return np.asarray(data.link >= tau)


def _bound_index(data: _PlacementData) -> int:
    """Largest value index at which the necessary condition holds (-1: none). The hosted-path
    count only falls as τ rises (components split, degrees drop), so bisection is exact."""
    lo, hi = -1, len(data.values) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _fit(_allowed(data, float(data.values[mid])), data.path_len).paths >= data.n_paths:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _describe_fit(data: _PlacementData, tau: float) -> str:
    fit = _fit(_allowed(data, tau), data.path_len)
    n_len, k = data.path_len, data.n_paths
    shown = ", ".join(f"{s} ({d} with two)" for s, d in zip(fit.sizes[:8], fit.deg2[:8],
                                                             strict=True))
    more = f" and {len(fit.sizes) - 8} more" if len(fit.sizes) > 8 else ""
    inner = f", {n_len - 2} of them with two such links" if n_len > 2 else ""
    return (f"links of >= {tau:g} Gb/s join the {data.n_nodes} nodes into groups of "
            f"{shown or 'no'} nodes{more}; each of the {k} pipeline path(s) needs {n_len} "
            f"nodes in one group{inner}, so only {fit.paths} of {k} fit")


@dataclass(frozen=True)
class _Probe:
    """The threshold graph at ``tau`` after exact pruning, and the nodes CP-SAT sees."""

    tau: float
    allowed: BoolArray
    usable: BoolArray               # nodes in components that can host a path (exact)
    candidates: tuple[int, ...]     # usable, or its best-connected nodes within the arc budget
    exact: bool                     # candidates == usable
    paths: int                      # paths the components host (necessary condition)


def _probe(data: _PlacementData, idx: int) -> _Probe:
    tau = float(data.values[idx])
    allowed = _allowed(data, tau)
    fit = _fit(allowed, data.path_len)
    cand = np.flatnonzero(fit.usable)
    sub = allowed[np.ix_(cand, cand)]
    exact = int(sub.sum()) <= MAX_MODEL_ARCS
    if not exact:
        deg = sub.sum(axis=1)
        strength = np.where(sub, data.link[np.ix_(cand, cand)], 0.0).sum(axis=1)
        order = np.lexsort((cand, -strength, -deg))
        ranked = sub[np.ix_(order, order)]
        # arcs among the first m ranked nodes, for every m: the largest m within the budget
        arcs = np.cumsum(2 * np.triu(ranked, 1).sum(axis=0))
        m = max(data.n_positions, int(np.searchsorted(arcs, MAX_MODEL_ARCS, "right")))
        cand = np.sort(cand[order[:m]])
    return _Probe(tau=tau, allowed=allowed, usable=fit.usable,
                  candidates=tuple(int(a) for a in cand), exact=exact, paths=fit.paths)


# ---------------------------------------------------------------- heuristics


def _grow_path(data: _PlacementData, allowed: BoolArray, unused: BoolArray, rem: IntArray,
               start: int, length: int, fewest_first: bool) -> list[int] | None:
    """Grow a path of ``length`` unused nodes from ``start``: extend the end to the unused
    neighbour with the fewest (``fewest_first``, Warnsdorff's rule) or the most unused
    neighbours, ties to the faster link; when stuck, rotate (Pósa 1976: the end ``v_t`` is
    adjacent to ``v_i`` on the path, so ``v_0..v_i, v_t..v_{i+1}`` is a path ending at
    ``v_{i+1}``) or reverse, at most ``3 * length`` times. ``rem[v]``: unused neighbours."""
    link = data.link
    u, r = unused.copy(), rem.copy()
    path = [start]
    u[start] = False
    r -= allowed[start]
    for _ in range(3 * length + 1):
        while len(path) < length:
            end = path[-1]
            nb = np.flatnonzero(allowed[end] & u)
            if not len(nb):
                break
            if len(path) < length - 1:          # not the last step: avoid dead ends
                alive = nb[r[nb] >= 1]
                nb = alive if len(alive) else nb
            key = r[nb] if fewest_first else -r[nb]
            v = int(nb[np.lexsort((nb, -link[end, nb], key))[0]])
            path.append(v)
            u[v] = False
            r -= allowed[v]
        if len(path) == length:
            return path
        arr = np.asarray(path)
        opts = np.flatnonzero(allowed[path[-1], arr[:-2]])   # v_i adjacent to the end
        score = r[arr[opts + 1]] if len(opts) else opts
        if len(opts) and score.max() >= 1:
            i = int(opts[np.lexsort((opts, -score))[0]])
            path = path[:i + 1] + path[i + 1:][::-1]
        elif (allowed[path[0]] & u).any() or not len(opts):
            path.reverse()
        else:                                  # no rotation helps at once: walk on
            i = int(opts[len(path) % len(opts)])
            path = path[:i + 1] + path[i + 1:][::-1]
    return None


def _greedy_path(data: _PlacementData, allowed: BoolArray, unused: BoolArray, rem: IntArray,
                 length: int, deadline: float) -> list[int] | None:
    """One path of ``length`` unused nodes in ``allowed``, or ``None``: :func:`_grow_path`
    from up to ``GREEDY_STARTS`` starts (past the deadline only ``GREEDY_MIN_STARTS``),
    alternately the least-connected node with Warnsdorff's rule and an end of the fastest links
    with the most-connected-first rule."""
    link = data.link
    cands = np.flatnonzero(unused & (rem >= 1))
    if len(cands) < length:
        return None
    best = np.where(allowed[cands] & unused[None, :], link[cands], -np.inf).max(axis=1)
    by_degree = cands[np.lexsort((cands, -best, rem[cands]))]
    by_link = cands[np.lexsort((cands, -rem[cands], -best))]
    tried: set[tuple[int, bool]] = set()
    for j in range(min(GREEDY_STARTS, 2 * len(cands))):
        if j >= GREEDY_MIN_STARTS and time.perf_counter() > deadline:
            break
        fewest = j % 2 == 0
        s = int((by_degree if fewest else by_link)[j // 2])
        if (s, fewest) in tried:
            continue
        tried.add((s, fewest))
        path = _grow_path(data, allowed, unused, rem, s, length, fewest)
        if path is not None:
            return path
    return None


def _greedy(data: _PlacementData, allowed: BoolArray, usable: BoolArray,
            deadline: float) -> tuple[int, ...] | None:
    """``k`` disjoint paths of ``L`` nodes in ``allowed`` among ``usable`` as unit positions:
    path after path, or (``k > 1``) one path of ``U`` nodes cut into ``k`` pieces; ``None``
    when the greedy gets stuck."""
    rem0 = (allowed & usable[None, :]).sum(axis=1).astype(np.int64)
    unused, rem = usable.copy(), rem0.copy()
    paths: list[list[int]] = []
    for _ in range(data.n_paths):
        path = _greedy_path(data, allowed, unused, rem, data.path_len, deadline)
        if path is None:
            break
        paths.append(path)
        for a in path:
            unused[a] = False
            rem -= allowed[a]
    if len(paths) < data.n_paths:
        if data.n_paths == 1:
            return None
        chain = _greedy_path(data, allowed, usable, rem0, data.n_positions, deadline)
        if chain is None:
            return None
        n_len = data.path_len
        paths = [chain[i * n_len:(i + 1) * n_len] for i in range(data.n_paths)]
    out = [0] * data.n_positions
    for i, path in enumerate(paths):
        for t, a in enumerate(path):
            out[data.pos(t, i)] = a
    return tuple(out)


def _polish(data: _PlacementData, probe: _Probe, nodes: Sequence[int],
            deadline: float, max_passes: int = 50) -> tuple[int, ...]:
    """Local search on the sum of links keeping every link ``>= probe.tau``: replace a node by
    the best unused usable node, swap two positions; first improvement, until none is left."""
    link, allowed = data.link, probe.allowed
    cur = [int(a) for a in nodes]
    used = np.zeros(data.n_nodes, dtype=bool)
    used[cur] = True
    u = data.n_positions
    tol = 1e-12 * max(1.0, float(data.values[-1]))
    for _ in range(max_passes):
        improved = False
        for p in range(u):
            nb = [cur[q] for q in data.neighbours[p]]
            ok = probe.usable & ~used
            gain = np.zeros(data.n_nodes)
            for m in nb:
                ok &= allowed[m]
                gain += np.where(allowed[m], link[m], 0.0)
            if not nb or not ok.any():
                continue
            gain[~ok] = -np.inf
            c = int(np.argmax(gain))
            if gain[c] > sum(float(link[m, cur[p]]) for m in nb) + tol:
                used[cur[p]], used[c] = False, True
                cur[p] = c
                improved = True
        for p in range(u):
            if time.perf_counter() > deadline:
                return tuple(cur)
            for p2 in range(p + 1, u):
                touched = set(data.pairs_of[p]) | set(data.pairs_of[p2])
                old = sum(float(link[cur[a], cur[b]]) for a, b in (data.pairs[e]
                                                                     for e in touched))
                cur[p], cur[p2] = cur[p2], cur[p]
                new_links = [float(link[cur[a], cur[b]]) for a, b in (data.pairs[e]
                                                                       for e in touched)]
                if min(new_links) >= probe.tau and sum(new_links) > old + tol:
                    improved = True
                else:
                    cur[p], cur[p2] = cur[p2], cur[p]
        if not improved or time.perf_counter() > deadline:
            break
    return tuple(cur)


# --------------------------------------------------------------------------------------------
# The CP-SAT model.
# --------------------------------------------------------------------------------------------


class ThresholdModel:
    """CP-SAT model of "``k`` disjoint paths of ``L`` nodes whose every link is ``>= probe.tau``"
    on the probe's candidate nodes, as routes through a depot (``add_circuit`` for one path,
    ``add_multiple_circuit`` for several). With ``chain=True`` it asks instead for one path of
    ``U = k * L`` nodes, which cut into ``k`` pieces is a placement (a restriction: found fast
    with the strong single-circuit relaxation, but its infeasibility proves nothing for
    ``k > 1``). Node ``a`` is circuit node ``index[a]`` (1..m, the depot is 0). Variables are
    public containers:

    * ``arc[(a, b)]``: ``b`` follows ``a`` on a path (a link ``>= τ``; both directions);
    * ``start[a]`` / ``end[a]``: ``a`` is the first / last node of a path (depot arcs);
    * ``skip[a]``: ``a`` hosts nothing (the circuit's self-loop);
    * ``step[a]`` (several paths only): ``a``'s position along its path, 0..L-1;
    * ``first[a]`` (several paths only): the first node of ``a``'s path (symmetry breaking).
    """

    def __init__(self, data: _PlacementData, probe: _Probe, *, chain: bool = False) -> None:
        self.data = data
        self.probe = probe
        self.chain = chain
        self.n_paths = 1 if chain else data.n_paths
        self.path_len = data.n_positions if chain else data.path_len
        self.model = cp_model.CpModel()
        self.nodes_in = probe.candidates
        self.index = {a: j + 1 for j, a in enumerate(self.nodes_in)}
        m = self.model
        self.start = {a: m.new_bool_var(f"start_{a}") for a in self.nodes_in}
        self.end = {a: m.new_bool_var(f"end_{a}") for a in self.nodes_in}
        self.skip = {a: m.new_bool_var(f"skip_{a}") for a in self.nodes_in}
        cand = np.asarray(self.nodes_in, dtype=np.int64)
        sub = probe.allowed[np.ix_(cand, cand)]
        self.arc: dict[tuple[int, int], cp_model.IntVar] = {
            (int(cand[i]), int(cand[j])): m.new_bool_var(f"arc_{cand[i]}_{cand[j]}")
            for i, j in zip(*np.nonzero(sub), strict=True)
        }
        self.step: dict[int, cp_model.IntVar] = {}
        self.first: dict[int, cp_model.IntVar] = {}
        self._add_routes()
        self._add_path_count()
        self._add_path_length()
        self._add_symmetry_breaking()

    def _add_routes(self) -> None:
        """Each candidate node is skipped or on exactly one path; paths leave and return to
        the depot, so they are simple and disjoint."""
        if not self.nodes_in:              # nothing can host a path: the empty clause
            self.model.add_bool_or([])
            return
        arcs: list[tuple[int, int, cp_model.IntVar]] = []
        for a in self.nodes_in:
            j = self.index[a]
            arcs += [(0, j, self.start[a]), (j, 0, self.end[a]), (j, j, self.skip[a])]
        arcs += [(self.index[a], self.index[b], var) for (a, b), var in self.arc.items()]
        if self.n_paths == 1:
            self.model.add_circuit(arcs)
        else:
            self.model.add_multiple_circuit(arcs)

    def _add_path_count(self) -> None:
        """Exactly ``k`` paths and ``U`` hosting nodes."""
        self.model.add(sum(self.start.values()) == self.n_paths)
        self.model.add(sum(self.skip.values()) == len(self.nodes_in) - self.data.n_positions)

    def _add_path_length(self) -> None:
        """Every path has exactly ``L`` nodes (implied by the counts for one path): ``step``
        is 0 at a start, +1 along an arc, ``L - 1`` at an end."""
        m = self.model
        if self.n_paths == 1:
            return
        last = self.path_len - 1
        self.step = {a: m.new_int_var(0, last, f"step_{a}") for a in self.nodes_in}
        for a in self.nodes_in:
            m.add(self.step[a] == 0).only_enforce_if(self.start[a])
            m.add(self.step[a] == last).only_enforce_if(self.end[a])
        for (a, b), var in self.arc.items():
            m.add(self.step[b] == self.step[a] + 1).only_enforce_if(var)

    def _add_symmetry_breaking(self) -> None:
        """A path reversed has the same links: every path starts on a lower node index than it
        ends (paths are unlabelled routes, so there is no permutation symmetry left)."""
        m = self.model
        if self.n_paths == 1:
            m.add(sum(a * v for a, v in self.start.items()) + 1
                  <= sum(a * v for a, v in self.end.items()))
            return
        top = max(self.nodes_in, default=0)
        self.first = {a: m.new_int_var(0, top, f"first_{a}") for a in self.nodes_in}
        for a in self.nodes_in:
            m.add(self.first[a] == a).only_enforce_if(self.start[a])
            m.add(self.first[a] + 1 <= a).only_enforce_if(self.end[a])
        for (a, b), var in self.arc.items():
            m.add(self.first[b] == self.first[a]).only_enforce_if(var)

    def add_total_objective(self) -> None:
        """Maximise the sum of the used links (integer weights)."""
        w = self.data.weights
        self.model.maximize(sum(int(w[a, b]) * var for (a, b), var in self.arc.items()))

    def add_hint(self, nodes: Sequence[int]) -> None:
        """Hint a placement (canonicalised; for a chain, its paths one after the other). Nodes
        outside the candidates or links below ``τ`` leave parts of the hint inconsistent,
        which CP-SAT repairs."""
        d = self.data
        nodes = _canonical(d, nodes)
        paths = [[nodes[d.pos(t, i)] for t in range(d.path_len)] for i in range(d.n_paths)]
        if self.chain:
            paths = [[a for path in paths for a in path]]
        used = set(nodes)
        arcs: set[tuple[int, int]] = set()
        step: dict[int, int] = {}
        first: dict[int, int] = {}
        for path in paths:
            arcs.update(itertools.pairwise(path))
            for t, a in enumerate(path):
                step[a], first[a] = t, path[0]
        starts, ends = {p[0] for p in paths}, {p[-1] for p in paths}
        for a in self.nodes_in:
            self.model.add_hint(self.start[a], a in starts)
            self.model.add_hint(self.end[a], a in ends)
            self.model.add_hint(self.skip[a], a not in used)
            if a in self.step and a in step:
                self.model.add_hint(self.step[a], step[a])
            if a in self.first and a in first:
                self.model.add_hint(self.first[a], first[a])
        for key, var in self.arc.items():
            self.model.add_hint(var, key in arcs)

    def nodes(self, solver: cp_model.CpSolver) -> tuple[int, ...]:
        """The placement of a solution: the paths followed from their start nodes (a chain
        cut into ``k`` pieces of ``L``)."""
        succ = {a: b for (a, b), var in self.arc.items() if solver.boolean_value(var)}
        paths = []
        for a in self.nodes_in:
            if solver.boolean_value(self.start[a]):
                path = [a]
                while path[-1] in succ:
                    path.append(succ[path[-1]])
                paths.append(path)
        d = self.data
        if self.chain:
            paths = [paths[0][i * d.path_len:(i + 1) * d.path_len] for i in range(d.n_paths)]
        out = [0] * d.n_positions
        for i, path in enumerate(sorted(paths)):
            for t, a in enumerate(path):
                out[d.pos(t, i)] = a
        return tuple(out)

    def solve(self, time_limit_s: float, seed: int,
              num_workers: int) -> tuple[cp_model.CpSolver, cp_model.CpSolverStatus]:
        # the circuit cuts of level 2 decide single-path thresholds fast (rack-structured ones
        # in milliseconds where level 1 times out); several paths do better on level 1
        return cpsat.solve(self.model, time_limit_s=time_limit_s, seed=seed,
                           num_workers=num_workers,
                           linearization_level=2 if self.n_paths == 1 else 1)


# --------------------------------------------------------------------------------------------
# The search.
# --------------------------------------------------------------------------------------------


@dataclass
class _SearchState:
    best: tuple[int, ...] | None
    lo: int                   # value index of the best bottleneck found (-1: none yet)
    hi: int                   # highest value index still worth probing
    proven_hi: int            # proven: no placement reaches values[proven_hi + 1]
    restricted: bool = False  # a probe's CP-SAT model saw only some of the usable nodes
    timed_out: bool = False   # a probe ran out of time (or was skipped for lack of it)


def _cp_probe(data: _PlacementData, probe: _Probe, hint: tuple[int, ...] | None,
              budget_s: float, seed: int, num_workers: int) -> tuple[tuple[int, ...] | None, str]:
    """CP-SAT on one threshold within ``budget_s``: for ``k > 1`` first the chain restriction
    (half the budget), then the ``k``-path model. Returns the placement found, or ``None`` and
    ``"infeasible"`` / ``"timeout"`` from the ``k``-path model."""
    end = time.perf_counter() + budget_s
    models = [ThresholdModel(data, probe, chain=True)] if data.n_paths > 1 else []
    models.append(ThresholdModel(data, probe))
    for tm in models:
        if hint is not None:
            tm.add_hint(hint)
        left = end - time.perf_counter()
        solver, code = tm.solve(left / 2 if tm.chain else left, seed, num_workers)
        status = status_of(code, tm.model, "placement")
        if status in FOUND:
            return tm.nodes(solver), "found"
        if status == "infeasible" and not tm.chain:
            return None, "infeasible"
    return None, "timeout"


def _probe_once(data: _PlacementData, state: _SearchState, idx: int, deadline: float,
                seed: int, num_workers: int, share: int) -> str:
    """Is there a placement with every link ``>= values[idx]``? Greedy, then CP-SAT with
    ``1 / share`` of the time left. Updates ``state``; returns ``"found"``, ``"infeasible"``
    (proven), ``"restricted"`` (infeasible on the restricted node set) or ``"timeout"``."""
    probe = _probe(data, idx)
    if probe.paths < data.n_paths:       # cannot happen below the bound; kept for safety
        state.hi, state.proven_hi = idx - 1, min(state.proven_hi, idx - 1)
        return "infeasible"
    found = _greedy(data, probe.allowed, probe.usable, deadline)
    if found is None:
        remaining = deadline - time.perf_counter()
        if remaining < MIN_PROBE_S:
            state.timed_out = True
            state.hi = idx - 1
            return "timeout"
        found, outcome = _cp_probe(data, probe, state.best, remaining / share, seed,
                                   num_workers)
        if found is None:
            state.hi = idx - 1
            if outcome == "infeasible" and probe.exact:
                state.proven_hi = min(state.proven_hi, idx - 1)
                return "infeasible"
            if outcome == "infeasible":
                state.restricted = True
                return "restricted"
            state.timed_out = True
            return "timeout"
    value = _value_index(data, _bottleneck(data, found))
    if value > state.lo or state.best is None:
        state.best, state.lo = found, value
    return "found"


def _tie_break(data: _PlacementData, nodes: tuple[int, ...], deadline: float, seed: int,
               num_workers: int) -> tuple[tuple[int, ...], Status]:
    """Raise the sum of links without lowering the bottleneck (module docstring)."""
    idx = _value_index(data, _bottleneck(data, nodes))
    probe = _probe(data, idx)
    sub = probe.allowed[np.ix_(probe.usable, probe.usable)]
    if float(np.where(sub, data.link[np.ix_(probe.usable, probe.usable)], -np.inf).max()) \
            <= probe.tau:
        return _canonical(data, nodes), "optimal"       # every usable link equals τ*
    best = _canonical(data, _polish(data, probe, nodes, deadline))
    if deadline - time.perf_counter() < MIN_PROBE_S:
        return best, "feasible"
    tm = ThresholdModel(data, probe)
    tm.add_total_objective()
    tm.add_hint(best)
    solver, code = tm.solve(deadline - time.perf_counter(), seed, num_workers)
    status = status_of(code, tm.model, "placement")
    if status in FOUND:
        found = _canonical(data, tm.nodes(solver))
        if (_bottleneck(data, found) >= probe.tau
                and _total(data, found) >= _total(data, best)):
            best = found
        if status == "optimal" and probe.exact:
            return best, "optimal"
    return best, "feasible"


def _gap(value: float, bound: float) -> float:
    if math.isinf(bound) or bound <= 0:
        return 0.0
    return max(0.0, (bound - value) / bound)


def solve_placement(problem: PlacementProblem, time_limit_s: float = 2.0, seed: int = 0,
                    num_workers: int = 1, *, tie_break: bool = True) -> PlacementResult:
    """Best (or best found within ``time_limit_s``) placement of the pipeline's unit positions
    on nodes, maximising the slowest communicating link; see the module docstring.

    ``tie_break`` also spends what is left of the time limit raising the sum of the links.
    Deterministic for a seed as long as no probe hits the time limit.
    """
    start = time.perf_counter()
    deadline = start + max(0.0, float(time_limit_s))
    data = _prepare(problem)
    identity = tuple(range(data.n_positions))
    naive = _bottleneck(data, identity)

    def finish(nodes: tuple[int, ...] | None, status: Status, bound: float | None,
               explanation: str | None, total_status: Status | None = None) -> PlacementResult:
        value = None if nodes is None else _bottleneck(data, nodes)
        return PlacementResult(
            nodes=nodes, bottleneck_Gbps=value, status=status, bound_Gbps=bound,
            gap=None if value is None or bound is None else _gap(value, bound),
            naive_bottleneck_Gbps=naive, explanation=explanation,
            total_Gbps=None if nodes is None else _total(data, nodes),
            total_status=total_status, wall_time_s=time.perf_counter() - start)

    if not data.pairs:          # one unit: no boundary crosses nodes
        return finish(identity, "optimal", math.inf, None, "optimal")
    if data.min_idx >= len(data.values):
        return finish(None, "infeasible", None,
                      f"no link reaches min_link_Gbps={problem.min_link_Gbps:g}: the fastest "
                      f"link is {float(data.values[-1]):g} Gb/s")
    ub = _bound_index(data)
    if ub < data.min_idx:
        tau = float(data.values[data.min_idx])
        return finish(None, "infeasible", None,
                      f"no placement keeps every node-crossing link >= "
                      f"{problem.min_link_Gbps:g} Gb/s: {_describe_fit(data, tau)}")

    state = _SearchState(best=None, lo=data.min_idx - 1, hi=ub, proven_hi=ub)
    naive_idx = _value_index(data, naive)
    if naive_idx >= data.min_idx:
        state.best, state.lo = identity, naive_idx
    # the bound first: often met (and then proven at once); otherwise bisect
    first = True
    while state.lo < state.hi:
        share = max(1, math.ceil(math.log2(state.hi - state.lo + 1)))
        idx = state.hi if first else (state.lo + state.hi + 1) // 2
        _probe_once(data, state, idx, deadline, seed, num_workers, share=share)
        first = False
    # probes that ran out of their share lowered ``hi`` without proof: close the unresolved
    # range from below, each probe with all the time that is left (a restricted refutation
    # would only repeat itself)
    while state.lo < state.proven_hi and deadline - time.perf_counter() >= MIN_PROBE_S:
        state.hi = state.proven_hi
        if _probe_once(data, state, state.lo + 1, deadline, seed, num_workers,
                       share=1) == "restricted":
            break

    bound = float(data.values[state.proven_hi])
    if state.best is None:
        if state.proven_hi < data.min_idx:
            return finish(None, "infeasible", None,
                          f"no placement keeps every node-crossing link >= "
                          f"{problem.min_link_Gbps:g} Gb/s (proved by CP-SAT on all usable "
                          "nodes)")
        return finish(None, "unknown", bound,
                      f"no placement with every node-crossing link >= "
                      f"{problem.min_link_Gbps:g} Gb/s found within {time_limit_s:g} s"
                      + (" (CP-SAT saw only the best-connected nodes)" if state.restricted
                         else ""))

    total_status: Status
    best, total_status = _canonical(data, state.best), "feasible"
    if tie_break:
        best, total_status = _tie_break(data, best, deadline, seed, num_workers)
    value_idx = _value_index(data, _bottleneck(data, best))
    if value_idx >= state.proven_hi:
        return finish(best, "optimal", bound, None, total_status)
    reasons = []
    if state.timed_out:
        reasons.append(f"the time limit of {time_limit_s:g} s ran out")
    if state.restricted:
        reasons.append(f"CP-SAT probes saw only the best-connected nodes (within "
                       f"{MAX_MODEL_ARCS} links)")
    why = " and ".join(reasons) or "the search stopped"
    if state.proven_hi < ub:
        source = (f"CP-SAT proved that no placement reaches "
                  f"{float(data.values[state.proven_hi + 1]):g} Gb/s")
    elif ub + 1 < len(data.values):
        source = _describe_fit(data, float(data.values[ub + 1]))
    else:
        source = "no link is faster"
    return finish(best, "feasible", bound,
                  f"bottleneck not proven optimal: {why}; the proven upper bound is "
                  f"{bound:g} Gb/s ({source})", total_status)
