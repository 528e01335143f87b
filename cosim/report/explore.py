"""Terminal tables of an exploration: the best deployment per mode, and the Pareto front."""

from __future__ import annotations

from rich.table import Table


def _num(v, fmt: str = ",.1f") -> str:
    return "-" if v is None or v != v else format(v, fmt)


def best_table(best: list[dict], title: str = "Best deployment per mode (meeting the SLOs)") -> Table:
    """One row per (model, topology, workload, mode): the best tokens/s per GPU meeting the SLOs,
    or why there is none (infeasible with the reason, or the SLOs missed even at the lowest load).
    Model, topology or workload columns shared by every row move to the title."""
    shared = {k: {str(r[k]) for r in best} for k in ("model", "topology", "workload")}
    same = [k for k, v in shared.items() if len(v) == 1]
    if same and best:
        title += ": " + ", ".join(_short(best[0][k]) if k == "topology" else str(best[0][k]) for k in same)
    t = Table(title=title)
    varying = [k for k in ("model", "topology", "workload") if k not in same]
    for col in (*varying, "mode", "status", "deployment", "users", "tok/s/GPU", "tok/s/user", "TTFT p90 ms",
                "TPOT p90 ms", "feasible / points"):
        left = col in ("model", "topology", "workload", "mode", "status", "deployment")
        t.add_column(col, justify="left" if left else "right", overflow="fold",
                     min_width=28 if col == "deployment" else None)
    for r in best:
        ok = r.get("status") in ("ok", "slo_unmet")
        what = r.get("label_pools", "") if ok else r.get("reason", "")
        if r.get("status") == "slo_unmet":
            what = f"{what} ({r.get('reason', '')})"
        t.add_row(*(_short(r[k]) if k == "topology" else str(r[k]) for k in varying), r["mode"], r["status"], what,
                  str(r.get("concurrency", "-")) if ok else "-", _num(r.get("tokens_per_s_per_gpu")) if ok else "-",
                  _num(r.get("tokens_per_s_per_user")) if ok else "-", _num(r.get("ttft_p90_ms")) if ok else "-",
                  _num(r.get("tpot_p90_ms"), ".2f") if ok else "-", f"{r.get('feasible_points', 0)} / {r['points']}")
    return t


def _short(v) -> str:
    """A topology file path as its file name; other values as text."""
    return str(v).rsplit("/", 1)[-1]


def front_table(group: tuple, front: list[dict]) -> Table:
    """A Pareto front (tokens/s per GPU against tokens/s per user) of one model/topology/workload."""
    model, topo, workload = group
    t = Table(title=f"Pareto front: {model}, {_short(topo)}, {workload}")
    for col in ("tok/s/user", "tok/s/GPU", "mode", "deployment", "users", "GPUs"):
        t.add_column(col, justify="left" if col in ("mode", "deployment") else "right", overflow="fold")
    for r in front:
        t.add_row(_num(r["tokens_per_s_per_user"]), _num(r["tokens_per_s_per_gpu"]), r["mode"],
                  r.get("label_pools", ""), str(r.get("concurrency", "-")), str(r.get("gpus", "-")))
    return t


def recheck_table(finalists: list[dict]) -> Table:
    """The finalists' representative steps on the flow backend (what the sweep used) and on the
    packet backend (ns-3), per pool."""
    t = Table(title="Finalists: representative steps, flow vs packet backend")
    for col in ("mode", "deployment", "pool", "step (decode / context / chunks)", "flow ms", "packet ms", "diff"):
        t.add_column(col, justify="left" if col in ("mode", "deployment", "pool", "step (decode / context / chunks)")
                     else "right", overflow="fold")
    for f in finalists:
        for name, p in f["pools"].items():
            chunks = "+".join(str(n) for _, n in p["chunks"]) or "-"
            diff = p.get("packet_vs_flow")
            t.add_row(f["mode"], f["pools_label"], name, f"{p['decode_tokens']} / {p['context']} / {chunks}",
                      f"{p['flow_step_s'] * 1e3:.2f}",
                      "-" if p.get("packet_step_s") is None else f"{p['packet_step_s'] * 1e3:.2f}",
                      "-" if diff is None else f"{diff:+.1%}")
    return t
