"""Train-step throughput: our jitted JAX step vs the same network and loss in PyTorch.

Both sides: batch 64 of 64x64x1 images, DPSH loss (eta 0.1) on a 16-bit tanh code, Adam,
the same architecture (AlexNet-style of the published work, or ResNet-18), float32, the
same CPU threads, measured in the same process run. Prints examples/s and the ratio
JAX / PyTorch (target >= 1.0).

  pip install -r requirements-bench.txt
  python bench/train_step.py [--steps 20] [--models alexnet,resnet18] [--threads 2]
  python bench/train_step.py --layers      # where the time goes, layer by layer
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import load_guard  # bench/load_guard.py: prints the load, refuses a loaded machine

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def jax_runner(backbone: str, batch: int, size: int, *, dtype: str = "float32",
               bits: int = 16):
  """The trainer's own jitted step (`make_train_step`, donated state) on a one-device mesh,
  on random images and labels already on the device.

  Returns:
    (run, parameter count): run(steps) -> seconds for that many steps, state carried
    over between calls (the first call includes compilation).
  """
  import jax
  import numpy as np
  from dnh_jax import config_lib, losses, models, parallel, train
  from dnh_jax.data import schema as schema_lib

  config = config_lib.base_config()
  config.model.backbone, config.model.bits, config.model.classifier = backbone, bits, False
  config.model.dtype = dtype
  config.loss.name, config.train.learning_rate, config.train.grad_clip = "dpsh", 1e-4, 0.0
  config.train.schedule, config.train.warmup_steps = "constant", 0
  schema = schema_lib.multi_characteristic_schema()
  model = models.build_model(config.model, schema)
  loss_fn = losses.get_loss(config.loss)
  tx = train.make_optimizer(config.train)
  mesh = parallel.make_mesh(1)
  state, shardings = train.create_train_state(model, loss_fn, tx, mesh, (size, size, 1),
                                              jax.random.key(0))
  step = train.make_train_step(shardings, mesh, model=model, loss_fn=loss_fn, tx=tx,
                               loss_cfg=config.loss, schema=schema,
                               base_key=jax.random.key(1))
  rng = np.random.default_rng(0)
  batch_np = {"image": rng.random((batch, size, size, 1), np.float32)}
  for c in schema.characteristics:
    batch_np[c.name] = rng.integers(0, 3, batch).astype(np.int32)
  data = parallel.global_batch(batch_np, mesh)
  params = sum(x.size for x in jax.tree.leaves(state["params"]["model"]))
  carried = {"state": state}

  def run(steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
      carried["state"], metrics = step(carried["state"], data)
    jax.block_until_ready((carried["state"], metrics))
    return time.perf_counter() - t0

  return run, params


def jax_examples_per_sec(backbone: str, batch: int, size: int, steps: int) -> float:
  run, _ = jax_runner(backbone, batch, size)
  run(3)
  return steps * batch / run(steps)


def torch_model(backbone: str, bits: int):
  import torch
  from torch import nn

  if backbone == "alexnet":  # the 48..127 px stem of dnh_jax.models.backbones.AlexNet
    trunk = nn.Sequential(
        nn.Conv2d(1, 64, 5, 2, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, 1, 1), nn.ReLU(), nn.Conv2d(384, 256, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Flatten(),
        nn.Dropout(0.5), nn.LazyLinear(4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU())
  elif backbone == "resnet18":  # 48..127 px stem: 3x3 stride-2 conv + 3x3/2 max-pool
    def block(cin, cout, stride):
      body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                           nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                           nn.BatchNorm2d(cout))
      proj = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
              if stride != 1 or cin != cout else nn.Identity())

      class Block(nn.Module):
        def __init__(self):
          super().__init__()
          self.body, self.proj = body, proj

        def forward(self, x):
          return torch.relu(self.body(x) + self.proj(x))
      return Block()
    layers = [nn.Conv2d(1, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, width in enumerate((64, 128, 256, 512)):
      for j in range(2):
        layers.append(block(cin, width, 2 if i > 0 and j == 0 else 1))
        cin = width
    trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
  else:
    raise ValueError(f"--models: {backbone!r} not in ['alexnet', 'resnet18']")
  return nn.Sequential(trunk, nn.LazyLinear(bits), nn.Tanh())


def torch_dpsh_loss(h, labels, mask):
  """DPSH (eta 0.1) on real codes h [B, K]: pairs similar when all labels [B, C] agree;
  mask [B, B] drops the diagonal (the loss the JAX side's `dpsh` computes)."""
  import torch
  s = (labels[:, None, :] == labels[None, :, :]).all(-1).float()
  theta = 0.5 * h @ h.T
  nll = (torch.nn.functional.softplus(theta) - s * theta)[mask].mean()
  return nll + 0.1 * (h - torch.where(h >= 0, 1.0, -1.0)).pow(2).mean()


def torch_examples_per_sec(backbone: str, batch: int, size: int, steps: int,
                           threads: int) -> float:
  import torch
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = torch_model(backbone, 16)
  images = torch.rand(batch, 1, size, size)
  labels = torch.randint(0, 3, (batch, 3))
  model(images)  # materialise lazy layers
  opt = torch.optim.Adam(model.parameters(), lr=1e-4)
  mask = ~torch.eye(batch, dtype=torch.bool)

  def step():
    loss = torch_dpsh_loss(model(images), labels, mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  for _ in range(3):
    step()
  t0 = time.perf_counter()
  for _ in range(steps):
    step()
  return steps * batch / (time.perf_counter() - t0)


# AlexNet-style layers at 64 px (the 48..127 px stem): name, input [H, W, C] or [D],
# output channels, kernel, stride, padding (kernel 0: dense).
ALEXNET_LAYERS = (("conv1", (64, 64, 1), 64, 5, 2, 2), ("conv2", (15, 15, 64), 192, 5, 1, 2),
                  ("conv3", (7, 7, 192), 384, 3, 1, 1), ("conv4", (7, 7, 384), 256, 3, 1, 1),
                  ("conv5", (7, 7, 256), 256, 3, 1, 1), ("fc6", (2304,), 4096, 0, 0, 0),
                  ("fc7", (4096,), 4096, 0, 0, 0))


def layer_profile(batch: int, threads: int, mark: str, rounds: int = 5) -> None:
  """Prints, per AlexNet-style layer, the best-of-`rounds` time of forward + input and
  weight gradients (of the sum of squared outputs) in JAX (`fast_layers.Conv` /
  `nn.Dense`, jitted) and PyTorch (`nn.Conv2d` / `nn.Linear`): where a step's time goes."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  from dnh_jax.models import fast_layers
  torch.set_num_threads(threads)

  def best_ms(fn):
    fn()
    times = []
    for _ in range(rounds):
      t0 = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t0)
    return 1e3 * min(times)

  print(f"{'layer':<7}{'JAX ms':>9}{'PyTorch ms':>12}{'JAX/PyTorch time':>18}")
  totals = [0.0, 0.0]
  for name, shape, out, k, stride, pad in ALEXNET_LAYERS:
    x = np.random.default_rng(0).random((batch,) + shape, np.float32)
    mod = (fast_layers.Conv(out, k, strides=stride, padding=pad) if k else nn.Dense(out))
    params = mod.init(jax.random.key(0), x[:1])
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(mod.apply(p, x) ** 2), argnums=(0, 1)))
    xj = jnp.asarray(x)
    t_jax = best_ms(lambda: jax.block_until_ready(grad(params, xj)))
    layer = (torch.nn.Conv2d(shape[2], out, k, stride, pad) if k
             else torch.nn.Linear(shape[0], out))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy() if k else x).requires_grad_(True)

    def torch_step():
      layer.zero_grad()
      xt.grad = None
      (layer(xt) ** 2).sum().backward()
    t_torch = best_ms(torch_step)
    totals[0] += t_jax
    totals[1] += t_torch
    print(f"{name:<7}{t_jax:>9.1f}{t_torch:>12.1f}{t_jax / t_torch:>18.2f}{mark}", flush=True)
  print(f"{'sum':<7}{totals[0]:>9.1f}{totals[1]:>12.1f}{totals[0] / totals[1]:>18.2f}{mark}")


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--layers", action="store_true",
                 help="per-layer forward + backward times of the AlexNet-style network "
                      "(JAX vs PyTorch) instead of whole steps")
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--size", type=int, default=64)
  p.add_argument("--models", default="alexnet,resnet18")
  p.add_argument("--threads", type=int, default=os.cpu_count())
  load_guard.add_flag(p)
  args = p.parse_args()
  guard = load_guard.start(args)
  if args.layers:
    print(f"per layer, AlexNet-style at 64 px, batch {args.batch}, {args.threads} threads")
    layer_profile(args.batch, args.threads, guard.mark)
    return
  print(f"train step, batch {args.batch}, {args.size}x{args.size}x1, DPSH 16 bits, "
        f"{args.threads} threads, {args.steps} timed steps")
  print(f"{'model':<10}{'JAX ex/s':>12}{'PyTorch ex/s':>14}{'JAX/PyTorch':>13}")
  for backbone in args.models.split(","):
    j = jax_examples_per_sec(backbone, args.batch, args.size, args.steps)
    t = torch_examples_per_sec(backbone, args.batch, args.size, args.steps, args.threads)
    print(f"{backbone:<10}{j:>12.1f}{t:>14.1f}{j / t:>12.2f}x{guard.mark}", flush=True)


if __name__ == "__main__":
  main()
