"""Fuzz cosim's inputs with a larger corpus than the test suite and count the outcomes (issue 12).

The corpus is ``tests/fuzz_corpus.py`` (mutated topology presets and generator parameters, YAML
text and encodings, mutated model config.json files, the flow and collective API including
valid-but-huge collectives, unit strings), drawn with seeded ``random`` so runs are repeatable.
Cases run in a worker subprocess with an address-space limit; a case that takes longer than
``--timeout`` kills the worker (a hang), one that hits the memory limit raises MemoryError or
kills the worker (memory). Outcomes:

- ``valid``: accepted; ``clean_error``: a :class:`cosim.errors.CosimError`;
- ``traceback``: any other exception; ``hang``: over the time limit; ``memory``: over the memory
  limit; ``crash``: the worker died otherwise (a signal).

Prints the counts per target and writes them with the failing cases to
``benchmarks/results/fuzz.json``.

    python benchmarks/fuzz.py                  # 3,000 cases (500 per target)
    python benchmarks/fuzz.py --per-target 50  # quick
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

OUTCOMES = ("valid", "clean_error", "traceback", "hang", "memory", "crash")


def _worker(conn, memory_bytes: int) -> None:
    import fuzz_corpus as F  # noqa: PLC0415 - imported in the child
    from cosim.errors import CosimError

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    base = _vm_bytes()
    resource.setrlimit(resource.RLIMIT_AS, (base + memory_bytes, hard))
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            return
        target, seed = msg
        try:
            if target == "flows":
                F.flow_case(F.RandomChooser(seed), big=True)
            else:
                F.TARGETS[target](F.RandomChooser(seed))
            conn.send(("valid", ""))
        except CosimError:
            conn.send(("clean_error", ""))
        except MemoryError:
            conn.send(("memory", "MemoryError"))
        except BaseException as exc:  # noqa: BLE001 - counting exactly these
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            conn.send(("traceback", f"{type(exc).__name__}: {str(exc)[:200]} at {tb.filename}:{tb.lineno}"))


def _vm_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * resource.getpagesize()


class Worker:
    def __init__(self, memory_bytes: int) -> None:
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, memory_bytes), daemon=True)
        self.proc.start()
        if not self.conn.poll(120):
            raise RuntimeError("fuzz worker did not start")
        self.conn.recv()

    def run(self, target: str, seed: int, timeout_s: float) -> tuple[str, str]:
        self.conn.send((target, seed))
        if self.conn.poll(timeout_s):
            try:
                return self.conn.recv()
            except EOFError:
                pass
        else:
            self.kill()
            return "hang", f"over {timeout_s:g} s"
        self.proc.join(5)
        code = self.proc.exitcode
        return ("memory", f"worker died (exit {code})") if code in (-9,) else ("crash", f"worker died (exit {code})")

    def alive(self) -> bool:
        return self.proc.is_alive()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-target", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per case (a hang beyond)")
    parser.add_argument("--memory-gib", type=float, default=2.0, help="address space a case may add")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fuzz.json"))
    args = parser.parse_args()

    import fuzz_corpus as F

    memory = int(args.memory_gib * 2**30)
    counts: dict[str, Counter] = {t: Counter() for t in F.TARGETS}
    failures: list[dict] = []
    worker = Worker(memory)
    t0 = time.perf_counter()
    for target in F.TARGETS:
        for i in range(args.per_target):
            seed = args.seed * 1_000_003 + i
            if not worker.alive():
                worker = Worker(memory)
            outcome, detail = worker.run(target, seed, args.timeout)
            counts[target][outcome] += 1
            if outcome not in ("valid", "clean_error"):
                failures.append({"target": target, "seed": seed, "outcome": outcome, "detail": detail})
                print(f"  {target} seed {seed}: {outcome} {detail}", flush=True)
        print(f"{target:10s} " + "  ".join(f"{o} {counts[target][o]}" for o in OUTCOMES), flush=True)
    worker.conn.send(None)
    worker.kill()
    total = Counter()
    for c in counts.values():
        total.update(c)
    wall = time.perf_counter() - t0
    print(f"{'total':10s} " + "  ".join(f"{o} {total[o]}" for o in OUTCOMES) + f"  ({sum(total.values())} cases, "
          f"{wall:.0f} s)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "cases": sum(total.values()), "per_target": args.per_target, "timeout_s": args.timeout,
        "memory_limit_bytes": memory, "seed": args.seed, "wall_s": round(wall, 1),
        "total": {o: total[o] for o in OUTCOMES},
        "by_target": {t: {o: c[o] for o in OUTCOMES} for t, c in counts.items()},
        "failures": failures,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
