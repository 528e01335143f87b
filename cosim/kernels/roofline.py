"""Roofline times, the fitted efficiency that turns them into durations, and what-if scaling.

* **Ideal roofline** of an op on a system: ``max(flops / peak(dtype), bytes / mem_bw)``, with the
  op's own :meth:`flops` and :meth:`bytes_moved` (``cosim.ops``). The math format is the op's dtype
  for GEMM and MoE and BF16 for attention (FMHA runs in BF16; the KV format only changes bytes).
* **Fitted roofline** (the fallback for shapes outside the measured grid): ``t_fixed + ideal /
  efficiency``. ``efficiency`` (fraction of the roofline reached by large kernels) and ``t_fixed``
  (launch and tail cost that small kernels cannot hide) are fitted per table and numeric format by
  least squares on ``log(duration)`` over the measured rows: 75 % of the rows (seeded random split)
  fit, the other 25 % report the error. ``fixed_latency=False`` gives the plain
  ``ideal / efficiency`` fit for comparison.
* **Memory ops** (norms, activations, embeddings): aiconfigurator's empirical rule
  ``max(flops / peak_bf16, bytes / (mem_bw * 0.8)) + 3 us`` with the factor and constant from the
  system YAML.
* **What-if systems** (:meth:`SystemSpec.scaled`): a duration ``T`` measured on the base GPU
  becomes ``T * max(t_c / s_f, t_m / s_b) / max(t_c, t_m)`` with ``t_c``, ``t_m`` the base GPU's
  compute and memory roofline times of the op and ``s_f``, ``s_b`` the FLOP/s and bandwidth
  scales: the time of a compute-bound op shrinks with the FLOP scale, that of a memory-bound op
  with the bandwidth scale, and an op that changes regime follows the new roofline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cosim.errors import ConfigError
from cosim.kernels.system import SystemSpec
from cosim.ops import DTYPE_BYTES, GemmOp, MemoryOp, MoeOp


def math_dtype(op: object) -> str:
    """Numeric format whose tensor-core peak bounds the op's math."""
    if isinstance(op, (GemmOp, MoeOp)):
        return op.dtype
    return "bfloat16"


def roofline_parts_s(op: object, system: SystemSpec) -> tuple[float, float]:
    """``(flops / peak, bytes / mem_bw)`` of ``op`` on ``system``, in seconds."""
    dtype = getattr(op, "dtype", None) or getattr(op, "kv_dtype", None)
    if dtype is not None and dtype not in DTYPE_BYTES:
        raise ConfigError("<api>", f"{type(op).__name__}.dtype",
                          f"no roofline for numeric format {dtype!r}; expected one of {sorted(DTYPE_BYTES)}")
    t_compute = op.flops() / system.peak_flops_per_s(math_dtype(op))
    t_memory = op.bytes_moved() / system.mem_bw_bytes_per_s
    return t_compute, t_memory


def ideal_roofline_s(op: object, system: SystemSpec) -> float:
    """``max(flops / peak, bytes / mem_bw)`` in seconds (no efficiency, no fixed cost)."""
    return max(roofline_parts_s(op, system))


def memory_op_s(op: MemoryOp, system: SystemSpec) -> float:
    """aiconfigurator's empirical time of a bandwidth-bound op on ``system``."""
    t_mem = op.bytes_moved() / (system.mem_bw_bytes_per_s * system.mem_bw_empirical_scaling)
    t_math = op.flops() / system.peak_flops_per_s("bfloat16")
    return max(t_mem, t_math) + system.mem_constant_latency_s


def what_if_factor(op: object, base: SystemSpec, flops_scale: float, mem_bw_scale: float) -> float:
    """Factor applied to a duration measured on ``base`` for a GPU with scaled FLOP/s and bandwidth."""
    t_c, t_m = roofline_parts_s(op, base)
    before = max(t_c, t_m)
    if before <= 0:
        return 1.0
    return max(t_c / flops_scale, t_m / mem_bw_scale) / before


