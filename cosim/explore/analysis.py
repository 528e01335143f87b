"""What a table of evaluated points says: Pareto fronts and the best deployment per mode.

Both are pure functions of result rows (:mod:`cosim.explore.evaluate`), grouped by model,
topology and workload: a front compares only deployments that served the same requests.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable

Row = dict[str, Any]
GROUP = ("model", "topology", "workload")


def _groups(rows: Iterable[Row]) -> dict[tuple, list[Row]]:
    out: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        out[tuple(r[k] for k in GROUP)].append(r)
    return dict(sorted(out.items()))


def pareto_front(rows: Iterable[Row], x: str = "tokens_per_s_per_user", y: str = "tokens_per_s_per_gpu") -> list[Row]:
    """The rows meeting the SLOs (status ``ok``) that no other such row beats on both ``x`` and
    ``y`` (larger is better; ties keep both), sorted by ``x``; all groups together: call it per
    group (:func:`pareto_fronts`)."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get(x) is not None and r.get(y) is not None]
    front = [r for r in ok if not any((o[x] >= r[x] and o[y] >= r[y]) and (o[x] > r[x] or o[y] > r[y]) for o in ok)]
    return sorted(front, key=lambda r: (r[x], -r[y], r["key"]))


def pareto_fronts(rows: Iterable[Row], **kw) -> dict[tuple, list[Row]]:
    """:func:`pareto_front` per (model, topology, workload)."""
    return {g: pareto_front(rs, **kw) for g, rs in _groups(rows).items()}


def best_per_mode(rows: Iterable[Row], metric: str = "tokens_per_s_per_gpu") -> list[Row]:
    """Per (model, topology, workload, mode): the row with the largest ``metric`` among those
    meeting the SLOs, or, when none does, a row saying why (``status`` ``slo_unmet`` with the
    best of those, or ``infeasible`` / ``invalid`` with the most common reason and the count)."""
    out = []
    for g, rs in _groups(rows).items():
        by_mode: dict[str, list[Row]] = defaultdict(list)
        for r in rs:
            by_mode[r["mode"]].append(r)
        for mode in sorted(by_mode):
            ms = by_mode[mode]
            ok = [r for r in ms if r.get("status") == "ok"]
            if ok:
                best = max(ok, key=lambda r: (r[metric], r["key"]))
                out.append({**best, "points": len(ms), "feasible_points": sum(r["status"] in ("ok", "slo_unmet")
                                                                              for r in ms)})
                continue
            unmet = [r for r in ms if r.get("status") == "slo_unmet"]
            if unmet:
                best = max(unmet, key=lambda r: (r.get(metric) or 0.0, r["key"]))
                out.append({**best, "points": len(ms), "feasible_points": len(unmet)})
                continue
            reasons = Counter(r.get("reason", "") for r in ms)
            reason, count = reasons.most_common(1)[0]
            out.append({**dict(zip(GROUP, g)), "mode": mode, "status": ms[0]["status"], "points": len(ms),
                        "feasible_points": 0, "reason": f"{reason} ({count} of {len(ms)} points)"})
    return out
