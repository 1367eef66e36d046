"""Independent sub-networks: how to compute the stacked backbones (vmap vs unrolled).

The independent head (`dnh_jax.models.independent`) stacks the C = 3 backbones' parameters
on one axis and computes them either with `jax.vmap` (batched, grouped convolutions) or
unrolled over static slices (C plain convolutions per layer). This measures one jitted
train step (forward, the configs/untrained_combo.py loss, backward, Adam) of each, plus
the shared-trunk structured model as the one-backbone reference, in the same process, and
prints ms/step and the ratios. `model.stack_compute = "auto"` picks "unrolled" on CPU and
"vmap" elsewhere from these numbers.

  python bench/independent_stack.py [--steps 20] [--sizes 32,64] [--batch 64]
      [--backbones small_cnn,resnet18]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import load_guard  # bench/load_guard.py: prints the load, refuses a loaded machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def load_config(arg: str):
  spec = importlib.util.spec_from_file_location(
      "untrained_combo_cfg", os.path.join(ROOT, "configs", "untrained_combo.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def ms_per_step(arg: str, backbone: str, size: int, batch: int, steps: int) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from dnh_jax import losses, models  # pylint: disable=g-import-not-at-top
  from dnh_jax.data import schema as schema_lib  # pylint: disable=g-import-not-at-top

  config = load_config(f"{arg},backbone={backbone}")
  schema = schema_lib.multi_characteristic_schema()
  model = models.build_model(config.model, schema)
  loss_fn = losses.get_loss(config.loss, schema)
  tx = optax.adam(1e-3)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.random((batch, size, size, 1), np.float32))
  labels = {c.name: jnp.asarray(rng.integers(0, c.size, batch), jnp.int32)
            for c in schema.characteristics}
  variables = jax.jit(model.init)({"params": jax.random.key(0)}, images)
  params, stats = variables["params"], variables.get("batch_stats", {})
  opt_state = tx.init(params)

  @jax.jit
  def step(params, stats, opt_state, images, labels, key):
    def objective(p):
      v = {"params": p, **({"batch_stats": stats} if stats else {})}
      out, upd = model.apply(v, images, train=True, rngs={"dropout": key},
                             mutable=["batch_stats"])
      loss, _ = loss_fn(out, labels, cfg=config.loss, schema=schema, step=jnp.int32(0),
                        key=key)
      return loss, upd.get("batch_stats", stats)
    (loss, stats), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  key = jax.random.key(1)
  for _ in range(3):
    params, stats, opt_state, loss = step(params, stats, opt_state, images, labels, key)
  jax.block_until_ready(loss)
  t0 = time.perf_counter()
  for _ in range(steps):
    params, stats, opt_state, loss = step(params, stats, opt_state, images, labels, key)
  jax.block_until_ready(loss)
  if not np.isfinite(float(loss)):
    raise FloatingPointError(f"{arg}: non-finite loss")
  return 1000.0 * (time.perf_counter() - t0) / steps


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--sizes", default="32,64")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--backbones", default="small_cnn,resnet18")
  load_guard.add_flag(parser)
  args = parser.parse_args()
  load_guard.start(args)
  import jax  # pylint: disable=g-import-not-at-top
  print(f"backend {jax.default_backend()}: {jax.devices()[0].device_kind}; batch "
        f"{args.batch}, {args.steps} timed steps after 3 warm-ups", flush=True)
  variants = {"independent/vmap": "model=independent,stack_compute=vmap",
              "independent/unrolled": "model=independent,stack_compute=unrolled",
              "structured (1 trunk)": "model=structured"}
  print(f"{'backbone':<10}{'px':>5}" + "".join(f"{v:>24}" for v in variants)
        + f"{'vmap/unrolled':>15}{'unrolled/struct':>17}", flush=True)
  for backbone in args.backbones.split(","):
    for size in (int(s) for s in args.sizes.split(",")):
      ms = {v: ms_per_step(a, backbone, size, args.batch, args.steps)
            for v, a in variants.items()}
      print(f"{backbone:<10}{size:>5}" + "".join(f"{ms[v]:>21.1f} ms" for v in variants)
            + f"{ms['independent/vmap'] / ms['independent/unrolled']:>15.2f}"
            + f"{ms['independent/unrolled'] / ms['structured (1 trunk)']:>17.2f}",
            flush=True)


if __name__ == "__main__":
  main()
