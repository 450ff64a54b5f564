"""Blocking against overlapped averaging: at N=2, the time a rank was blocked on its averages
in three configurations (small frequent averages to a large Adam model's), and, at as many ranks
as cores, test accuracy per epoch (overlapped rounds must not cost accuracy)."""
import os

import numpy as np

from harness import SCALE_NET, fmt, mpidml, synth, table, target


def measure(args):
    path = synth("s200k.h5", "--samples", 200_000, "--features", 100, "--classes", 10, "--noise", 1.5,
                 "--test-samples", 20_000)
    epochs = 1 if args.quick else 3
    configs = [
        ("frequent small averages: MLP 100-64-10, batch 32, every 4 steps",
         ["--model", "mlp", "--hidden", 64, "--batch-size", 32, "--sync-every", 4], []),
        ("an average after every step: MLP 100-64-10, batch 32",
         ["--model", "mlp", "--hidden", 64, "--batch-size", 32, "--sync-every", 1], []),
        ("large averages: MLP 100-512-512-10 with Adam ([w|m|v] = 2.4M floats), batch 64, every 2 steps, "
         "merged 2 steps later",
         ["--model", "mlp", "--hidden", "512,512", "--optimizer", "adam", "--lr", 0.001, "--batch-size", 64,
          "--sync-every", 2], ["--merge-after", 2]),
    ]
    rows, ratios = [], []
    for label, cfg, overlap_cfg in configs:
        waits = {}
        for mode in ("--no-overlap", "--overlap"):
            extra = overlap_cfg if mode == "--overlap" else []
            doc = mpidml(2, ["--data", path, "--epochs", epochs, *cfg, mode, *extra], args.mpiexec)
            t = doc["timing"]
            waits[mode] = float(np.mean(t["per_rank"]["comm_wait_s"]))
            rows.append([label, mode, f"{waits[mode]:.3f}", f"{t['comm_s']:.3f}", fmt(t["samples_per_s"]),
                         f"{doc['test']['accuracy']:.4f}"])
        ratios.append(waits["--overlap"] / max(waits["--no-overlap"], 1e-9))
    text = (f"2 ranks, synthetic 200k x 100 10-class data, {epochs} epoch(s). comm_wait_s: time a rank was "
            "blocked with nothing else to run (mean over ranks); comm_s: collectives from start to "
            "completion.\n\n")
    text += table(["configuration", "averaging", "comm_wait_s", "comm_s", "samples/s", "test accuracy"], rows)
    marked = ", ".join(target(f"{r:.2f}", r <= 0.5, f"overlap: overlapped/blocking wait, {label.split(':')[0]} "
                                                    "(target <= 0.5)") for r, (label, _, _) in zip(ratios, configs))
    text += (f"\n\nOverlapped / blocking waiting: {marked} for the three "
             "configurations (target <= 0.5). The mpich wheel has no progress thread, so a non-blocking "
             "collective advances only when a rank calls MPI: the average starts at the sync point and, "
             "while it is in flight, the trainer pokes MPI between layers (a 9.6 MB Iallreduce needs about "
             "6 pokes here), and the next K steps absorb the latency and the peers' jitter. With 2 ranks on "
             "2 cores there is no spare core to move the bytes, so throughput does not rise (the copying "
             "moves into the steps, and the snapshot costs a copy): what overlap removes is the blocked "
             "time. Run-to-run noise on this shared machine is large: the large-average ratio ranged "
             "0.18-0.51 over four runs.")
    text += "\n\n" + overlap_accuracy(args)
    return "Blocking against overlapped averaging", text


def overlap_accuracy(args):
    """Test accuracy per epoch, overlapped against blocking averaging, at as many ranks as
    the machine has cores (the issue's case: MLP 100-256-10, K=16, lr 0.05)."""
    n = len(os.sched_getaffinity(0))
    epochs = 2 if args.quick else 4
    path = synth("s1m.h5", "--samples", 1_000_000, "--features", 100, "--classes", 10, "--noise", 1.5,
                 "--test-samples", 100_000)
    rows = []
    for optimizer in ("momentum", "adam"):
        acc = {}
        for mode in ("--no-overlap", "--overlap"):
            doc = mpidml(n, ["--data", path, *SCALE_NET, "--epochs", epochs, "--optimizer", optimizer,
                             "--lr", 0.05, "--sync-every", 16, mode], args.mpiexec, what=f"{optimizer} {mode}")
            acc[mode] = [h["test_accuracy"] for h in doc["history"]]
            drops = [max(0.0, a - b) for a, b in zip(acc[mode], acc[mode][1:])]
            rows.append([optimizer, mode, *(f"{a:.4f}" for a in acc[mode]),
                         target(f"{max(drops, default=0) * 100:.1f}", max(drops, default=0) <= 0.02,
                                f"overlap: {optimizer} {mode} largest drop between epochs (points, target <= 2)")])
        gap = (acc["--no-overlap"][-1] - acc["--overlap"][-1]) * 100
        rows[-1].append(target(f"{gap:+.2f}", abs(gap) <= 0.5,
                               f"overlap: {optimizer} blocking - overlapped final accuracy (points, within 0.5)"))
    head = ["optimizer", "averaging", *(f"epoch {e + 1}" for e in range(epochs)), "largest drop (points)",
            "blocking - overlapped (points)"]
    return (f"Test accuracy per epoch at N={n}, MLP 100-256-10, batch 256, K=16, lr 0.05, synthetic 1M x 100 "
            "(100k test rows); overlapped rounds merge K/2 steps after they start (`--merge-after`).\n\n"
            + table(head, [r + [""] * (len(head) - len(r)) for r in rows]))
