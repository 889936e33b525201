"""PyTorch's (MKL's) rate on one thread for the product of an LSTM step of text-lstm-attn at
inference, [64 x 256] . [256 x 512] (x_t and h_{t-1} side by side, W_ih and W_hh stacked), to
compare with Vitrine's step kernel. Run: BENCH_PYTHON=... $BENCH_PYTHON matmul_pytorch.py"""
import time

import torch

torch.set_num_threads(1)
h, w = torch.randn(64, 256), torch.randn(256, 512)
for _ in range(200):
    h @ w
for _ in range(3):
    started = time.perf_counter()
    for _ in range(5000):
        h @ w
    seconds = (time.perf_counter() - started) / 5000
    print(f"{2 * 64 * 256 * 512 / seconds / 1e9:.0f} GFLOP/s")
