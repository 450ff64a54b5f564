"""Throughput against a bare numpy loop: softmax regression (plain SGD) on synthetic 1M x 100,
mpidml at N=1 and N=2 against the hand-rolled single-process minibatch loop it replaces, in
samples/s and test accuracy (targets: N=1 >= 1.5x the loop, N=2 >= 1.9x N=1)."""
import time

import h5py
import numpy as np

from harness import fmt, mpidml, synth, table, target


def bare_numpy_loop(path, epochs, B=256, lr=0.05):
    """The hand-rolled baseline: softmax regression, minibatch SGD, float32, and a fresh
    shuffled copy of the data every epoch (X[perm]), temporaries in every step."""
    with h5py.File(path) as f:
        X, y = f["train/X"][...], f["train/y"][...]
        TX, Ty = f["test/X"][...], f["test/y"][...]
    mean, std = X.mean(0), X.std(0)
    X, TX = (X - mean) / std, (TX - mean) / std
    n, d = X.shape
    k = int(y.max()) + 1
    W, b = np.zeros((d, k), np.float32), np.zeros(k, np.float32)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = rng.permutation(n)
        Xs, ys = X[perm], y[perm]
        for s in range(0, n, B):
            xb, yb = Xs[s:s + B], ys[s:s + B]
            z = xb @ W + b
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(yb)), yb] -= 1
            p /= len(yb)
            W -= lr * (xb.T @ p)
            b -= lr * p.sum(axis=0)
    elapsed = time.perf_counter() - t0
    acc = float(np.mean(np.argmax(TX @ W + b, axis=1) == Ty))
    return n * epochs / elapsed, acc


def measure(args):
    path = synth("s1m.h5", "--samples", 1_000_000, "--features", 100, "--classes", 10, "--noise", 1.5,
                 "--test-samples", 100_000)
    epochs = 2 if args.quick else 3
    bare, bare_acc = max(bare_numpy_loop(path, epochs) for _ in range(3))
    rows = [["bare numpy loop (1 process)", fmt(bare), "1.00", "", f"{bare_acc:.4f}"]]
    results = {}
    for n in (1, 2):
        doc = mpidml(n, ["--data", path, "--batch-size", 256, "--epochs", epochs, "--optimizer", "sgd",
                         "--l2", 0, "--sync-every", 16], args.mpiexec, repeat=3)
        results[n] = doc["timing"]["samples_per_s"]
        rows.append([f"mpidml N={n} (softmax, sgd, K=16)", fmt(results[n]), f"{results[n] / bare:.2f}",
                     f"{results[n] / results[1]:.2f}", f"{doc['test']['accuracy']:.4f}"])
    text = ("Softmax regression (plain SGD, lr 0.05, no L2, like the bare loop) on synthetic 1M x 100, "
            "10 classes (float32, batch 256 per rank, "
            f"{epochs} epochs, 100k test rows). samples/s counts all ranks over `train_s` (the training "
            "loop; the per-epoch test scoring is reported apart as evaluate_s); each row is the best of 3 runs.\n\n")
    text += table(["run", "samples/s", "x bare loop", "x N=1", "test accuracy"], rows)
    n1, n2 = results[1] / bare, results[2] / results[1]
    text += (f"\n\nTargets: {target(f'N=1 >= 1.5x the bare loop (measured {n1:.2f}x)', n1 >= 1.5, 'throughput')}, "
             f"{target(f'N=2 >= 1.9x N=1 (measured {n2:.2f}x)', n2 >= 1.9, 'throughput')}.")
    return "Throughput against a bare numpy loop", text
