"""diff_histories.py BEFORE AFTER: every history.csv under BEFORE has the same columns and rows
under AFTER (the ``seconds`` column ignored); prints the first differing row and exits 1 when
one differs."""
import csv
import sys
from pathlib import Path


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        out = list(csv.DictReader(f))
    for row in out:
        row.pop("seconds", None)
    return out


def main(before: Path, after: Path) -> int:
    files = sorted(before.rglob("history.csv"))
    differ = 0
    for old in files:
        new = after / old.relative_to(before)
        if not new.exists():
            print("missing", new)
            differ += 1
            continue
        a, b = rows(old), rows(new)
        if a == b and (not a or list(a[0]) == list(b[0])):
            continue
        differ += 1
        print("DIFFERS", old.relative_to(before), f"({len(a)} vs {len(b)} rows)")
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                print("  row", i, {k: (x.get(k), y.get(k)) for k in x.keys() | y.keys() if x.get(k) != y.get(k)})
                break
    print(f"{len(files)} history.csv compared, {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
