#!/usr/bin/env python3
"""Parse an exposition with prometheus_client's own parsers; fail on any error.

Usage: check_exposition.py prometheus|openmetrics FILE

Prints one JSON line: {"families": N, "samples": N, "names": [...]} on success.
Exits 1 with the parser's message on failure, and also when a family name appears twice
(the text parser tolerates that; Prometheus does not).
"""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text


def main() -> int:
    fmt, path = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    parse = parse_om if fmt == "openmetrics" else parse_text
    try:
        families = list(parse(text))
    except Exception as e:  # the parsers raise ValueError and friends
        print(f"{fmt} parser rejected {path}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    names = [f.name for f in families]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        print(f"duplicate families in {path}: {duplicates}", file=sys.stderr)
        return 1
    for fam in families:
        if fam.type == "histogram":
            check_histogram(fam)
    samples = sum(len(f.samples) for f in families)
    print(json.dumps({"families": len(families), "samples": samples, "names": sorted(names)}))
    return 0


def check_histogram(fam) -> None:
    """_count equals the +Inf bucket and buckets are cumulative, per series."""
    series = {}
    for s in fam.samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        entry = series.setdefault(key, {"buckets": [], "count": None})
        if s.name.endswith("_bucket"):
            entry["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            entry["count"] = s.value
    for key, entry in series.items():
        buckets = entry["buckets"]
        values = [v for _, v in buckets]
        if values != sorted(values):
            raise SystemExit(f"{fam.name}{dict(key)}: buckets not cumulative: {buckets}")
        if not buckets or buckets[-1][0] != float("inf"):
            raise SystemExit(f"{fam.name}{dict(key)}: no +Inf bucket")
        if entry["count"] != buckets[-1][1]:
            raise SystemExit(f"{fam.name}{dict(key)}: _count {entry['count']} != +Inf {buckets[-1][1]}")


if __name__ == "__main__":
    sys.exit(main())
