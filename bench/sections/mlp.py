"""MLP speed against PyTorch: one MLP 100-256-10 training step against the time of its five
matrix products alone, and mpidml's gradient Allreduce and local SGD at N=2 against PyTorch DDP
and torch local SGD (bench/torch_ddp.py; only where torch is installed)."""
import json
import os

from harness import PY, ROOT, WORK, fmt, gemm_vs_step, mpidml, sh, synth, table, target


def measure(args):
    path = synth("s1m.h5", "--samples", 1_000_000, "--features", 100, "--classes", 10, "--noise", 1.5,
                 "--test-samples", 100_000)
    t_gemm, t_step = gemm_vs_step()
    rows = []
    epochs = 1 if args.quick else 2
    common = ["--data", path, "--model", "mlp", "--hidden", 256, "--batch-size", 256, "--epochs", epochs,
              "--optimizer", "momentum", "--lr", 0.05]
    grads = mpidml(2, [*common, "--sync", "gradients"], args.mpiexec)
    local = mpidml(2, [*common, "--sync", "average", "--sync-every", 16], args.mpiexec)
    torch_rows = {}
    try:
        import torch  # noqa: F401
        for mode in ("ddp", "local"):
            out = os.path.join(WORK, f"torch-{mode}.json")
            sh([PY, os.path.join(ROOT, "bench", "torch_ddp.py"), "--data", path, "--mode", mode,
                "--sync-every", 16, "--epochs", epochs, "--out", out])
            with open(out) as f:
                torch_rows[mode] = json.load(f)
    except ImportError:
        pass
    ddp = torch_rows.get("ddp", {}).get("samples_per_s")
    tls = torch_rows.get("local", {}).get("samples_per_s")
    for name, doc, ref, goal in (("mpidml --sync gradients", grads, ddp, 3.0),
                                 ("mpidml --sync average --sync-every 16", local, tls, 2.0)):
        s = doc["timing"]["samples_per_s"]
        rows.append([name, fmt(s), target(f"{s / ref:.2f} (target {goal:g})", s >= goal * ref, f"mlp: {name} x torch")
                     if ref else "n/a",
                     f"{doc['test']['accuracy']:.4f}"])
    for mode, label in (("ddp", "PyTorch DDP (gloo)"), ("local", "torch local SGD, K=16")):
        if mode in torch_rows:
            rows.append([label, fmt(torch_rows[mode]["samples_per_s"]), "1.00",
                         f"{torch_rows[mode]['accuracy']:.4f}"])
    text = ("MLP 100-256-10, ReLU, SGD+momentum, batch 256 per rank, 2 processes with 1 thread each, "
            f"synthetic 1M x 100 10-class data, {epochs} epoch(s). torch 2.13.0 CPU build.\n\n")
    text += table(["run", "samples/s (all ranks)", "x its torch peer", "test accuracy"], rows)
    text += (f"\n\nPer rank, one training step (forward, backward, update) takes {t_step * 1e6:.0f} us; "
             f"its five matrix products alone take {t_gemm * 1e6:.0f} us: the step is "
             + target(f"{t_step / t_gemm:.2f}x its GEMM time (target <= 2x)", t_step <= 2 * t_gemm, "mlp: step") + ".")
    if not torch_rows:
        text += "\n\ntorch is not installed: `make bench BENCH_TORCH=1` (the `torch` extra, 1.7 GB) adds the peers."
    text += "\n\nScaling over ranks: see its own section."
    return "MLP speed against PyTorch", text
