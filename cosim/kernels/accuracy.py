"""Accuracy checks of the lookup rules on held-out measured rows.

* :func:`holdout_interpolation` removes every ``every``-th measured value of one axis (never the
  smallest or largest, so the removed points stay inside the grid), rebuilds the table without
  them, and interpolates at the removed points.
* :func:`efficiency_fit_report` fits the roofline efficiency of a table per numeric format on 75 %
  of its rows and reports the error on the other 25 %.
* :func:`extrapolation_fit_report` fits on all but the largest sizes and reports on those.

Both return plain dicts (for tests, the benchmark and ``docs/kernel-tables.md``).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from cosim.kernels.interpolate import GridTable
from cosim.kernels.mapping import op_from_row
from cosim.kernels.roofline import fit_efficiency, roofline_parts_s
from cosim.kernels.specs import TABLES
from cosim.kernels.tables import MAX_FIT_ROWS, KernelTables
from cosim.ops import DTYPE_BYTES


def holdout_interpolation(grid: GridTable, axis: str, every: int = 4, axis_log: bool | None = None) -> dict:
    """Interpolation error at every ``every``-th value of ``axis``, held out of ``grid``.

    ``axis_log`` overrides the blend (log-log or linear) along ``axis`` (to compare choices).
    Returns counts and the median / p90 / max of ``|interpolated / measured - 1|``.
    """
    ai = grid.axis_cols.index(axis)
    values = sorted({axes[ai] for _, axes, _ in grid.rows()})
    held = set(values[1:-1][every - 1::every]) if every > 1 else set(values[1:-1])
    keep_rows, test_rows = [], []
    for row in grid.rows():
        (test_rows if row[1][ai] in held else keep_rows).append(row)
    log_flags = list(grid.axis_log)
    if axis_log is not None:
        log_flags[ai] = axis_log
    train = GridTable.from_rows(
        (r[0] for r in keep_rows), (r[1] for r in keep_rows), (r[2] for r in keep_rows),
        slice_cols=grid.slice_cols, axis_cols=grid.axis_cols, axis_log=log_flags)
    errs = []
    for sk, axes, measured in test_rows:
        hit = train.lookup(sk, axes)
        if hit is not None:
            errs.append(abs(hit.seconds / measured - 1.0))
    e = np.array(errs) if errs else np.array([np.nan])
    return {
        "axis": axis, "held_out_values": sorted(held), "held_out_rows": len(test_rows), "evaluated": len(errs),
        "median_rel_err": float(np.median(e)), "p90_rel_err": float(np.quantile(e, 0.9)),
        "max_rel_err": float(np.max(e)),
    }


#: Axis held out per table in the default report (the densest or most-used axis).
HOLDOUT_AXES = (
    ("gemm", "m"), ("gemm", "n"), ("context_attention", "isl"), ("context_attention", "batch_size"),
    ("generation_attention", "step"), ("generation_attention", "batch_size"), ("context_mla", "isl"),
    ("generation_mla", "step"), ("moe", "num_tokens"),
)


def interpolation_report(tables: KernelTables, every: int = 4) -> dict[str, dict]:
    """:func:`holdout_interpolation` on the primary table of each (table, axis) in
    :data:`HOLDOUT_AXES`; keys are ``"<table>.<axis>"``."""
    out = {}
    for name, axis in HOLDOUT_AXES:
        grid = tables.grid(name)
        if grid is not None:
            out[f"{name}.{axis}"] = holdout_interpolation(grid, axis, every)
    return out


def efficiency_fit_report(tables: KernelTables, fixed_latency: bool = True, separate: bool = True) -> list[dict]:
    """Efficiency fit per table and numeric format (plus the pooled fit), with held-out errors."""
    out = []
    for name in ("gemm", "context_attention", "generation_attention", "context_mla", "generation_mla", "moe"):
        grid = tables.grid(name)
        if grid is None:
            continue
        spec = TABLES[name]
        dcol = spec.slice_cols.index(spec.dtype_col)
        dtypes = sorted({sk[dcol] for sk in grid.slice_keys()})
        for dtype in [None, *dtypes]:
            fit = tables.efficiency(name, dtype, fixed_latency, separate)
            if fit.dtype == dtype and fit.n_train:
                out.append(asdict(fit))
    return out


#: Axis whose largest measured values are held out in :func:`extrapolation_fit_report`.
EXTRAPOLATION_AXES = {"gemm": "m", "context_attention": "isl", "generation_attention": "step", "context_mla": "isl",
                      "generation_mla": "step", "moe": "num_tokens"}


def extrapolation_fit_report(tables: KernelTables, top_values: int = 2) -> list[dict]:
    """How well the roofline fallback extrapolates beyond the grid edge (its actual use).

    Per table: hold out the rows at the ``top_values`` largest values of the table's main axis,
    fit the efficiencies on the other rows, and predict the held-out rows two ways: the plain
    fitted roofline, and the roofline anchored on the nearest remaining grid point of the same
    slice (``T_anchor * R(op) / R(anchor)``, what :class:`KernelTables` does). Errors are
    ``|predicted / measured - 1|``.
    """
    out = []
    for name, axis in EXTRAPOLATION_AXES.items():
        grid = tables.grid(name)
        if grid is None:
            continue
        spec = TABLES[name]
        dcol = spec.slice_cols.index(spec.dtype_col)
        ai = grid.axis_cols.index(axis)
        rows = [r for r in grid.rows() if r[0][dcol] in DTYPE_BYTES]
        edge = set(sorted({r[1][ai] for r in rows})[-top_values:])
        train_rows = [r for r in rows if r[1][ai] not in edge]
        test_rows = [r for r in rows if r[1][ai] in edge]
        rng = np.random.default_rng(2)
        if len(train_rows) > MAX_FIT_ROWS:
            train_rows = [train_rows[i] for i in sorted(rng.choice(len(train_rows), MAX_FIT_ROWS, replace=False))]
        if len(test_rows) > 2000:
            test_rows = [test_rows[i] for i in sorted(rng.choice(len(test_rows), 2000, replace=False))]
        both = train_rows + test_rows
        parts = np.array([roofline_parts_s(op_from_row(name, sk, ax), tables.data_system) for sk, ax, _ in both])
        meas = np.array([v for *_, v in both])
        mask = np.arange(len(both)) >= len(train_rows)
        fit = fit_efficiency(parts[:, 0], parts[:, 1], meas, table=name, test_mask=mask)
        train_grid = GridTable.from_rows((r[0] for r in train_rows), (r[1] for r in train_rows),
                                         (r[2] for r in train_rows), slice_cols=grid.slice_cols,
                                         axis_cols=grid.axis_cols, axis_log=grid.axis_log)
        errs = []
        for (sk, ax, measured), (tc, tm) in zip(test_rows, parts[len(train_rows):]):
            found = train_grid.anchor(sk, ax)
            if found is None:
                continue
            a_axes, t_anchor = found
            ref = fit.predict_s(*roofline_parts_s(op_from_row(name, sk, a_axes), tables.data_system))
            errs.append(abs(t_anchor * fit.predict_s(tc, tm) / ref / measured - 1.0))
        e = np.array(errs) if errs else np.array([np.nan])
        out.append({
            "table": name, "held_out": f"{axis} in {sorted(edge)}", "n_train": fit.n_train, "n_test": fit.n_test,
            "plain_median_rel_err": fit.test_median_rel_err, "plain_p90_rel_err": fit.test_p90_rel_err,
            "anchored_median_rel_err": float(np.median(e)), "anchored_p90_rel_err": float(np.quantile(e, 0.9)),
            "anchored_max_rel_err": float(np.max(e)),
        })
    return out
