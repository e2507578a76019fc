"""The point-to-point transfers of a simulated pipeline schedule, for drawing.

The simulator (:mod:`costmodel.pipeline.simulator`) charges a stage boundary's send/recv
latency on the cross-stage edge between two ranks: ``F(s, mb)`` may start ``p2p[s-1]`` after
``F(s-1, mb)`` ends on another rank (the activation), and ``I``/``B`` ``(s, mb)`` ``p2p[s]``
after ``I``/``B`` ``(s+1, mb)`` ends (the gradient). Sends are asynchronous, so a transfer
occupies no compute time: it is the interval ``[producer end, producer end + latency]`` during
which the sending rank sends and the receiving rank receives. With several model replicas
(Chimera, BitPipe) the edges stop at each replica chain's ends, as in the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from costmodel.pipeline.schedules import KIND_CODES
from costmodel.pipeline.simulator import SimResult

__all__ = ["Transfers", "transfers"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

ACTIVATION, GRADIENT = 0, 1
"""``Transfers.what``: a forward's activation (to the next stage) or a backward's input
gradient (to the previous stage)."""


@dataclass(frozen=True, slots=True)
class Transfers:
    """One entry per transfer between two ranks, in the order of ``start``.

    ``stage`` is the sending stage, ``mb`` the micro-batch, ``what`` :data:`ACTIVATION` or
    :data:`GRADIENT`; ``start``/``end`` in the simulation's time unit (seconds)."""

    src: IntArray
    dst: IntArray
    stage: IntArray
    mb: IntArray
    what: IntArray
    start: FloatArray
    end: FloatArray

    def __len__(self) -> int:
        return int(self.start.shape[0])


def _empty() -> Transfers:
    i = np.zeros(0, dtype=np.int64)
    f = np.zeros(0, dtype=np.float64)
    return Transfers(i, i, i, i, i, f, f)


def transfers(sim: SimResult) -> Transfers:
    """The transfers of ``sim`` that take time (a boundary whose latency is 0, or whose two
    stages share a rank, moves nothing the timeline could show)."""
    tl = sim.timeline
    lat = sim.p2p
    n = int(tl.start.shape[0])
    if n == 0 or lat is None or not len(lat) or not sim.stage_ranks:
        return _empty()
    sr = np.asarray(sim.stage_ranks, dtype=np.int64)
    n_st = int(sr.shape[0])
    per_replica = max(1, n_st // max(1, sim.replicas))
    m = int(tl.mb.max()) + 1
    is_f = tl.kind == KIND_CODES["F"]
    is_back = (tl.kind == KIND_CODES["B"]) | (tl.kind == KIND_CODES["I"])
    key = tl.stage * m + tl.mb
    fwd_at = np.full(n_st * m, -1, dtype=np.int64)
    back_at = np.full(n_st * m, -1, dtype=np.int64)
    idx = np.arange(n, dtype=np.int64)
    fwd_at[key[is_f]] = idx[is_f]
    back_at[key[is_back]] = idx[is_back]
    local = tl.stage % per_replica

    # activations: the consumer F(s) on rank(s), the producer F(s-1)
    cons_f = idx[is_f & (local > 0)]
    prod_f = fwd_at[key[cons_f] - m]
    # gradients: the consumer I/B(s), the producer I/B(s+1)
    cons_b = idx[is_back & (local < per_replica - 1)]
    prod_b = back_at[key[cons_b] + m]
    ok_f, ok_b = prod_f >= 0, prod_b >= 0
    cons = np.concatenate([cons_f[ok_f], cons_b[ok_b]])
    prod = np.concatenate([prod_f[ok_f], prod_b[ok_b]])
    what = np.concatenate([np.full(int(ok_f.sum()), ACTIVATION, dtype=np.int64),
                           np.full(int(ok_b.sum()), GRADIENT, dtype=np.int64)])
    src = tl.rank[prod]
    dst = tl.rank[cons]
    send_stage = tl.stage[prod]
    boundary = np.where(what == ACTIVATION, send_stage, send_stage - 1)
    dur = np.asarray(lat, dtype=np.float64)[np.clip(boundary, 0, len(lat) - 1)]
    keep = (src != dst) & (dur > 0)
    start = tl.end[prod][keep]
    order = np.argsort(start, kind="stable")
    return Transfers(
        src=src[keep][order], dst=dst[keep][order], stage=send_stage[keep][order],
        mb=tl.mb[prod][keep][order], what=what[keep][order], start=start[order],
        end=(start + dur[keep])[order])
