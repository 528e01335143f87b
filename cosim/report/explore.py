"""Tables of an exploration: the best deployment per mode, the Pareto front and the finalists'
packet-backend re-check, for the terminal (``*_table``) and the HTML report (``*_data``)."""

from __future__ import annotations

from collections import Counter

from rich.table import Table

from cosim.report.tables import TableData, table_data


def _num(v, fmt: str = ",.1f") -> str:
    return "-" if v is None or v != v else format(v, fmt)


def best_data(best: list[dict], title: str = "Best deployment per mode (meeting the SLOs)") -> TableData:
    """One row per (model, topology, workload, mode): the best tokens/s per GPU meeting the SLOs,
    or why there is none (infeasible with the reason, or the SLOs missed even at the lowest load).
    Model, topology or workload columns shared by every row move to the title."""
    title, varying = _shared(best, title)
    columns = (*varying, "mode", "status", "deployment", "users", "tok/s/GPU", "tok/s/user", "TTFT p90 ms",
               "TPOT p90 ms", "feasible / points")
    rows = []
    for r in best:
        ok = r.get("status") in ("ok", "slo_unmet")
        what = r.get("label_pools", "") if ok else r.get("reason", "")
        if r.get("status") == "slo_unmet":
            what = f"{what} ({r.get('reason', '')})"
        rows.append((*(_short(r[k]) if k == "topology" else str(r[k]) for k in varying), r["mode"], r["status"], what,
                     str(r.get("concurrency", "-")) if ok else "-", _num(r.get("tokens_per_s_per_gpu")) if ok else "-",
                     _num(r.get("tokens_per_s_per_user")) if ok else "-", _num(r.get("ttft_p90_ms")) if ok else "-",
                     _num(r.get("tpot_p90_ms"), ".2f") if ok else "-", f"{r.get('feasible_points', 0)} / {r['points']}"))
    return table_data(title, columns, rows, left=("model", "topology", "workload", "mode", "status", "deployment"))


def _shared(rows: list[dict], title: str) -> tuple[str, list[str]]:
    """The title with the model, topology or workload that every row shares, and the columns
    of those that vary."""
    shared = {k: {str(r[k]) for r in rows} for k in ("model", "topology", "workload")}
    same = [k for k, v in shared.items() if len(v) == 1]
    if same and rows:
        title += ": " + ", ".join(_short(rows[0][k]) if k == "topology" else str(rows[0][k]) for k in same)
    return title, [k for k in ("model", "topology", "workload") if k not in same]


def reasons_data(rows: list[dict]) -> TableData:
    """How many points of each mode missed the SLOs or were not feasible, per reason."""
    bad = [r for r in rows if r.get("status") != "ok" and r.get("reason")]
    title, varying = _shared(bad, "Points not meeting the SLOs or not feasible, by reason")
    counts = Counter((*(_short(r[k]) if k == "topology" else str(r[k]) for k in varying), r["mode"], r["status"],
                      r["reason"]) for r in bad)
    return table_data(title, (*varying, "mode", "status", "reason", "points"),
                      [(*key, str(n)) for key, n in sorted(counts.items())],
                      left=(*varying, "mode", "status", "reason"))


def best_table(best: list[dict], title: str = "Best deployment per mode (meeting the SLOs)") -> Table:
    """:func:`best_data` for the terminal."""
    return best_data(best, title).rich(min_width={"deployment": 28})


def _short(v) -> str:
    """A topology file path as its file name; other values as text."""
    return str(v).rsplit("/", 1)[-1]


def group_title(group: tuple) -> str:
    """``model, topology, workload`` of a group of points."""
    model, topo, workload = group
    return f"{model}, {_short(topo)}, {workload}"


def front_data(group: tuple, front: list[dict]) -> TableData:
    """A Pareto front (tokens/s per GPU against tokens/s per user) of one model/topology/workload."""
    rows = [(_num(r["tokens_per_s_per_user"]), _num(r["tokens_per_s_per_gpu"]), r["mode"], r.get("label_pools", ""),
             str(r.get("concurrency", "-")), str(r.get("gpus", "-"))) for r in front]
    return table_data(f"Pareto front: {group_title(group)}",
                      ("tok/s/user", "tok/s/GPU", "mode", "deployment", "users", "GPUs"), rows,
                      left=("mode", "deployment"))


def front_table(group: tuple, front: list[dict]) -> Table:
    """:func:`front_data` for the terminal."""
    return front_data(group, front).rich()


def recheck_data(finalists: list[dict]) -> TableData:
    """The finalists' representative steps on the flow backend (what the sweep used) and on the
    packet backend (ns-3), per pool."""
    rows = []
    for f in finalists:
        for name, p in f["pools"].items():
            chunks = "+".join(str(n) for _, n in p["chunks"]) or "-"
            diff = p.get("packet_vs_flow")
            rows.append((f["mode"], f["pools_label"], name, f"{p['decode_tokens']} / {p['context']} / {chunks}",
                         f"{p['flow_step_s'] * 1e3:.2f}",
                         "-" if p.get("packet_step_s") is None else f"{p['packet_step_s'] * 1e3:.2f}",
                         "-" if diff is None else f"{diff:+.1%}"))
    return table_data("Finalists: representative steps, flow vs packet backend",
                      ("mode", "deployment", "pool", "step (decode / context / chunks)", "flow ms", "packet ms", "diff"),
                      rows, left=("mode", "deployment", "pool", "step (decode / context / chunks)"))


def recheck_table(finalists: list[dict]) -> Table:
    """:func:`recheck_data` for the terminal."""
    return recheck_data(finalists).rich()
