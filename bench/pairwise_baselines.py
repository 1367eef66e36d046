"""DPSH and DSH: our JAX losses against PyTorch implementations written from the papers.

Same data (MedPhantom of `configs/baseline.py:quick`, the same batches in the same order
and augmentation, from `dnh_jax.data.batching.Batcher`), same network (a PyTorch twin of
the small CNN + dense hash layer), same optimiser (Adam, warmup + cosine), steps, batch and
seeds; test mAP@100 with relevance = same (modality, organ, disease), Hamming ranking.

PyTorch side, following DeepHash-pytorch's DPSH and DSH:
  * DPSH (Li, Wang and Kang, IJCAI 2016): theta_ij = u_i.U_j / 2, loss = mean
    [log(1 + e^theta) - s theta] + eta mean (u - sign u)^2;
  * DSH (Liu, Wang, Shan and Chen, CVPR 2016): mean [s D / 2 + (1 - s) max(2K - D, 0) / 2]
    + alpha mean ||u| - 1|, D = |u_i - U_j|^2;
  * `--bank`: pairs between the batch and a memory bank U of the latest code of every
    training example (zeros until first seen), as DeepHash-pytorch does; otherwise pairs
    within the batch (the library's form);
  * `--codes linear|tanh`: u the hash layer's linear output (DeepHash-pytorch) or tanh;
  * `--balance 1`: similar / dissimilar pairs re-weighted to equal total weight.

  python bench/pairwise_baselines.py --loss dpsh --steps 600 --seeds 0,1 \\
      [--bank] [--codes linear] [--balance 1] [--jax]

`--jax` also runs the library's loss (`train.train_and_evaluate`) with the same settings.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import numpy as np

import load_guard  # bench/load_guard.py: prints the load, refuses a loaded machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def base_config(args, seed: int):
  """configs/baseline.py:quick with the loss form of the command line (`plain` + flags)."""
  loss, steps = args.loss, args.steps
  spec = importlib.util.spec_from_file_location("baseline_cfg",
                                                os.path.join(ROOT, "configs", "baseline.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(f"loss={loss},quick,plain")
  c.seed = seed
  c.train.steps, c.train.eval_every, c.train.checkpoint_every = steps, steps, steps
  c.train.log_every = max(steps // 6, 1)
  c.loss.weights.balance = args.balance
  if loss == "dpsh":
    c.loss.weights.cosine, c.loss.weights.eta = float(args.cosine), args.eta
  else:
    c.loss.weights.linear = float(args.codes == "linear")
  if args.lr:
    c.train.learning_rate = args.lr
  return c


def torch_net(size: int, bits: int):
  """Twin of dnh_jax.models.backbones.SmallCNN (widths 24, 48, 96) + dense hash layer."""
  import math
  from torch import nn
  layers, cin = [], 1
  widths = (24, 48, 96)
  for i in range(max(len(widths), math.ceil(math.log2(size / 8)))):
    w = widths[min(i, len(widths) - 1)]
    layers += [nn.Conv2d(cin, w, 3, 2, 1), nn.ReLU()]
    cin, size = w, (size + 1) // 2
  return nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * size * size, 256), nn.ReLU(),
                       nn.Linear(256, bits))


def map_at_k(q_codes, q_labels, g_codes, g_labels, k=100):
  from dnh_jax.evaluation import metrics
  qb, gb = np.sign(q_codes) >= 0, np.sign(g_codes) >= 0
  dist = (qb[:, None, :] != gb[None, :, :]).sum(-1)
  rel = (q_labels[:, None, :] == g_labels[None, :, :]).all(-1)
  return float(metrics.average_precision(dist, rel, k=k).mean())


def run_torch(args, seed: int) -> tuple[float, float, float]:
  """(test mAP@100, mean loss of the last tenth of the steps, seconds)."""
  import torch
  from dnh_jax import data as data_lib
  from dnh_jax import train
  from dnh_jax.data import batching
  torch.set_num_threads(args.threads)
  torch.manual_seed(seed)
  c = base_config(args, seed)
  data_dir = train.default_data_dir(c)
  splits = data_lib.load_splits(c.data, seed=c.seed, data_dir=data_dir)
  names = splits.schema.names
  tr = splits.data["train"]
  batcher = batching.Batcher(tr, c.train.batch_size, seed=c.seed, augment=c.data.augment)
  y_all = torch.from_numpy(np.stack([tr.labels[n] for n in names], 1).astype(np.int64))
  net = torch_net(c.data.image_size, c.model.bits)
  opt = torch.optim.Adam(net.parameters(), lr=args.lr or c.train.learning_rate)
  warm, steps = c.train.warmup_steps, c.train.steps
  sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, t / max(warm, 1)) * (
      0.5 * (1 + np.cos(np.pi * min(max(t - warm, 0) / max(steps - warm, 1), 1.0)))))
  bank = torch.zeros(len(tr), c.model.bits)
  k = c.model.bits
  losses, t0 = [], time.perf_counter()
  for step in range(steps):
    idx = torch.from_numpy(batcher.indices(step))
    b = batcher.batch(step)
    x = torch.from_numpy(b["image"]).permute(0, 3, 1, 2)
    z = net(x)
    u = z if args.codes == "linear" else torch.tanh(z)
    y = y_all[idx]
    if args.bank:
      bank[idx] = u.detach()
      other, y_other = bank, y_all
      mask = torch.ones(len(idx), len(tr))
      mask[torch.arange(len(idx)), idx] = 0
    else:
      other, y_other = u, y
      mask = 1 - torch.eye(len(idx))
    s = (y[:, None, :] == y_other[None, :, :]).all(-1).float()
    w = torch.ones_like(s)
    if args.balance:
      total, sim = (mask).sum(), (mask * s).sum()
      bal = torch.where(s > 0.5, total / sim.clamp(min=1), total / (total - sim).clamp(min=1))
      w = (1 - args.balance) + args.balance * bal
    if args.loss == "dpsh":
      if args.cosine:   # logits on cosines: no gradient along h_i itself (no shrinking)
        un = torch.nn.functional.normalize(u, dim=1)
        on = un if other is u else torch.nn.functional.normalize(other, dim=1)
        theta = args.theta_scale * k * un @ on.T
      else:
        theta = args.theta_scale * u @ other.T
      pair = torch.nn.functional.softplus(theta) - s * theta
      reg = args.eta * (u - torch.sign(u)).pow(2).mean()
    else:
      d = (u.pow(2).sum(1)[:, None] + other.pow(2).sum(1)[None, :] - 2 * u @ other.T).clamp(min=0)
      pair = 0.5 * s * d + 0.5 * (1 - s) * (2 * k - d).clamp(min=0)
      reg = 0.01 * (u.abs() - 1).abs().sum(1).mean()
    loss = (w * pair * mask).sum() / mask.sum() + reg
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), c.train.grad_clip)
    opt.step()
    sched.step()
    losses.append(float(loss.detach()))
  seconds = time.perf_counter() - t0
  net.eval()

  def encode(split):
    with torch.no_grad():
      x = torch.from_numpy(batching.images_to_float(split.images)).permute(0, 3, 1, 2)
      return net(x).numpy()

  def labels(split):
    return np.stack([split.labels[n] for n in names], 1)

  q, g = splits.data["query"], splits.data["gallery"]
  m = map_at_k(encode(q), labels(q), encode(g), labels(g))
  return m, float(np.mean(losses[-max(steps // 10, 1):])), seconds


def run_jax(args, seed: int) -> tuple[float, float]:
  import tempfile
  from dnh_jax import train
  if args.bank or args.theta_scale != 0.5 or (args.loss == "dpsh" and args.codes == "linear"):
    raise SystemExit("--jax: the library has no memory bank, theta scale or linear DPSH")
  c = base_config(args, seed)
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory() as workdir:
    results = train.train_and_evaluate(c, workdir)
  return results["test/mAP@100"], time.perf_counter() - t0


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--loss", choices=("dpsh", "dsh"), default="dpsh")
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--seeds", default="0")
  p.add_argument("--bank", action="store_true")
  p.add_argument("--codes", choices=("tanh", "linear"), default="tanh")
  p.add_argument("--balance", type=float, default=0.0)
  p.add_argument("--theta-scale", type=float, default=0.5,
                 help="DPSH logit scale (paper: 1/2 of the inner product)")
  p.add_argument("--eta", type=float, default=0.1, help="DPSH quantization weight")
  p.add_argument("--cosine", action="store_true", help="DPSH logits on code cosines")
  p.add_argument("--lr", type=float, default=0.0, help="0: the config's (1e-3)")
  p.add_argument("--threads", type=int, default=1)
  p.add_argument("--jax", action="store_true")
  load_guard.add_flag(p)
  args = p.parse_args()
  load_guard.start(args)   # the mAP figures do not depend on load, the seconds do
  print(f"{args.loss} {args.steps} steps, bank={args.bank}, codes={args.codes}, "
        f"balance={args.balance}")
  for seed in [int(s) for s in args.seeds.split(",")]:
    m, last, sec = run_torch(args, seed)
    line = f"seed {seed}: PyTorch test mAP@100 {m:.3f} (last-tenth loss {last:.3f}, {sec:.0f} s)"
    if args.jax:
      mj, secj = run_jax(args, seed)
      line += f" | JAX {mj:.3f} ({secj:.0f} s)"
    print(line, flush=True)


if __name__ == "__main__":
  main()
