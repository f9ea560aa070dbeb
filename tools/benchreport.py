"""Run every benchmark target and write one results page: machine, date, a table, the outputs.

    python -m tools.benchreport [--out docs/benchmarks.md] bench-generate bench-ingest ...

Each target runs as `make -s <target>` in turn (one at a time: they share two cores
with the services); its printed figures go into the table, its whole output below it.
A failing benchmark is reported as failed and the others still run.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from smw import config

DEFAULT_TARGETS = ("bench-generate", "bench-ingest", "bench-land", "bench-batch", "bench-stream", "bench-web")
# Lines that carry results: a figure with a unit, a ratio or a goal, or a row of a table of numbers.
FIGURE = re.compile(r"(\d[\d,.]*\s*(readings/s|r/s|req/s|ms|MiB|GiB|MB/s|x\b|s\b))|goal|median|p50|p99|ratio", re.I)
TABLE_ROW = re.compile(r"^\s*[\d,.]+(\s+(on|off|[\d,.]+)){3,}(\s|$)")
# Lines that are logging or set-up chatter, not results.
NOISE = re.compile(r"Warning|warnings\.warn|ready on |started \(pid|^\s*(WARN|INFO|at |26/)|/site-packages/")


def machine() -> list[str]:
    """What the figures were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    return [f"CPU: {cpu}, {os.cpu_count()} logical cores", f"memory: {mem_kib / 2**20:.1f} GiB",
            f"OS: {platform.platform()}", f"Python {platform.python_version()}; {java[0] if java else 'java: none'}",
            "Kafka, Cassandra and reqlite run beside the benchmarks on the same cores (make up)."]


def headline(output: str, limit: int = 8) -> list[str]:
    """The last lines of a benchmark's output that carry figures."""
    # A progress bar rewrites its line with carriage returns: keep what was written last.
    lines = [line.split("\r")[-1].strip() for line in output.split("\n")]
    lines = [line for line in lines
             if line and (FIGURE.search(line) or TABLE_ROW.match(line)) and not NOISE.search(line)]
    return lines[-limit:]


def run(target: str) -> tuple[int, float, str]:
    started = time.monotonic()
    print(f"== make {target}", flush=True)
    process = subprocess.Popen(["make", "-s", target], cwd=config.ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        sys.stdout.write(line)
        lines.append(line)
    return process.wait(), time.monotonic() - started, "".join(lines)


def render(results: list[tuple[str, int, float, str]], when: dt.datetime) -> str:
    out = ["# Benchmark results", "",
           f"Written by `make bench` on {when:%Y-%m-%d %H:%M} UTC. Each row is one `make <target>` run;",
           "the figures are the benchmark's own printed summary (medians and side-by-side ratios",
           "where the benchmark measures them). The machine is shared and noisy: compare figures",
           "within one run, not across runs.", "", "## Machine", ""]
    out += [f"- {line}" for line in machine()]
    out += ["", "## Results", "", "| benchmark | status | wall time | figures |", "| --- | --- | --- | --- |"]
    for target, code, seconds, output in results:
        figures = "<br>".join(line.replace("|", "\\|") for line in headline(output)) or "(no figures printed)"
        out.append(f"| `make {target}` | {'ok' if code == 0 else f'failed (exit {code})'} | {seconds:.0f} s | {figures} |")
    out += ["", "## Outputs", ""]
    for target, code, _seconds, output in results:
        kept = [line.split("\r")[-1] for line in output.split("\n")]
        kept = [line for line in kept if not NOISE.search(line) and not line.startswith("[Stage")]
        out += [f"### make {target}", "", "```", *kept[-60:], "```", ""]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.benchreport", description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", default=list(DEFAULT_TARGETS), help="make targets to run, in order")
    parser.add_argument("--out", type=Path, default=config.ROOT / "docs" / "benchmarks.md",
                        help="results page (default docs/benchmarks.md)")
    args = parser.parse_args(argv)
    when = dt.datetime.now(dt.timezone.utc)
    results = []
    for target in args.targets:
        code, seconds, output = run(target)
        results.append((target, code, seconds, output))
    args.out.write_text(render(results, when), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if all(code == 0 for _t, code, _s, _o in results) else 1


if __name__ == "__main__":
    sys.exit(main())
