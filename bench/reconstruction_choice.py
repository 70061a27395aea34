"""Which reconstruction model: an image autoencoder with an SSIM error map (Bergmann et al., VISAPP
2019, compact) against the engine's feature reconstruction, on the same images, size and seed.

    .venv/bin/python bench/reconstruction_choice.py --data ../shared/data/mvtec_ad --product bottle --epochs 15

Prints the whole-folder image / pixel AUROC and AUPRO of the SSIM autoencoder and its CPU fit time
(the feature-reconstruction numbers come from `manage.py benchmark --model reconstruction`).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from annotator.layouts import scan_dataset  # noqa: E402
from inference.engine import metrics, samples_from_scan  # noqa: E402
from inference.engine.common import gaussian_blur, gaussian_kernel1d  # noqa: E402
from inference.engine.data import load_image, load_masks  # noqa: E402


def ssim_map(x, y, sigma=1.5):
    """Per-pixel SSIM of (B, C, H, W) images in [0, 1] (Gaussian window, mean over channels)."""
    k = gaussian_kernel1d(sigma)
    r = (len(k) - 1) // 2
    c = x.shape[1]

    def blur(t):
        t = F.conv2d(F.pad(t, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        return F.conv2d(F.pad(t, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.mean(1, keepdim=True)


def autoencoder(latent=100):
    enc, ch = [], [3, 32, 32, 64, 64, 128, 128]
    for a, b in zip(ch, ch[1:]):
        enc += [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2)]
    dec = []
    for a, b in zip(ch[::-1], ch[::-1][1:]):
        dec += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2)]
    dec[-1] = nn.Sigmoid()
    return nn.Sequential(*enc, nn.Conv2d(128, latent, 1), nn.Conv2d(latent, 128, 1), nn.LeakyReLU(0.2), *dec)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--product", required=True)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    scan = scan_dataset(a.data)
    train, test = samples_from_scan([i for i in scan.images if i.product == a.product], key=scan.relative)
    load = lambda ss: torch.from_numpy(np.stack([load_image(s.image_path, a.size) for s in ss])).permute(0, 3, 1, 2).float() / 255
    x = load(train)
    net = autoencoder()
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, weight_decay=1e-5)
    t0 = time.perf_counter()
    for epoch in range(a.epochs):
        perm = torch.randperm(len(x))
        for s in range(0, len(x), 8):
            b = x[perm[s:s + 8]]
            loss = 1 - ssim_map(net(b), b).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    fit = time.perf_counter() - t0
    net.eval()
    maps = []
    with torch.no_grad():
        for s in test:
            b = load([s])
            m = 1 - ssim_map(net(b), b)
            maps.append(gaussian_blur(m, 4.0)[0, 0].numpy())
    maps = np.stack(maps).astype(np.float32)
    tf = metrics.threshold_free(maps, load_masks(test, a.size), np.array([s.is_anomalous for s in test]))
    print(f"{a.product} SSIM autoencoder, {a.epochs} epochs, fit {fit:.0f} s:",
          {k: round(float(v), 4) for k, v in tf.items()})


if __name__ == "__main__":
    main()
