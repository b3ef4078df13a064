"""`leadscore forecast` and `leadscore score` as whole commands: this tree against a reference tree.

    python -m benchmarks.bench_cli_speed [--deals 20000] [--repeats 3] [--reference /work/main]
        [--folder /tmp/leadscore_cli]

In --folder (kept between runs, made once with this tree): `leadscore generate --deals N --seed 0
--out data` and `leadscore train --data data` (the embedded MLflow store and the track-record
store under folder/.leadscore). Then, alternately in the reference tree and in this one,
--repeats times each: `leadscore forecast --data data --periods 3 --freq month --out F.json`
(process start, reading the data, the champion from the registry, the forecast, the track
record, the JSON, the MLflow run) and `leadscore score --data data --out F.csv`, each in its
own process: wall seconds, the CPU seconds (user + system) of the process and its children
(the MLflow side process), and of the command's process alone, with the load average. The two trees' outputs are compared byte for byte (the numbers must not change).
Writes the section "Forecast speed: the commands" of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.results import record

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "forecast": ("forecast", "--data", "data", "--periods", "3", "--freq", "month", "--out", "{tree}.json"),
    "score": ("score", "--data", "data", "--out", "{tree}.csv"),
}
TARGETS = {"forecast": "< 10 s"}
STORE_VARIABLES = ("MLFLOW_TRACKING_URI", "LEADSCORE_STORE_URL")


# `python -m serving.cli ARGS`, and at exit the CPU seconds of the command's own process (what
# its wall time is on a machine with a free core for its MLflow side process) written to argv[1]
COMMAND = ("import atexit, resource, sys\n"
           "out = sys.argv.pop(1)\n"
           "def own_cpu():\n"
           "    usage = resource.getrusage(resource.RUSAGE_SELF)\n"
           "    open(out, 'w').write(str(usage.ru_utime + usage.ru_stime))\n"
           "atexit.register(own_cpu)\n"
           "from serving.cli import app\n"
           "app()\n")


def run_cli(tree: Path, folder: Path, *args: str) -> dict:
    """Wall and CPU seconds (the command's process and its children) of `python -m
    serving.cli ARGS` with `tree` on the path, in `folder`; `own_cpu`: its own process only."""
    env = {k: v for k, v in os.environ.items() if k not in STORE_VARIABLES}  # the folder's embedded stores
    own = folder / ".own_cpu"
    own.unlink(missing_ok=True)
    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", COMMAND, str(own), *args], cwd=folder, capture_output=True, text=True,
                   check=True, env={**env, "PYTHONPATH": str(tree)})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": time.perf_counter() - started,
            "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            "own_cpu": float(own.read_text())}


def prepared_folder(folder: Path, n_deals: int) -> Path:
    """`folder` with generated data and a champion trained on it (made with this tree when missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "data" / "meta.json").exists():
        run_cli(ROOT, folder, "generate", "--deals", str(n_deals), "--seed", "0", "--out", "data")
    if not (folder / ".leadscore" / "mlflow.db").exists():
        run_cli(ROOT, folder, "train", "--data", "data")
    return folder


def time_commands(folder: Path, reference: Path, repeats: int, commands: tuple[str, ...] = tuple(COMMANDS)) -> dict:
    """{command: {"reference": [runs], "this": [runs], "same_output": bool}} and the load
    average before and after; the trees alternate, reference first."""
    out: dict = {"load_before": os.getloadavg()}
    for command in commands:
        out[command] = {"reference": [], "this": []}
    for _ in range(repeats):
        for command in commands:
            for name, tree in (("reference", reference), ("this", ROOT)):
                args = [a.format(tree=name) for a in COMMANDS[command]]
                out[command][name].append(run_cli(tree, folder, *args))
                print(command, name, out[command][name][-1], flush=True)
    for command in commands:
        ref, new = (folder / COMMANDS[command][-1].format(tree=name) for name in ("reference", "this"))
        out[command]["same_output"] = ref.read_bytes() == new.read_bytes()
    out["load_after"] = os.getloadavg()
    return out


def cli_table(timed: dict, n_deals: int, reference: Path) -> str:
    """One row per command: median wall and CPU of each tree, the ratios, the target."""
    lines = ["| command | target | reference wall s | this tree wall s | reference CPU s | this tree CPU s | "
             "reference own CPU s | this tree own CPU s | speed-up wall / CPU / own CPU (reference / this) | "
             "output identical |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for command in COMMANDS:
        if command not in timed:
            continue
        runs = timed[command]
        med = {name: {k: statistics.median(r[k] for r in runs[name]) for k in ("wall", "cpu", "own_cpu")}
               for name in ("reference", "this")}
        ref, new = med["reference"], med["this"]
        lines.append(f"| `leadscore {' '.join(COMMANDS[command]).format(tree='F')}` | {TARGETS.get(command, '-')} | "
                     f"{ref['wall']:.1f} | {new['wall']:.1f} | {ref['cpu']:.1f} | {new['cpu']:.1f} | "
                     f"{ref['own_cpu']:.1f} | {new['own_cpu']:.1f} | {ref['wall'] / new['wall']:.2f}x / "
                     f"{ref['cpu'] / new['cpu']:.2f}x / {ref['own_cpu'] / new['own_cpu']:.2f}x | "
                     f"{'yes' if runs['same_output'] else 'NO'} |")
    every = "; ".join(f"{c} {name}: " + ", ".join(f"{r['wall']:.1f} ({r['cpu']:.1f}, own {r['own_cpu']:.1f})"
                                                  for r in timed[c][name])
                      for c in COMMANDS if c in timed for name in ("reference", "this"))
    lo, hi = timed["load_before"], timed["load_after"]
    return "\n".join([
        f"Generated data, {n_deals:,} deals, seed 0, a champion trained on it (embedded MLflow); each command in "
        f"its own process, the trees alternating (reference `{reference}` first), medians of "
        f"{len(timed[next(iter(COMMANDS))]['this'])} runs each.", "", *lines, "",
        f"Every run, wall s (CPU s, own CPU s): {every}.", "",
        "CPU s: the command's process and its children (this tree: the MLflow side process); own CPU s: the "
        "command's process alone, its critical path when the side process has a core of its own.", "",
        f"Load average (1, 5, 15 min) before {lo[0]:.1f}, {lo[1]:.1f}, {lo[2]:.1f}; after {hi[0]:.1f}, {hi[1]:.1f}, "
        f"{hi[2]:.1f} on 2 cores: wall seconds are inflated by the other jobs; CPU seconds and the ratios are the "
        f"comparable figures."])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", type=Path, default=Path("/work/main"), help="the tree to compare with")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/leadscore_cli"), help="data and stores, kept")
    args = parser.parse_args(argv)
    timed = time_commands(prepared_folder(args.folder, args.deals), args.reference, args.repeats)
    text = cli_table(timed, args.deals, args.reference)
    print(text)
    record("Forecast speed: the commands", text,
           f"nice -n 10 python -m benchmarks.bench_cli_speed --deals {args.deals} --repeats {args.repeats} "
           f"--reference {args.reference} --folder {args.folder}")


if __name__ == "__main__":
    sys.exit(main())
