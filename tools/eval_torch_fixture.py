#!/usr/bin/python3
"""PyTorch's side of `dfq eval pipelines/eval/mobilenetv2-fmnist-fixture.yaml`
(issue 15, docs/performance.md): the MobileNetV2 fixture of ../shared/fixtures
in its own layout (tools/bench_torch.py's MobileNetV2Fixture), evaluated on the
Fashion-MNIST test split as dfqlab evaluates it: pixels / 255, normalised with
mean 0.2860 and std 0.3530, eval mode, no gradients, in batches. Prints top-1,
the wall time of the evaluation loop and the process's peak RSS.

    /usr/bin/python3 tools/eval_torch_fixture.py [--limit N] [--batch B] [--threads T]"""
import argparse, gzip, os, resource, sys, time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import MobileNetV2Fixture, load_safetensors  # noqa: E402


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=os.path.join(here, "..", "..", "shared", "fixtures",
                                                      "mobilenetv2-fmnist-torch.safetensors"))
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    images = read_idx(os.path.join(a.data, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(a.data, "t10k-labels-idx1-ubyte.gz"))
    n = len(images) if a.limit <= 0 else min(a.limit, len(images))
    m = MobileNetV2Fixture()
    state = {k: v for k, v in load_safetensors(a.weights).items()}
    m.load_state_dict(state)
    m.eval()
    correct = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, n, a.batch):
            hi = min(n, lo + a.batch)
            x = torch.from_numpy(images[lo:hi].astype(np.float32) / 255.0).unsqueeze(1)
            x = (x - 0.2860) / 0.3530
            pred = m(x).argmax(1).numpy()
            correct += int((pred == labels[lo:hi]).sum())
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"RESULT side=torch eval images={n} batch={a.batch} threads={a.threads} top1={100.0 * correct / n:.2f} "
          f"seconds={dt:.1f} img_s={n / dt:.1f} maxrss_mib={rss:.0f}")


if __name__ == "__main__":
    main()