@dataclass(frozen=True)
class EfficiencyFit:
    """Fitted ``duration = t_fixed + max(t_compute / eta_compute, t_memory / eta_memory)``.

    ``t_compute = flops / peak`` and ``t_memory = bytes / mem_bw`` are the op's ideal roofline
    times; the efficiencies are the fractions of peak FLOP/s and of peak bandwidth the kernels
    reach, and ``t_fixed`` the launch/tail cost small kernels cannot hide. With ``separate=False``
    both efficiencies are one number (the plain ``roofline / efficiency`` rule). Relative errors
    are ``|predicted / measured - 1|`` over the training rows and the held-out rows.
    """

    table: str
    dtype: str | None  # numeric format of the rows (None: all formats pooled)
    compute_efficiency: float
    memory_efficiency: float
    fixed_latency_s: float
    n_train: int
    n_test: int
    train_median_rel_err: float
    test_median_rel_err: float
    test_p90_rel_err: float
    test_max_rel_err: float

    def predict_s(self, t_compute_s: float, t_memory_s: float) -> float:
        """Duration predicted for an op with these ideal compute and memory times."""
        return self.fixed_latency_s + max(t_compute_s / self.compute_efficiency, t_memory_s / self.memory_efficiency)

    def describe(self) -> str:
        fmt = f"[{self.dtype}]" if self.dtype else ""
        return (f"eta_compute={self.compute_efficiency:.3g} eta_memory={self.memory_efficiency:.3g} "
                f"t_fixed={self.fixed_latency_s * 1e6:.3g}us fitted on {self.table}{fmt} "
                f"(n={self.n_train}, held-out median err {self.test_median_rel_err:.1%})")


#: Used when a family has no measured rows at all for this framework (never fitted).
DEFAULT_EFFICIENCY = 0.5


def default_fit(table: str, system: SystemSpec) -> EfficiencyFit:
    """Unfitted fallback: efficiency 0.5 plus the system's constant memory latency."""
    nan = float("nan")
    return EfficiencyFit(table, None, DEFAULT_EFFICIENCY, DEFAULT_EFFICIENCY, system.mem_constant_latency_s,
                         0, 0, nan, nan, nan, nan)


def fit_efficiency(
    t_compute_s: np.ndarray,
    t_memory_s: np.ndarray,
    measured_s: np.ndarray,
    *,
    table: str,
    dtype: str | None = None,
    fixed_latency: bool = True,
    separate: bool = True,
    test_fraction: float = 0.25,
    test_mask: np.ndarray | None = None,
    max_train: int = 5000,
    seed: int = 0,
) -> EfficiencyFit:
    """Fit the efficiencies (and ``t_fixed``) on a seeded random 75 % of the rows, report on the rest.

    Minimises the mean squared ``log(predicted) - log(measured)``: a coarse grid search for one
    efficiency and ``t_fixed``, then (``separate=True``) coordinate descent on the two
    efficiencies and ``t_fixed``. Deterministic; no scipy. ``fixed_latency=False`` forces
    ``t_fixed = 0``. ``test_mask`` (boolean, one per row) chooses the held-out rows explicitly
    instead of the random split. At most ``max_train`` training rows enter the search.
    """
    tc = np.asarray(t_compute_s, dtype=float)
    tm = np.asarray(t_memory_s, dtype=float)
    meas = np.asarray(measured_s, dtype=float)
    ok = (np.maximum(tc, tm) > 0) & (meas > 0) & np.isfinite(tc) & np.isfinite(tm) & np.isfinite(meas)
    tc, tm, meas = tc[ok], tm[ok], meas[ok]
    if len(meas) < 4:
        raise ValueError(f"{table}: need at least 4 rows to fit an efficiency, got {len(meas)}")
    rng = np.random.default_rng(seed)
    if test_mask is not None:
        held = np.asarray(test_mask, dtype=bool)[ok]
        test, train = np.flatnonzero(held), np.flatnonzero(~held)
        if len(test) == 0 or len(train) < 4:
            raise ValueError(f"{table}: test_mask leaves {len(train)} training and {len(test)} test rows")
    else:
        order = rng.permutation(len(meas))
        n_test = max(1, int(round(len(meas) * test_fraction)))
        test, train = order[:n_test], order[n_test:]
    search = train if len(train) <= max_train else rng.choice(train, max_train, replace=False)
    xc, xm, log_y = tc[search], tm[search], np.log(meas[search])

    if fixed_latency:
        eta, t0 = _grid_fit(np.maximum(xc, xm), log_y)
    else:
        eta, t0 = float(math.exp(np.mean(np.log(np.maximum(xc, xm)) - log_y))), 0.0
    eta_c = eta_m = eta
    if separate:
        eta_c, eta_m, t0 = _coordinate_fit(xc, xm, log_y, eta, t0, fixed_latency)

    def rel_err(idx: np.ndarray) -> np.ndarray:
        pred = t0 + np.maximum(tc[idx] / eta_c, tm[idx] / eta_m)
        return np.abs(pred / meas[idx] - 1.0)

    e_train, e_test = rel_err(train), rel_err(test)
    return EfficiencyFit(
        table=table, dtype=dtype, compute_efficiency=eta_c, memory_efficiency=eta_m, fixed_latency_s=t0,
        n_train=len(train), n_test=len(test),
        train_median_rel_err=float(np.median(e_train)), test_median_rel_err=float(np.median(e_test)),
        test_p90_rel_err=float(np.quantile(e_test, 0.9)), test_max_rel_err=float(np.max(e_test)),
    )


