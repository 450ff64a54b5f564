"""The hand-written baseline of the scaling benchmark: what a user would write with numpy
and mpi4py instead of adopting mpidml.

Each rank reads its contiguous shard of /train with h5py, standardizes it with global
statistics, and trains an MLP (one ReLU hidden layer, softmax) with momentum SGD on its
shard. `--sync-every K`: every K steps one blocking Allreduce(IN_PLACE) of
[weights | momentum] (local SGD, the bytes mpidml averages); `--sync gradients`: one
Allreduce of the gradient every step (synchronous SGD). Rank 0 writes a JSON line with
samples/s over the training loop, the time spent in the averaging Allreduce and the test
accuracy.

    mpiexec -n 4 python bench/handloop.py --data s1m.h5 --epochs 1 --out loop.json
"""
import argparse
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402


def timed_allreduce(comm, buf):
    """Sum `buf` over the ranks in place; returns the seconds it took."""
    t0 = time.perf_counter()
    comm.Allreduce(MPI.IN_PLACE, buf)
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--sync", choices=("average", "gradients"), default="average")
    p.add_argument("--sync-every", type=int, default=16)
    p.add_argument("--out")
    a = p.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    with h5py.File(a.data, "r") as f:
        n = f["train/y"].shape[0]
        lo, hi = rank * n // size, (rank + 1) * n // size
        X = f["train/X"][lo:hi].astype(np.float32)
        y = f["train/y"][lo:hi].astype(np.int64)
        TX, Ty = (f["test/X"][...], f["test/y"][...]) if rank == 0 else (None, None)
    sums = np.array([X.sum(0), (X.astype(np.float64) ** 2).sum(0)])
    comm.Allreduce(MPI.IN_PLACE, sums)
    mean = sums[0] / n
    std = np.sqrt(np.maximum(sums[1] / n - mean ** 2, 1e-12))
    X = ((X - mean) / std).astype(np.float32)
    d, h = X.shape[1], a.hidden
    k = int(comm.allreduce(int(y.max()), MPI.MAX)) + 1

    # one flat buffer [W1 b1 W2 b2 | momentum]: one Allreduce moves it all
    sizes = [d * h, h, h * k, k]
    nparam = sum(sizes)
    state = np.zeros(2 * nparam, np.float32)
    w, v = state[:nparam], state[nparam:]
    offs = np.cumsum([0] + sizes)
    W1, b1, W2, b2 = (w[offs[i]:offs[i + 1]] for i in range(4))
    W1, W2 = W1.reshape(d, h), W2.reshape(h, k)
    g = np.zeros(nparam, np.float32)
    gW1, gb1, gW2, gb2 = (g[offs[i]:offs[i + 1]] for i in range(4))
    gW1, gW2 = gW1.reshape(d, h), gW2.reshape(h, k)
    rng = np.random.default_rng(0)
    W1[...] = rng.standard_normal((d, h)) * np.sqrt(2 / d)
    W2[...] = rng.standard_normal((h, k)) * np.sqrt(2 / (h + k))
    comm.Bcast(state)

    B, mu = a.batch_size, 0.9
    steps = -(-(n // size + 1) // B)        # the same number of steps on every rank
    comm_s, syncs, seen = 0.0, 0, 0
    comm.Barrier()
    t0 = time.perf_counter()
    for epoch in range(a.epochs):
        perm = np.random.default_rng([epoch, rank]).permutation(len(y))
        for s in range(steps):
            idx = perm[(s * B) % len(y):(s * B) % len(y) + B]
            xb, yb = X[idx], y[idx]
            seen += len(idx)
            hid = np.maximum(xb @ W1 + b1, 0)
            z = hid @ W2 + b2
            z -= z.max(axis=1, keepdims=True)
            pr = np.exp(z)
            pr /= pr.sum(axis=1, keepdims=True)
            pr[np.arange(len(yb)), yb] -= 1
            pr /= len(yb)
            gW2[...] = hid.T @ pr
            gb2[...] = pr.sum(0)
            dh = (pr @ W2.T) * (hid > 0)
            gW1[...] = xb.T @ dh
            gb1[...] = dh.sum(0)
            if a.sync == "gradients":
                comm_s += timed_allreduce(comm, g)
                syncs += 1
                g /= size
            v *= mu
            v += g
            w -= a.lr * v
            if a.sync == "average" and (s + 1) % a.sync_every == 0:
                comm_s += timed_allreduce(comm, state)
                syncs += 1
                state /= size
        if a.sync == "average":            # the epoch's closing average counts like the others
            comm_s += timed_allreduce(comm, state)
            syncs += 1
            state /= size
    train_s = time.perf_counter() - t0
    samples = comm.allreduce(seen)
    comm_s = comm.allreduce(comm_s) / size
    if rank == 0:
        TX = ((TX - mean) / std).astype(np.float32)
        pred = np.argmax(np.maximum(TX @ W1 + b1, 0) @ W2 + b2, axis=1)
        doc = {"samples_per_s": samples / train_s, "train_s": train_s, "syncs": syncs,
               "wait_per_sync_ms": 1e3 * comm_s / max(syncs, 1), "bytes": int(state.nbytes),
               "accuracy": float(np.mean(pred == Ty))}
        if a.out:
            with open(a.out, "w") as f:
                json.dump(doc, f)
        else:
            print(json.dumps(doc))


if __name__ == "__main__":
    main()
