#!/usr/bin/env python3
"""The idle-cost table of `scripts/bench.sh idle`, from its JSON reports.

usage: idle_table.py OUT_DIR VARIANT... (previous, current)
Heartbeats in the hold are connections x hold seconds / 5 (one every 5 s): sent by the
clients, or (variant `transport`) made by the edge for open sockets whose clients send none.
"""
import json
import sys
from pathlib import Path

out, variants = Path(sys.argv[1]), sys.argv[2:]
BEAT_EVERY_S = 5


def proc(report, name):
    return next((p for p in report["processes"] if p["name"] == name), None)


rows = {}
print()
print("=== idle cost: CPU per heartbeat (µs) and RSS per connection (KB) ===")
print("| run | edge µs/beat | aggregator µs/beat | NATS µs/beat | edge+aggregator µs/beat "
      "| µs per connection-second (edge+aggregator) | edge KB/connection |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for users in (10000, 19000):
    for variant in variants:
        path = out / f"idle-{variant}-{users}.json"
        if not path.exists():
            continue
        report = json.loads(path.read_text())
        hold = report["phases_s"].get("hold") if isinstance(report["phases_s"], dict) else None
        hold = hold or 60
        conns = users
        beats = conns * hold / BEAT_EVERY_S
        us = {}
        for name in ("edge-1", "aggregator", "nats"):
            p = proc(report, name)
            us[name] = p["cpu_seconds_hold"] * 1e6 / beats if p else float("nan")
        edge = proc(report, "edge-1")
        both = us["edge-1"] + us["aggregator"]
        per_conn_s = both * beats / (conns * hold)
        rows[(users, variant)] = both
        print(f"| {variant}, {users} | {us['edge-1']:.2f} | {us['aggregator']:.2f} | "
              f"{us['nats']:.2f} | **{both:.2f}** | {per_conn_s:.2f} | "
              f"{edge['rss_kb_per_connection'] if edge else float('nan')} |")
for users in (10000, 19000):
    for variant in ("current", "transport"):
        if (users, "previous") in rows and (users, variant) in rows:
            ratio = rows[(users, variant)] / rows[(users, "previous")]
            print(f"{users}: {variant} / previous, edge + aggregator CPU = {ratio:.2f}")
