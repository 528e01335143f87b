"""Terminal tables of an exploration: the best deployment per mode, and the Pareto front."""

from __future__ import annotations

from rich.table import Table


def _num(v, fmt: str = ",.1f") -> str:
    return "-" if v is None or v != v else format(v, fmt)


def best_table(best: list[dict], title: str = "Best deployment per mode (meeting the SLOs)") -> Table:
    """One row per (model, topology, workload, mode): the best tokens/s per GPU meeting the SLOs,
    or why there is none (infeasible with the reason, or the SLOs missed even at the lowest load)."""
    t = Table(title=title)
    for col in ("workload", "topology", "mode", "status", "deployment", "users", "tok/s/GPU", "tok/s/user",
                "TTFT p90 ms", "TPOT p90 ms", "feasible / points"):
        t.add_column(col, justify="left" if col in ("workload", "topology", "mode", "status", "deployment")
                     else "right", overflow="fold")
    for r in best:
        ok = r.get("status") in ("ok", "slo_unmet")
        what = r.get("label_pools", "") if ok else r.get("reason", "")
        if r.get("status") == "slo_unmet":
            what = f"{what} ({r.get('reason', '')})"
        t.add_row(r["workload"], str(r["topology"]).rsplit("/", 1)[-1], r["mode"], r["status"], what,
                  str(r.get("concurrency", "-")) if ok else "-", _num(r.get("tokens_per_s_per_gpu")) if ok else "-",
                  _num(r.get("tokens_per_s_per_user")) if ok else "-", _num(r.get("ttft_p90_ms")) if ok else "-",
                  _num(r.get("tpot_p90_ms"), ".2f") if ok else "-", f"{r.get('feasible_points', 0)} / {r['points']}")
    return t


def front_table(group: tuple, front: list[dict]) -> Table:
    """A Pareto front (tokens/s per GPU against tokens/s per user) of one model/topology/workload."""
    model, topo, workload = group
    t = Table(title=f"Pareto front: {model}, {str(topo).rsplit('/', 1)[-1]}, {workload}")
    for col in ("tok/s/user", "tok/s/GPU", "mode", "deployment", "users", "GPUs"):
        t.add_column(col, justify="left" if col in ("mode", "deployment") else "right", overflow="fold")
    for r in front:
        t.add_row(_num(r["tokens_per_s_per_user"]), _num(r["tokens_per_s_per_gpu"]), r["mode"],
                  r.get("label_pools", ""), str(r.get("concurrency", "-")), str(r.get("gpus", "-")))
    return t
