"""Sweeps: a 4-model sweep in one job against the same 4 models as separate jobs, back to back,
in wall time, samples/s and accuracy."""
import json
import os
import time

import numpy as np

from harness import PY, WORK, fmt, progress, sh, synth, table, target


def timed(cmd):
    """Wall seconds of a whole command, launch to exit (what a user waits for)."""
    t0 = time.perf_counter()
    sh(cmd)
    return time.perf_counter() - t0


def measure(args):
    path = synth("s200k.h5", "--samples", 200_000, "--features", 100, "--classes", 10, "--noise", 1.5,
                 "--test-samples", 20_000)
    epochs = 1 if args.quick else 3
    base = ["--data", path, "--model", "mlp", "--epochs", epochs, "--no-overlap", "--validation-fraction", 0.1,
            "--quiet"]
    grid = [("lr", (0.1, 0.03)), ("hidden", (64, 128))]
    points = [{"lr": lr, "hidden": h} for lr in grid[0][1] for h in grid[1][1]]
    launch = [args.mpiexec, "-n", "2", PY, "-m", "mpidml"]
    out = os.path.join(WORK, "sweep.json")
    sweep_args = [a for key, values in grid for a in ("--sweep", f"{key}={' '.join(map(str, values))}")]
    sweep_s = timed([*launch, *base, *sweep_args, "--metrics-json", out])
    with open(out) as f:
        sweep = json.load(f)
    progress(f"N=2 sweep of 4: {sweep_s:.1f} s, {sweep['timing']['samples_per_s']:,.0f} samples/s")
    alone, alone_s = [], 0.0
    for point in points:
        alone_s += timed([*launch, *base, "--lr", point["lr"], "--hidden", point["hidden"], "--metrics-json", out])
        with open(out) as f:
            alone.append(json.load(f))
        progress(f"N=2 alone {point}: {alone[-1]['timing']['samples_per_s']:,.0f} samples/s")
    rows = []
    for point, entry, doc in zip(points, sweep["sweep"], alone):
        rows.append([f"lr {point['lr']}, hidden {point['hidden']}", f"{entry['validation']['accuracy']:.4f}",
                     f"{entry['test']['accuracy']:.4f}", f"{doc['test']['accuracy']:.4f}",
                     fmt(entry["timing"]["samples_per_s"]), fmt(doc["timing"]["samples_per_s"])])
    single = float(np.mean([d["timing"]["samples_per_s"] for d in alone]))
    total = sweep["timing"]["samples_per_s"]
    wall = sweep_s / alone_s
    text = (f"2 ranks, synthetic 200k x 100 10-class data (10% of the training rows held out for validation), "
            f"MLP, {epochs} epoch(s), blocking averaging every 8 steps. The sweep is one job "
            f"(`--sweep \"lr=0.1 0.03\" --sweep \"hidden=64 128\"`); the separate runs are the same four models "
            "as four jobs, one after the other. Wall: launch to exit. A model's samples/s in the sweep counts "
            "its own samples over the time from its first to its last step, which it shares with the others.\n\n")
    text += table(["model", "val accuracy (sweep)", "test accuracy (sweep)", "test accuracy (alone)",
                   "samples/s in the sweep", "samples/s alone"], rows)
    text += (f"\n\nWall time: sweep {sweep_s:.1f} s, four separate jobs {alone_s:.1f} s: "
             f"{target(f'{wall:.2f}x', wall <= 0.8, 'sweep: wall time / separate jobs (target <= 0.8)')} "
             f"(target <= 0.8). Samples/s of the sweep, all models together: {fmt(total)}, against a single "
             f"run's {fmt(single)} (mean of the four): "
             f"{target(f'{total / single:.2f}x', total >= single, 'sweep: summed samples/s / a single run (>= 1)')} "
             f"(target >= 1). Chosen on validation: model {sweep['best']}. The sweep reads and distributes "
             "the file once and launches once; while one model waits for its average, another computes.")
    return "Sweeps: several models in one job", text
