"""CNTK inpainting vs biharmonic vs a trained deep-image-prior network; spatial lattice fill.

Images: Library (448 x 704) and Vase (320 x 320) with their published masks (0 = missing),
PSNR over the whole RGB image in [0, 1], as in Radhakrishnan et al. Every method runs in
its own process (spawned), so its time and peak resident memory are its own.

Spatial part: a simulated expression lattice (smooth random fields + noise), 20% of the
spots removed in square blocks, per-gene RMSE on the removed spots: CNTK
(``si.tl.inpaint`` on AnnData), nearest-neighbour averaging, biharmonic per gene.

Run: ``python benchmarks/cntk_inpainting.py [--dip-seconds 240] [--quick]``.
Writes ``benchmarks/results/cntk_inpainting.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
DATA = Path(os.environ.get("SCIMPUTE_DATA_DIR", "/work/shared/data")) / "images"
PUBLISHED = {
    "library": {"cntk": 21.73, "network": 20.76, "biharmonic": 17.71},
    "vase": {"cntk": 31.75, "network": 31.51, "biharmonic": 28.96},
}


def load(name: str):
    from PIL import Image

    img = np.asarray(Image.open(DATA / f"{name}.png").convert("RGB"), np.float32) / 255.0
    mask = np.asarray(Image.open(DATA / f"{name}_mask.png")) > 0
    if mask.ndim == 3:
        mask = mask[..., 0]
    return img, mask


def psnr(a, b) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.clip(a, 0, 1) - b) ** 2)))


# ----------------------------------------------------------------------------- methods
def run_cntk(img, mask, seed):
    import scimpute as si

    return si.tl.inpaint(img, mask, random_state=seed), {}


def run_biharmonic(img, mask, seed):
    from skimage.restoration import inpaint_biharmonic

    return inpaint_biharmonic(img, ~mask, channel_axis=-1).astype(np.float32), {}


def run_dip(img, mask, seed, seconds=240.0, width=32, depth=5, lr=1e-3):
    """Deep image prior: encoder-decoder from a meshgrid input, Adam on the observed pixels.

    Strided 3x3 conv + LeakyReLU down ``depth`` times, nearest up-sampling + conv back,
    batch-norm-free, sigmoid output (the published network column used batch norm and a
    sigmoid). Adam at ``lr=1e-3``: without batch norm, 1e-2 saturates the sigmoid within a
    few hundred steps (training MSE 0.17 on a 64 x 64 Vase crop, against 3e-4 at 1e-3).
    Trained until ``seconds`` elapse; returns the last iterate.
    """
    import jax
    import jax.numpy as jnp
    import optax

    H, W, C = img.shape
    P = 2**depth
    Hp, Wp = -(-H // P) * P, -(-W // P) * P
    gy, gx = np.meshgrid(np.linspace(0, 1, Wp), np.linspace(0, 1, Hp))
    x = jnp.asarray(np.stack([gx, gy], -1)[None], jnp.float32)
    target = jnp.asarray(np.pad(img, ((0, Hp - H), (0, Wp - W), (0, 0)))[None])
    m = jnp.asarray(np.pad(mask, ((0, Hp - H), (0, Wp - W)))[None, ..., None], jnp.float32)
    key = jax.random.PRNGKey(seed)
    shapes = [(3, 3, 2, width)] + [(3, 3, width, width)] * (2 * depth - 1) + [(1, 1, width, C)]
    keys = jax.random.split(key, len(shapes))
    params = [
        jax.random.normal(k, s) * np.sqrt(2.0 / (s[0] * s[1] * s[2]))
        for k, s in zip(keys, shapes, strict=True)
    ]
    params = [(w, jnp.zeros(w.shape[-1])) for w in params]
    dn = ("NHWC", "HWIO", "NHWC")

    def conv(h, wb, stride=1):
        w, b = wb
        return (
            jax.lax.conv_general_dilated(h, w, (stride, stride), "SAME", dimension_numbers=dn) + b
        )

    def net(params, x):
        h = x
        for i in range(depth):
            h = jax.nn.leaky_relu(conv(h, params[i], 2), 0.2)
        for i in range(depth, 2 * depth):
            h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
            h = jax.nn.leaky_relu(conv(h, params[i]), 0.2)
        return jax.nn.sigmoid(conv(h, params[-1]))

    opt = optax.adam(lr)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        def loss(p):
            return jnp.sum(m * (net(p, x) - target) ** 2) / jnp.sum(m) / C

        val, g = jax.value_and_grad(loss)(params)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state, val

    # compile once before the clock starts: the budget is for training, not for XLA
    tc = time.perf_counter()
    step = step.lower(params, state).compile()
    compile_s = time.perf_counter() - tc
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds:
        params, state, val = step(params, state)
        val.block_until_ready()  # time real steps, not queued dispatches
        n += 1
    out = np.asarray(net(params, x))[0, :H, :W]
    return out, {
        "steps": n,
        "compile_seconds": compile_s,
        "train_mse": float(val),
        "width": width,
        "depth": depth,
    }


METHODS = {"cntk": run_cntk, "biharmonic": run_biharmonic, "network": run_dip}


def _worker(method, name, seed, kwargs, q):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    img, mask = load(name)
    t0 = time.perf_counter()
    out, extra = METHODS[method](img, mask, seed, **kwargs)
    sec = time.perf_counter() - t0
    out = np.where(mask[..., None], img, out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    q.put({"psnr": psnr(out, img), "seconds": sec, "peak_mib": peak, **extra})


def in_process(method, name, seed, **kwargs):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_worker, args=(method, name, seed, kwargs, q))
    p.start()
    res = q.get()
    p.join()
    return res


# ----------------------------------------------------------------------------- spatial
def simulate_lattice(n=48, genes=30, seed=0, frac=0.2, block=6):
    rng = np.random.default_rng(seed)
    fx = np.fft.fftfreq(n)[:, None] ** 2 + np.fft.fftfreq(n)[None] ** 2
    fields = []
    for _ in range(4):
        ell = rng.uniform(4, 10)
        spec = np.exp(-0.5 * fx * (2 * np.pi * ell) ** 2)
        f = np.fft.ifft2(spec * np.fft.fft2(rng.normal(size=(n, n)))).real
        fields.append(f / f.std())
    F = np.stack(fields, -1).reshape(n * n, -1)
    load_ = rng.normal(size=(F.shape[1], genes))
    X = np.log1p(np.exp(F @ load_ + 1.0)) + 0.1 * rng.normal(size=(n * n, genes))
    hide = np.zeros((n, n), bool)
    while hide.mean() < frac:
        r, c = rng.integers(0, n - block + 1, size=2)
        hide[r : r + block, c : c + block] = True
    return X.astype(np.float32), ~hide.ravel(), n


def spatial_benchmark(seed=0):
    import anndata as ad
    from skimage.restoration import inpaint_biharmonic
    from sklearn.neighbors import NearestNeighbors

    import scimpute as si

    X, obs, n = simulate_lattice(seed=seed)
    xx, yy = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    coords = np.stack([xx.ravel(), yy.ravel()], 1).astype(float)
    a = ad.AnnData(np.where(obs[:, None], X, 0.0).astype(np.float32))
    a.obsm["spatial"] = coords
    res = {}
    t = time.perf_counter()
    si.tl.inpaint(a, obs, random_state=seed)
    res["cntk"] = (a.layers["inpaint"][~obs], time.perf_counter() - t)
    t = time.perf_counter()
    nn = NearestNeighbors(n_neighbors=6).fit(coords[obs])
    _, idx = nn.kneighbors(coords[~obs])
    res["nn_average"] = (X[obs][idx].mean(axis=1), time.perf_counter() - t)
    t = time.perf_counter()
    bh = np.stack(
        [
            inpaint_biharmonic(np.where(obs, X[:, g], 0).reshape(n, n), ~obs.reshape(n, n))
            for g in range(X.shape[1])
        ],
        -1,
    ).reshape(n * n, -1)
    res["biharmonic"] = (bh[~obs], time.perf_counter() - t)
    truth = X[~obs]
    out = {
        "lattice": f"{n} x {n}",
        "genes": X.shape[1],
        "removed": int((~obs).sum()),
        "info": {
            k: v
            for k, v in a.uns["inpaint"]["info"]["0"].items()
            if k in ("depth", "base_size", "reg", "prior", "solver")
        },
    }
    rmse = {k: np.sqrt(np.mean((v - truth) ** 2, axis=0)) for k, (v, _) in res.items()}
    for k, (_, sec) in res.items():
        out[k] = {"rmse_mean": float(rmse[k].mean()), "seconds": sec}
    for k in ("nn_average", "biharmonic"):
        out[f"cntk_beats_{k}"] = float(np.mean(rmse["cntk"] < rmse[k]))
    return out


# ----------------------------------------------------------------------------- report
def write(results, path: Path):
    path.with_suffix(".json").write_text(json.dumps(results, indent=2))
    lines = [
        "# CNTK image inpainting (issue 14)",
        "",
        f"Command: `{results['command']}`; machine load at start: {results['load']}.",
        "PSNR (dB) over the whole RGB image in [0, 1], published masks; each method in its own",
        "process (time = wall seconds, peak = max resident memory of that process).",
        "",
        "| image | method | PSNR (ours) | PSNR (published) | seconds | peak MiB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results["images"].items():
        for m in ("cntk", "network", "biharmonic"):
            x = r[m]
            lines.append(
                f"| {name} | {m} | {x['psnr']:.2f} | {PUBLISHED[name][m]:.2f} | "
                f"{x['seconds']:.0f} | {x['peak_mib']:.0f} |"
            )
    s = results["spatial"]
    lines += [
        "",
        f"Spatial lattice ({s['lattice']}, {s['genes']} genes, {s['removed']} spots removed in "
        "blocks): RMSE on the removed spots, mean over genes.",
        "",
        "| method | RMSE | seconds |",
        "| --- | --- | --- |",
    ]
    for m in ("cntk", "nn_average", "biharmonic"):
        lines.append(f"| {m} | {s[m]['rmse_mean']:.4f} | {s[m]['seconds']:.1f} |")
    lines += [
        "",
        f"CNTK has the lower RMSE than nearest-neighbour averaging on "
        f"{100 * s['cntk_beats_nn_average']:.0f}% of genes and than biharmonic on "
        f"{100 * s['cntk_beats_biharmonic']:.0f}%.",
        "",
        "Notes: " + results["notes"],
    ]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


NOTES = (
    "CNTK = `si.tl.inpaint` defaults: the published 6-level encoder-decoder (LeakyReLU 0.01, "
    "nearest up-sampling, circular padding), stationary fixed-input covariance, kernel at "
    "128 x 128 expanded to the image as in the published expander, then averaged over the "
    "64 x 64 anchor phases (a stationary kernel; distance to the expanded kernel recorded "
    "in the JSON) and solved by preconditioned CG with FFT products; ridge chosen by "
    "held-out blocks of observed pixels. The published kernel regression used the expanded "
    "kernel itself with EigenPro on a GPU and an unstated fixed input; the network column "
    "here is a small batch-norm-free DIP trained for a fixed time budget on 2 CPU cores, "
    "not the published network."
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dip-seconds", type=float, default=240.0)
    ap.add_argument("--images", nargs="*", default=["library", "vase"])
    ap.add_argument("--out", default=str(HERE / "results" / "cntk_inpainting"))
    args = ap.parse_args()
    results = {
        "command": "python benchmarks/cntk_inpainting.py"
        + (f" --dip-seconds {args.dip_seconds:g}" if args.dip_seconds != 240 else ""),
        "load": os.getloadavg()[0],
        "published": PUBLISHED,
        "notes": NOTES,
        "images": {},
    }
    for name in args.images:
        r = {}
        for m in ("cntk", "biharmonic", "network"):
            kw = {"seconds": args.dip_seconds} if m == "network" else {}
            r[m] = in_process(m, name, 0, **kw)
            print(name, m, r[m], flush=True)
        results["images"][name] = r
    results["spatial"] = spatial_benchmark()
    print(results["spatial"], flush=True)
    write(results, Path(args.out))


if __name__ == "__main__":
    main()
