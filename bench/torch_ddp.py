"""The peer a user would pick instead: PyTorch on CPU, 2 processes, 1 thread each.

    python bench/torch_ddp.py --data F.h5 --mode ddp|local [--sync-every 16] --out r.json

ddp: DistributedDataParallel (gloo), gradient Allreduce every step. local: local SGD,
parameters averaged with all_reduce every --sync-every steps. The same MLP (100-256-10),
SGD with momentum 0.9, lr 0.05, L2 1e-4, batch 256 per rank as mpidml's benchmark runs.
Prints/writes samples per second (all ranks together) and the test accuracy.
"""
import argparse
import json
import os
import socket
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, world, args, port):
    import h5py
    import numpy as np
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    with h5py.File(args.data) as f:
        n = f["train/X"].shape[0]
        lo, hi = rank * n // world, (rank + 1) * n // world
        X = torch.from_numpy(f["train/X"][lo:hi])
        y = torch.from_numpy(f["train/y"][lo:hi].astype(np.int64))
        TX = torch.from_numpy(f["test/X"][...]) if rank == 0 else None
        Ty = torch.from_numpy(f["test/y"][...].astype(np.int64)) if rank == 0 else None
    torch.manual_seed(0)
    hidden = [int(h) for h in args.hidden.split(",")]
    layers, prev = [], X.shape[1]
    for h in hidden:
        layers += [torch.nn.Linear(prev, h), torch.nn.ReLU()]
        prev = h
    model = torch.nn.Sequential(*layers, torch.nn.Linear(prev, int(y.max()) + 1))
    for p in model.parameters():
        dist.broadcast(p.data, 0)
    net = torch.nn.parallel.DistributedDataParallel(model) if args.mode == "ddp" else model
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    lossf = torch.nn.CrossEntropyLoss()
    B = args.batch_size
    steps = len(y) // B
    g = torch.Generator().manual_seed(rank)
    done = 0
    t0 = None
    for epoch in range(args.epochs):
        perm = torch.randperm(len(y), generator=g)
        for s in range(steps):
            if epoch == 0 and s == args.warmup:
                dist.barrier()
                t0, done = time.perf_counter(), 0
            idx = perm[s * B:(s + 1) * B]
            opt.zero_grad(set_to_none=True)
            loss = lossf(net(X[idx]), y[idx])
            loss.backward()
            opt.step()
            done += B
            if args.mode == "local" and (s + 1) % args.sync_every == 0:
                for p in model.parameters():
                    dist.all_reduce(p.data)
                    p.data /= world
    dist.barrier()
    elapsed = time.perf_counter() - t0
    if args.mode == "local":
        for p in model.parameters():
            dist.all_reduce(p.data)
            p.data /= world
    if rank == 0:
        with torch.no_grad():
            acc = float((model(TX).argmax(1) == Ty).float().mean())
        with open(args.out, "w") as f:
            json.dump({"samples_per_s": done * world / elapsed, "accuracy": acc, "mode": args.mode}, f)
    dist.barrier()
    os._exit(0)     # gloo's teardown sometimes aborts (SIGABRT) after a long last step; skip it


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--mode", choices=("ddp", "local"), default="ddp")
    p.add_argument("--sync-every", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--hidden", default="256")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch.multiprocessing as mp
    mp.spawn(worker, args=(args.nproc, args, free_port()), nprocs=args.nproc, join=True)


if __name__ == "__main__":
    main()
