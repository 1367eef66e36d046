"""Differentiable fuzzy inference layer (Takagi-Sugeno / ANFIS style) before the hash layer.

Three stages, each a pure function of arrays so they can be tested and inspected alone:

1. fuzzification: the trunk features x [B, F] are projected to M antecedent inputs
   z = tanh(BN(W x + b)) in (-1, 1) (the batch normalisation is optional); rule r has
   one membership function per input, mu_mr(z_m), Gaussian exp(-(z - c)^2 / 2 s^2) or
   generalized bell 1 / (1 + |(z - c) / a|^(2 b)), evaluated in log space;
2. rule base: the firing strength of rule r is a t-norm over its M memberships - the
   product (a sum of log memberships, which never underflows) or a soft minimum - times a
   learnable rule weight w_r > 0; firing strengths are normalised over the R rules with a
   softmax of the log strengths (the normalisation of ANFIS layer 3, computed stably);
3. defuzzification: Takagi-Sugeno, the firing-weighted average of R learnable linear
   consequents y_r = A_r u + b_r (u = the M inputs, or the trunk features); or centroid,
   the centroid of the sum of the rules' scaled Gaussian output sets (Kosko's standard
   additive model: y = sum_r f_r s_r v_r / sum_r f_r s_r, with output-set centres v_r and
   widths s_r, since a Gaussian set's area is proportional to its width).

The output [B, D] is the input of the hash layer. `FuzzyInference` returns it with its
state (inputs, memberships, firing strengths) and also sows that state into Flax's
"intermediates" collection; `FuzzyPreHash` is the array-only form that plugs into
`heads.HashLayer(pre_hash=...)` (wired by `pre_hash_factory` when model.fuzzy is True),
and `fuzzy_states(model, variables, images)` runs any such model and returns the outputs
with outputs["fuzzy"] = {layer path: state}. With model.fuzzy=False the network is the
same minus this layer (the hash layer reads the trunk features directly).

References:
  Takagi & Sugeno, "Fuzzy identification of systems and its applications to modeling and
  control", IEEE SMC 1985.
  Jang, "ANFIS: adaptive-network-based fuzzy inference system", IEEE SMC 1993.
  Kosko, "Fuzzy Engineering", Prentice Hall 1997 (standard additive model).
  Wu, Yuan, Huang & Tan, "Optimize TSK fuzzy systems for regression problems: mini-batch
  gradient descent with regularization, DropRule and AdaBound (MBGD-RDA)", IEEE TFS 2020.
  Cui, Wu & Huang, "Optimize TSK fuzzy systems for classification problems: mini-batch
  gradient descent with uniform regularization and batch normalization", IEEE TFS 2020.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
# Widths are softplus(raw) + _MIN_WIDTH: positive, and bounded away from 0 so that a
# membership never degenerates into a spike with an exploding gradient.
_MIN_WIDTH = 1e-3
# Added to squared distances inside the bell's power so the log has a finite gradient at
# the centre (|u|^(2b) = exp(b log u^2) has an infinite d/du of log u^2 at u = 0).
_BELL_EPS = 1e-12


def positive(raw: jnp.ndarray) -> jnp.ndarray:
  """softplus(raw) + 1e-3: the positive width/shape parameterisation used throughout."""
  return jax.nn.softplus(raw) + _MIN_WIDTH


def inverse_positive(value: np.ndarray | float) -> np.ndarray:
  """The raw parameter whose `positive` is `value` (value > 1e-3)."""
  v = np.asarray(value, np.float64) - _MIN_WIDTH
  if np.any(v <= 0):
    raise ValueError(f"positive parameters must exceed {_MIN_WIDTH}; got {value}")
  return (v + np.log(-np.expm1(-v))).astype(np.float32)  # log(exp(v) - 1), stably


# ----------------------------------------------------------------------------- stage 1

def gaussian_log_membership(z: jnp.ndarray, centres: jnp.ndarray, widths: jnp.ndarray,
                            shapes: jnp.ndarray | None = None) -> jnp.ndarray:
  """log of the Gaussian membership exp(-(z - c)^2 / (2 s^2)).

  Args:
    z: float[B, M] antecedent inputs.
    centres: float[M, R] centre c of rule r's membership function on input m.
    widths: float[M, R] positive widths s.
    shapes: unused (the bell's exponent); accepted for a uniform signature.

  Returns:
    float[B, M, R] log memberships (<= 0).
  """
  del shapes
  u = (z[:, :, None] - centres[None]) / widths[None]
  return -0.5 * jnp.square(u)


def bell_log_membership(z: jnp.ndarray, centres: jnp.ndarray, widths: jnp.ndarray,
                        shapes: jnp.ndarray) -> jnp.ndarray:
  """log of the generalized bell membership 1 / (1 + |(z - c) / a|^(2 b)).

  Computed as -softplus(b * log(u^2)), u = (z - c) / a, which is exact and stable far
  from the centre (no overflow of |u|^(2b)).

  Args:
    z: float[B, M] antecedent inputs.
    centres: float[M, R] centres c.
    widths: float[M, R] positive half-widths a (the membership is 1/2 at |z - c| = a).
    shapes: float[M, R] positive exponents b (steepness of the shoulders).

  Returns:
    float[B, M, R] log memberships (<= 0).
  """
  u2 = jnp.square((z[:, :, None] - centres[None]) / widths[None])
  return -jax.nn.softplus(shapes[None] * jnp.log(u2 + _BELL_EPS))


MEMBERSHIPS: dict[str, Callable[..., jnp.ndarray]] = {
    "gaussian": gaussian_log_membership,
    "bell": bell_log_membership,
}


# ----------------------------------------------------------------------------- stage 2

def product_tnorm(log_memberships: jnp.ndarray, temperature: float = 1.0) -> jnp.ndarray:
  """Product t-norm over the inputs, in log space: log prod_m mu_mr = sum_m log mu_mr.

  Args:
    log_memberships: float[B, M, R].
    temperature: unused (soft-min only).

  Returns:
    float[B, R] log firing strengths (unnormalised, before rule weights).
  """
  del temperature
  return jnp.sum(log_memberships, axis=1)


def softmin_tnorm(log_memberships: jnp.ndarray, temperature: float = 0.1) -> jnp.ndarray:
  """Soft minimum over the inputs, in log space: -t log sum_m exp(-log mu_mr / t).

  It lies in [min_m log mu - t log M, min_m log mu] and tends to the minimum t-norm as
  t -> 0, with a gradient shared among the near-minimal memberships instead of only one.

  Args:
    log_memberships: float[B, M, R].
    temperature: t > 0, in log-membership units.

  Returns:
    float[B, R] log firing strengths (unnormalised, before rule weights).
  """
  if temperature <= 0:
    raise ValueError(f"soft-min temperature must be > 0, got {temperature}")
  return -temperature * jax.nn.logsumexp(-log_memberships / temperature, axis=1)


TNORMS: dict[str, Callable[..., jnp.ndarray]] = {
    "product": product_tnorm,
    "softmin": softmin_tnorm,
}


def normalized_firing(log_firing: jnp.ndarray, log_rule_weights: jnp.ndarray) -> jnp.ndarray:
  """Normalised weighted firing strengths w_r f_r / sum_s w_s f_s, from logs.

  Args:
    log_firing: float[B, R] log f_r.
    log_rule_weights: float[R] log w_r.

  Returns:
    float[B, R], non-negative, each row summing to 1.
  """
  return jax.nn.softmax(log_firing + log_rule_weights[None], axis=-1)


# ----------------------------------------------------------------------------- stage 3

def tsk_defuzzify(firing: jnp.ndarray, inputs: jnp.ndarray, slopes: jnp.ndarray,
                  intercepts: jnp.ndarray) -> jnp.ndarray:
  """Takagi-Sugeno output sum_r f_r (A_r u + b_r) with first-order consequents.

  Args:
    firing: float[B, R] normalised firing strengths.
    inputs: float[B, P] consequent inputs u.
    slopes: float[R, P, D] A_r.
    intercepts: float[R, D] b_r.

  Returns:
    float[B, D].
  """
  b, r = firing.shape
  p = inputs.shape[-1]
  # One [B, R*P] x [R*P, D] matmul instead of R separate consequents.
  mixed = (firing[:, :, None] * inputs[:, None, :]).reshape(b, r * p)
  return mixed @ slopes.reshape(r * p, -1) + firing @ intercepts


def centroid_defuzzify(firing: jnp.ndarray, centres: jnp.ndarray,
                       widths: jnp.ndarray) -> jnp.ndarray:
  """Centroid of the sum of the rules' Gaussian output sets, scaled by firing strength.

  Output set of rule r on output d: a Gaussian with centre v_rd and width s_rd, whose
  area is s_rd sqrt(2 pi); the centroid of sum_r f_r * set_rd is therefore
  sum_r f_r s_rd v_rd / sum_r f_r s_rd (the sqrt(2 pi) cancels).

  Args:
    firing: float[B, R] normalised firing strengths.
    centres: float[R, D] output-set centres v.
    widths: float[R, D] positive output-set widths s.

  Returns:
    float[B, D].
  """
  return (firing @ (widths * centres)) / (firing @ widths)


DEFUZZIFIERS = ("tsk", "centroid")
INTERMEDIATES = "intermediates"
STATE_NAME = "fuzzy_state"
CONSEQUENT_INPUTS = ("features", "inputs")


def _check(flag: str, value, valid):
  if value not in valid:
    raise ValueError(f"{flag}={value!r} is not valid; choose one of {sorted(valid)}")


def check_fields(membership: str, tnorm: str, defuzzifier: str, consequent_inputs: str,
                 num_inputs: int, num_rules: int) -> None:
  """Raises a ValueError naming the config field (model.fuzzy_*) and the valid choices."""
  _check("model.fuzzy_membership", membership, MEMBERSHIPS)
  _check("model.fuzzy_tnorm", tnorm, TNORMS)
  _check("model.fuzzy_defuzzifier", defuzzifier, DEFUZZIFIERS)
  _check("model.fuzzy_consequent_inputs", consequent_inputs, CONSEQUENT_INPUTS)
  if num_inputs < 1 or num_rules < 1:
    raise ValueError(f"model.fuzzy_inputs={num_inputs} and model.fuzzy_rules={num_rules} "
                     "must both be >= 1")


def spread_centres(key: jax.Array, num_inputs: int, num_rules: int,
                   low: float = -0.8, high: float = 0.8) -> jnp.ndarray:
  """Initial centres [M, R]: on each input the R rules sit on an even grid over
  [low, high] of the tanh range, in an independent random order per input (a Latin
  hypercube), so the rules cover the input cube instead of lining up on its diagonal."""
  grid = jnp.linspace(low, high, num_rules) if num_rules > 1 else jnp.zeros([1])
  # argsort of uniforms: an independent permutation per row, far cheaper to compile than
  # a vmapped jax.random.permutation.
  perms = jnp.argsort(jax.random.uniform(key, (num_inputs, num_rules)), axis=1)
  return grid[perms].astype(jnp.float32)


class FuzzyInference(nn.Module):
  """Fuzzification -> rule base -> defuzzification; features [B, F] -> [B, D] and state.

  Attributes:
    num_inputs: M antecedent inputs (a learned projection of the features).
    num_rules: R rules.
    membership: key of MEMBERSHIPS ("gaussian" | "bell").
    tnorm: key of TNORMS ("product" | "softmin").
    defuzzifier: "tsk" (linear consequents) | "centroid" (output-set centroid).
    output_dim: D, width of the output (the hash layer's input); 0 = feature width F.
    consequent_inputs: what the TSK consequents read: "inputs" (the M antecedent inputs
      z, classic first-order TSK: R x M x D consequent weights) or "features" (the trunk
      features x: R x F x D weights, several times the trunk's parameters at F = D = 256).
    softmin_temperature: temperature of the soft-min t-norm.
    init_width: initial membership width s (or bell half-width a), in tanh units.
    normalize_inputs: batch-normalise the projection before the tanh (adds
      "batch_stats"; running averages in evaluation).
    dtype: compute dtype of the projection and consequents; memberships, rules and the
      output use at least float32.
  """

  num_inputs: int = 8
  num_rules: int = 16
  membership: str = "gaussian"
  tnorm: str = "product"
  defuzzifier: str = "tsk"
  output_dim: int = 0
  consequent_inputs: str = "inputs"
  softmin_temperature: float = 0.1
  init_width: float = 0.5
  normalize_inputs: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jnp.ndarray, train: bool = False):
    """Args: features float[B, F]. Returns (output float32[B, D], state dict).

    state: "inputs" [B, M], "log_memberships" [B, M, R], "log_firing" [B, R] (the t-norm
    plus log rule weight, unnormalised), "firing" [B, R] (normalised).
    """
    check_fields(self.membership, self.tnorm, self.defuzzifier, self.consequent_inputs,
                 self.num_inputs, self.num_rules)
    m, r = self.num_inputs, self.num_rules
    out_dim = self.output_dim or features.shape[-1]
    # Memberships and firing strengths in at least float32 (exp/log of sums of squares
    # lose too much in bfloat16); float64 when the module's dtype is (gradient checks).
    fdt = jnp.promote_types(self.dtype, jnp.float32)
    a = nn.Dense(m, dtype=self.dtype, name="projection")(features)
    if self.normalize_inputs:
      # Standardised before the tanh, each input spans most of (-1, 1) from the first step
      # and so meets the centres spread over [-0.8, 0.8] (Cui, Wu & Huang 2020: batch
      # normalisation makes gradient-trained TSK systems train fast and robustly).
      a = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                       name="input_norm")(a)
    z = jnp.tanh(a).astype(fdt)

    centres = self.param("centres", lambda k: spread_centres(k, m, r))
    raw_widths = self.param("raw_widths", nn.initializers.constant(
        inverse_positive(self.init_width)), (m, r))
    # Bell exponent b = 1 initially: shoulders like a Cauchy kernel, heavier than Gaussian.
    raw_shapes = (self.param("raw_shapes", nn.initializers.constant(inverse_positive(1.0)),
                             (m, r)) if self.membership == "bell" else None)
    log_rule_weights = self.param("log_rule_weights", nn.initializers.zeros, (r,))

    log_mu = MEMBERSHIPS[self.membership](
        z, centres.astype(fdt), positive(raw_widths.astype(fdt)),
        None if raw_shapes is None else positive(raw_shapes.astype(fdt)))
    log_strength = TNORMS[self.tnorm](log_mu, self.softmin_temperature)
    firing = normalized_firing(log_strength, log_rule_weights.astype(fdt))
    log_firing = log_strength + log_rule_weights.astype(fdt)

    if self.defuzzifier == "tsk":
      u = features if self.consequent_inputs == "features" else z
      p = u.shape[-1]
      # Every rule starts from the same lecun-normal map plus a small rule-specific part,
      # so at initialisation the layer behaves like one dense layer and the rules
      # differentiate with training instead of adding R-fold variance.
      base = self.param("consequent_base", nn.initializers.lecun_normal(), (p, out_dim))
      slopes = self.param("consequent_slopes",
                          nn.initializers.normal(0.1 / math.sqrt(p)), (r, p, out_dim))
      intercepts = self.param("consequent_intercepts", nn.initializers.zeros, (r, out_dim))
      y = tsk_defuzzify(firing.astype(self.dtype), u.astype(self.dtype),
                        (base[None] + slopes).astype(self.dtype), intercepts.astype(self.dtype))
    else:
      out_centres = self.param("output_centres", nn.initializers.normal(1.0), (r, out_dim))
      raw_out_widths = self.param("raw_output_widths", nn.initializers.constant(
          inverse_positive(1.0)), (r, out_dim))
      y = centroid_defuzzify(firing, out_centres.astype(fdt),
                             positive(raw_out_widths.astype(fdt)))
    state = {"inputs": z, "log_memberships": log_mu, "log_firing": log_firing,
             "firing": firing}
    # Exposed through Flax's "intermediates" collection (a no-op unless the caller makes it
    # mutable), so the hash heads need not carry it: see `fuzzy_states`.
    self.sow(INTERMEDIATES, STATE_NAME, state, init_fn=dict, reduce_fn=lambda _, new: new)
    return y.astype(fdt), state


class FuzzyPreHash(nn.Module):
  """`FuzzyInference` returning only its output: the `pre_hash` form for HashLayer.

  Attributes:
    fuzzy_kwargs: keyword arguments of FuzzyInference, as a tuple of (name, value) pairs
      (hashable, as Flax module fields must be).
  """

  fuzzy_kwargs: tuple = ()

  @nn.compact
  def __call__(self, features: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    y, _ = FuzzyInference(**dict(self.fuzzy_kwargs), name="fis")(features, train)
    return y


def fuzzy_kwargs_from_config(model_cfg) -> dict:
  """FuzzyInference keyword arguments from `config.model` (fuzzy_* fields).

  Reads fuzzy_inputs, fuzzy_rules, fuzzy_membership (base config) and, when present,
  fuzzy_tnorm, fuzzy_defuzzifier, fuzzy_output_dim, fuzzy_consequent_inputs,
  fuzzy_softmin_temperature, fuzzy_init_width, fuzzy_normalize_inputs. Invalid names
  raise a ValueError naming the config field and the valid choices, at model-build time.
  """
  get = model_cfg.get
  kwargs = dict(num_inputs=int(model_cfg.fuzzy_inputs), num_rules=int(model_cfg.fuzzy_rules),
                membership=str(model_cfg.fuzzy_membership),
                tnorm=str(get("fuzzy_tnorm", "product")),
                defuzzifier=str(get("fuzzy_defuzzifier", "tsk")),
                output_dim=int(get("fuzzy_output_dim", 0)),
                consequent_inputs=str(get("fuzzy_consequent_inputs", "inputs")),
                softmin_temperature=float(get("fuzzy_softmin_temperature", 0.1)),
                init_width=float(get("fuzzy_init_width", 0.5)),
                normalize_inputs=bool(get("fuzzy_normalize_inputs", True)))
  check_fields(kwargs["membership"], kwargs["tnorm"], kwargs["defuzzifier"],
               kwargs["consequent_inputs"], kwargs["num_inputs"], kwargs["num_rules"])
  if kwargs["softmin_temperature"] <= 0 or kwargs["init_width"] <= 2 * _MIN_WIDTH:
    raise ValueError(f"model.fuzzy_softmin_temperature={kwargs['softmin_temperature']} and "
                     f"model.fuzzy_init_width={kwargs['init_width']} must be > 0")
  return kwargs


def pre_hash_factory(model_cfg) -> Callable[..., nn.Module] | None:
  """The `pre_hash` factory for `heads.HashLayer`: None when model.fuzzy is False."""
  if not model_cfg.fuzzy:
    return None
  return functools.partial(FuzzyPreHash, tuple(sorted(fuzzy_kwargs_from_config(
      model_cfg).items())))


_PARAM_KEYS = ("centres", "raw_widths", "log_rule_weights")


def find_fuzzy_params(params: Mapping[str, Any]) -> dict[str, dict]:
  """Every fuzzy layer's parameter subtree in a model's params, by '/'-joined path.

  Args:
    params: a Flax parameter tree (variables["params"]).

  Returns:
    {path: subtree} for each subtree holding "centres", "raw_widths" and
    "log_rule_weights" (one per hash layer with a fuzzy layer; the structured head has
    one per characteristic). The path is also the layer's key in outputs["fuzzy"].
  """
  found = {}

  def walk(node, path):
    if not isinstance(node, Mapping):
      return
    if all(k in node for k in _PARAM_KEYS):
      found["/".join(path)] = dict(node)
      return
    for key in sorted(node):
      walk(node[key], path + (str(key),))

  walk(params, ())
  return found


@functools.lru_cache(maxsize=8)
def _apply_with_intermediates(model: nn.Module) -> Callable:
  # One compiled forward pass per model (Flax modules are hashable dataclasses).
  return jax.jit(functools.partial(model.apply, train=False, mutable=[INTERMEDIATES]))


def fuzzy_states(model: nn.Module, variables, images: jnp.ndarray) -> dict:
  """Evaluation-mode forward pass that also returns every fuzzy layer's state.

  Args:
    model: a network from `dnh_jax.models.build_model` (any head) with model.fuzzy=True.
    variables: its variables ({"params", ["batch_stats"]}).
    images: float32[B, H, W, 1].

  Returns:
    The model's output dict plus outputs["fuzzy"] = {path: state}, one entry per fuzzy
    layer ('/'-joined module path, e.g. "head/hash/pre_hash/fis", which is also where its
    parameters live under variables["params"]); state as returned by FuzzyInference.

  Raises:
    ValueError: the model has no fuzzy layer.
  """
  if not find_fuzzy_params(variables["params"]):
    raise ValueError("fuzzy_states: the model has no fuzzy inference layer "
                     "(build it with model.fuzzy=True)")
  outputs, sown = _apply_with_intermediates(model)(variables, images)
  found = {}

  def walk(node, path):
    if not isinstance(node, Mapping):
      return
    for key in node:
      if key == STATE_NAME:
        found["/".join(path)] = node[key]
      else:
        walk(node[key], path + (str(key),))

  walk(sown.get(INTERMEDIATES, {}), ())
  if not found:
    raise ValueError("fuzzy_states: the model has no fuzzy inference layer "
                     "(build it with model.fuzzy=True)")
  return {**outputs, "fuzzy": found}
