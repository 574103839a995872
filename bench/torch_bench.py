#!/usr/bin/env python3
"""torch_bench.py - the PyTorch side of bench/run.sh.

    python3 torch_bench.py train MODEL BATCH THREADS STEPS   -> median ms per training step
    python3 torch_bench.py sgemm M K P THREADS [a|b]         -> GFLOP/s of numpy (OpenBLAS) sgemm
                                                                (a: A stored transposed, b: B)
    python3 torch_bench.py blas                              -> which BLAS and kernel numpy/torch use

A training step is what `dlcc bench` times: forward, loss, backward, the SGD
update of every parameter, on random inputs and targets of the model's shapes.
Each number is the median of STEPS timed steps after STEPS/10 (at least 3)
warm-up steps.  Models mirror bench/*.nnl.
"""
import sys
import time


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def build(name, batch, torch):
    nn = torch.nn
    F = torch.nn.functional
    if name == "mlp":
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                              nn.Linear(128, 10))
        x = torch.randn(batch, 784)
        y = torch.softmax(torch.randn(batch, 10), dim=1)
        loss = lambda: F.cross_entropy(model(x), y)
    elif name == "lenet5":
        model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                              nn.Linear(84, 10))
        x = torch.randn(batch, 1, 28, 28)
        y = torch.softmax(torch.randn(batch, 10), dim=1)
        loss = lambda: F.cross_entropy(model(x), y)
    elif name == "lstm":
        lstm = nn.LSTM(64, 128, batch_first=True)
        head = nn.Linear(128, 1)
        model = nn.ModuleList([lstm, head])
        x = torch.randn(batch, 32, 64)
        y = torch.randn(batch, 1)
        loss = lambda: F.mse_loss(head(lstm(x)[0][:, -1, :]), y)
    elif name == "transformer":
        model = nn.TransformerEncoderLayer(d_model=128, nhead=4, dim_feedforward=512,
                                           dropout=0.0, batch_first=True, norm_first=True)
        x = torch.randn(batch, 64, 128)
        y = torch.randn(batch, 64, 128)
        loss = lambda: F.mse_loss(model(x), y)
    else:
        raise SystemExit(f"unknown model {name}")
    return model, loss


def train(name, batch, threads, steps):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, loss = build(name, batch, torch)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    for _ in range(max(3, steps // 10)):
        step()
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
    print(f"{median(ts) * 1e3:.4f}")


def sgemm(m, k, p, threads, layout=""):
    import numpy as np
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=threads):
        # A transposed view is what BLAS is called with (no copy): sgemm's
        # transa / transb, as dlcc's GEMM reads a stored transpose.
        a = np.random.rand(k, m).astype(np.float32).T if layout == "a" else \
            np.random.rand(m, k).astype(np.float32)
        b = np.random.rand(p, k).astype(np.float32).T if layout == "b" else \
            np.random.rand(k, p).astype(np.float32)
        for _ in range(3):
            a @ b
        reps = max(5, min(2000, int(2e9 / (2 * m * k * p))))
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            ts.append(time.perf_counter() - t0)
    print(f"{2.0 * m * k * p / median(ts) / 1e9:.2f}")


def blas():
    from threadpoolctl import threadpool_info
    import numpy  # noqa: F401  (loads the BLAS threadpoolctl reports)
    for info in threadpool_info():
        print(f"{info.get('internal_api')} {info.get('version')} kernel {info.get('architecture')} "
              f"({info.get('filepath')})")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "train":
        train(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif cmd == "sgemm":
        sgemm(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
              sys.argv[6] if len(sys.argv) > 6 else "")
    elif cmd == "blas":
        blas()
    else:
        raise SystemExit(__doc__)
