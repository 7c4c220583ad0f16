#!/usr/bin/env python3
"""Turns the raw lines of bench/compare.sh into one Markdown table.

Each raw line is `SERVER SCENARIO target=… PARAMS…: KEY=VALUE…`. Lines of
the same server, scenario and parameters are the runs of one measurement;
the table shows the median of each figure, the ratio Comet/Nchan, and the
goal of the performance work where there is one.

Usage: summarize.py RAW RUNS MACHINE SERVERS COMMIT
"""

import statistics
import sys
from collections import defaultdict

# (scenario, figure, parameter words...) -> (goal on the ratio Comet/Nchan,
# text). The fan-out goals are those of the third performance round: SSE
# saturated at ≥ 5x Nchan's throughput with a p99 no higher than its, and a
# fixed-rate p99 at most 0.75 of its.
GOALS = {
    ("idle", "bytes_per_connection"): (lambda r: r <= 0.5, "≤ 0.5"),
    ("fanout", "deliveries_per_s", "rate=max", "transport=sse"): (lambda r: r >= 5.0, "≥ 5"),
    ("fanout", "p99_ms", "rate=max", "transport=sse"): (lambda r: r <= 1.0, "≤ 1"),
    ("fanout", "p99_ms", "rate=4"): (lambda r: r <= 0.75, "≤ 0.75"),
    ("fanout", "p99_ms", "rate=40"): (lambda r: r <= 0.75, "≤ 0.75"),
    ("longpoll", "p99_ms"): (lambda r: r <= 1.0, "≤ 1"),
    ("publish", "publishes_per_s"): (lambda r: r >= 1.0, "≥ 1"),
}

# The durable store's publishes per second, by publishers (absolute goals).
DURABLE_GOALS = {"publishers=8": 35_000, "publishers=64": 80_000}

FIGURES = {
    "idle": ["bytes_per_connection", "open_s"],
    "fanout": ["deliveries_per_s", "p50_ms", "p99_ms", "p999_ms", "max_ms", "missing", "duplicated", "out_of_order"],
    "channels": ["deliveries_per_s", "p50_ms", "p99_ms", "missing", "duplicated", "out_of_order"],
    "longpoll": ["p50_ms", "p99_ms", "p999_ms", "deliveries", "missing", "duplicated", "out_of_order"],
    "publish": ["publishes_per_s", "p50_ms", "p99_ms"],
}


def parse(line):
    server, rest = line.split(" ", 1)
    head, _, figures = rest.partition(": ")
    words = head.split()
    scenario = words[0]
    params = " ".join(w for w in words[1:] if not w.startswith("target="))
    values = {}
    for word in figures.split():
        key, _, value = word.partition("=")
        try:
            values[key] = float(value)
        except ValueError:
            pass
    return server, scenario, params, values


def goal_for(scenario, params, figure):
    for key, goal in GOALS.items():
        if key[0] == scenario and key[1] == figure and all(word in params.split() for word in key[2:]):
            return goal
    return None


def number(value):
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if value == int(value):
        return f"{value:.0f}"
    return f"{value:.2f}"


def main():
    raw, runs, machine, servers, commit = sys.argv[1:6]
    measurements = defaultdict(lambda: defaultdict(list))
    order = []
    for line in open(raw):
        line = line.strip()
        if not line:
            continue
        server, scenario, params, values = parse(line)
        key = (scenario, params)
        if key not in order:
            order.append(key)
        for figure, value in values.items():
            measurements[(server, scenario, params)][figure].append(value)

    print(f"# Comet against Nchan ({runs} runs, medians)")
    print()
    print(f"- Machine: {machine}")
    print(f"- Servers: Comet {commit}; nginx {servers}")
    print("- Each server pinned to core 0 (one worker), the load generator (`comet bench`) to core 1; loopback.")
    print()
    print("| scenario | figure | Comet | Nchan | Comet/Nchan | goal |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for scenario, params in order:
        comet = measurements.get(("comet", scenario, params), {})
        nchan = measurements.get(("nchan", scenario, params), {})
        durable = measurements.get(("comet-durable", scenario, params), {})
        for figure in FIGURES.get(scenario, []) if comet or nchan else []:
            c = statistics.median(comet[figure]) if figure in comet else None
            n = statistics.median(nchan[figure]) if figure in nchan else None
            if c is None and n is None:
                continue
            ratio = c / n if c is not None and n else None
            goal = goal_for(scenario, params, figure)
            mark = ""
            if goal and ratio is not None:
                mark = f"{goal[1]} {'✓' if goal[0](ratio) else '✗'}"
            print(f"| {scenario} {params} | {figure} | {number(c)} | {number(n)} | {number(ratio) if ratio is not None else '–'} | {mark} |")
        if durable:
            # The durable store's publishes against Nchan's in-memory ones.
            nchan_memory = measurements.get(("nchan", scenario, params.replace("publishers=64", "publishers=8")), {})
            for figure in ["publishes_per_s", "p99_ms"]:
                d = statistics.median(durable[figure]) if figure in durable else None
                n = statistics.median(nchan_memory[figure]) if figure in nchan_memory else None
                ratio = d / n if d is not None and n else None
                mark = ""
                goal = next((g for word, g in DURABLE_GOALS.items() if word in params.split()), None)
                if figure == "publishes_per_s" and d is not None and goal:
                    mark = f"≥ {goal:,}/s {'✓' if d >= goal else '✗'}"
                print(f"| {scenario} {params} (Comet durable; Nchan in memory with 8 publishers) | {figure} | {number(d)} | {number(n)} | {number(ratio) if ratio is not None else '–'} | {mark} |")


if __name__ == "__main__":
    main()