def _grid_fit(x: np.ndarray, log_y: np.ndarray) -> tuple[float, float]:
    """Best (efficiency, fixed latency) for ``log(t0 + x / eta) ~ log_y``."""

    def loss(log_eta: np.ndarray, t0s: np.ndarray) -> np.ndarray:
        out = np.empty((len(t0s), len(log_eta)))
        inv = np.exp(-log_eta)[:, None]
        for i, t0 in enumerate(t0s):
            r = np.log(t0 + x[None, :] * inv) - log_y[None, :]
            out[i] = np.mean(r * r, axis=1)
        return out

    log_eta = np.linspace(math.log(1e-3), math.log(2.0), 48)
    t0s = np.concatenate([[0.0], np.geomspace(1e-7, 1e-3, 48)])
    grid = loss(log_eta, t0s)
    i, j = np.unravel_index(np.argmin(grid), grid.shape)
    best_eta, best_t0 = log_eta[j], t0s[i]
    step_eta = log_eta[1] - log_eta[0]
    step_t0 = math.log(t0s[2] / t0s[1])
    for _ in range(3):
        etas = np.linspace(best_eta - step_eta, best_eta + step_eta, 15)
        if best_t0 > 0:
            t0_cand = np.concatenate([[0.0], best_t0 * np.exp(np.linspace(-step_t0, step_t0, 15))])
        else:
            t0_cand = np.concatenate([[0.0], np.geomspace(1e-8, t0s[1], 8)])
        grid = loss(etas, t0_cand)
        i, j = np.unravel_index(np.argmin(grid), grid.shape)
        best_eta, best_t0 = etas[j], t0_cand[i]
        step_eta /= 7.0
        step_t0 /= 7.0
    return float(math.exp(best_eta)), float(best_t0)


def _coordinate_fit(xc: np.ndarray, xm: np.ndarray, log_y: np.ndarray, eta: float, t0: float,
                    fixed_latency: bool) -> tuple[float, float, float]:
    """Refine (eta_compute, eta_memory, t_fixed) by cyclic 1-D grid searches in log space."""
    floor = 1e-9
    p = np.array([math.log(eta), math.log(eta), math.log(max(t0, floor))])

    def loss(params: np.ndarray) -> np.ndarray:  # params: (k, 3) -> (k,)
        ec, em, t = np.exp(params[:, 0:1]), np.exp(params[:, 1:2]), np.exp(params[:, 2:3])
        t = np.where(params[:, 2:3] <= math.log(floor) + 1e-9, 0.0, t)
        r = np.log(t + np.maximum(xc[None, :] / ec, xm[None, :] / em)) - log_y[None, :]
        return np.mean(r * r, axis=1)

    coords = (0, 1, 2) if fixed_latency else (0, 1)
    width = 2.5
    for _ in range(8):
        for c in coords:
            cand = np.repeat(p[None, :], 41, axis=0)
            cand[:, c] = p[c] + np.linspace(-width, width, 41)
            if c == 2:
                cand[:, 2] = np.maximum(cand[:, 2], math.log(floor))
            else:
                cand[:, c] = np.minimum(cand[:, c], math.log(4.0))  # efficiencies stay <= 4
            p = cand[int(np.argmin(loss(cand)))]
        width /= 2.5
    t_fixed = 0.0 if p[2] <= math.log(floor) + 1e-9 else float(math.exp(p[2]))
    return float(math.exp(p[0])), float(math.exp(p[1])), t_fixed
