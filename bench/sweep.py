"""The seed's phase table redone: success rate, req/s and latency against concurrent connections.

For each connection count, runs every contender with wrk (one sample per
POST, keep-alive) through `compare.run_once`, alternating contenders,
`--repeat` times; prints a Markdown table of medians and draws
``bench/sweep.png`` (req/s and p99 against connections, log scale).

    python bench/sweep.py --levels 20,50,100,1000,10000 --repeat 3 --seconds 10 \\
        --contender "web=baseline" --contender "ingest=--threads 16"
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics

from compare import HERE, run_alternating, run_once


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="20,50,100,1000,10000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--contender", action="append", required=True, help="name=twistd ingest options")
    parser.add_argument("--plot", default=os.path.join(HERE, "sweep.png"))
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    contenders = [spec.split("=", 1) for spec in args.contender]
    levels = [int(level) for level in args.levels.split(",")]
    table: dict[tuple[str, int], dict[str, float]] = {}
    for level in levels:
        wrk_args = argparse.Namespace(
            seconds=args.seconds, connections=level, batch=1, format="json", wrk_threads=1
        )
        runs = run_alternating(
            contenders,
            args.repeat,
            lambda name, options, wrk_args=wrk_args: run_once(name, options, wrk_args),
            label=f"{level} conns, ",
        )
        for name, _ in contenders:
            done = runs[name]
            medians = {key: statistics.median(r[key] for r in done) for key in done[0]}
            total = sum(r["rps"] * args.seconds for r in done)
            failed = sum(r["non2xx"] + r["errors"] for r in done)
            medians["success_pct"] = 100.0 * (1 - failed / max(total, 1))
            table[name, level] = medians
    print(f"\nmedians of {args.repeat} runs of {args.seconds}s, one sample per POST, keep-alive, wrk -t1")
    print(
        "| connections | "
        + " | ".join(f"{name} req/s | {name} p50 ms | {name} p99 ms | {name} ok %" for name, _ in contenders)
        + " |"
    )
    print("| ---: |" + " ---: | ---: | ---: | ---: |" * len(contenders))
    for level in levels:
        cells = []
        for name, _ in contenders:
            m = table[name, level]
            cells.append(f"{m['rps']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['success_pct']:.2f}")
        print(f"| {level:,} | " + " | ".join(cells) + " |")
    plot(table, contenders, levels, args.plot)


def plot(
    table: dict[tuple[str, int], dict[str, float]], contenders: list[list[str]], levels: list[int], path: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate_axis, p99_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, _ in contenders:
        rate_axis.plot(levels, [table[name, level]["rps"] for level in levels], marker="o", label=name)
        p99_axis.plot(levels, [table[name, level]["p99_ms"] for level in levels], marker="o", label=name)
    for axis, title in ((rate_axis, "requests/s"), (p99_axis, "p99 latency (ms)")):
        axis.set_xscale("log")
        axis.set_xlabel("concurrent keep-alive connections")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend()
    p99_axis.set_yscale("log")
    figure.suptitle("ingest vs stock twisted.web, one sample per POST (wrk, server on one core)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
