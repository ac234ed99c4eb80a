"""compare_runs.py COMMITTED NEW: every run in the results.json NEW has the same scores, sizes,
epochs and decisions as the run of the same id in the results.json COMMITTED (its time and peak
memory ignored); exits 1 when one differs."""
import json
import sys

IGNORED = {"seconds", "peak_memory_mb"}


def main(committed: str, new: str) -> int:
    old = {r["run_id"]: r for r in json.load(open(committed))["runs"]}
    runs = {r["run_id"]: r for r in json.load(open(new))["runs"]}
    differ = 0
    for run_id, run in sorted(runs.items()):
        was = old[run_id]
        changed = {k: (was.get(k), run.get(k)) for k in was.keys() | run.keys()
                   if k not in IGNORED and was.get(k) != run.get(k)}
        if changed:
            differ += 1
            print("DIFFERS", run_id, str(changed)[:400])
    decisions = sum(len(r.get("decisions") or []) for r in runs.values())
    print(f"{len(runs)} runs compared, {differ} differ ({decisions} decisions)")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
