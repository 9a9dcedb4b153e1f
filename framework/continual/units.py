"""What a "unit" is in each architecture: the one place plasticity methods and metrics read it.

A unit is a hidden feature with its own incoming weights (which compute it) and outgoing weights
(which read it), so that it can be measured (is it dormant? how much does it contribute?) and
reset (fresh incoming weights, zero outgoing weights) without touching the others. The model files
are read, never edited: units are found on a built model by its type.

* Transformer: the FFN hidden units of every block, h = GELU(fc(x)) (d_ff per block). Incoming:
  ``mlp.fc`` row and bias; outgoing: ``mlp.out_proj`` column; its bias absorbs a reset unit's mean
  contribution. Fresh weights: N(0, 0.02), zero bias (the model's init).
* MLP: the hidden units of every residual block, h = GELU(fc(LN(x))), exactly as the transformer
  FFN (``blocks[i].fc`` / ``blocks[i].out_proj``). The prefix read feeds the residual stream, which
  is not a unit layer.
* LSTM: the hidden units h_t of each layer (d_model per layer). Incoming: the unit's four gate rows
  of ``weight_ih_l{l}``, ``weight_hh_l{l}`` and both biases; outgoing: its column in the next
  layer's ``weight_ih_l{l+1}`` and its own layer's recurrent ``weight_hh_l{l}``, whose biases absorb
  the mean contribution (exact at every step but t=0, where h_{-1}=0). The top layer feeds the
  final LayerNorm, which mixes all units, so a top-layer unit cannot be removed without changing
  the function: top-layer units are measured but never reset (``resettable=False``). nn.LSTM
  hides its inner layers, so their activations are recomputed by an LSTM sharing the model's
  parameters (one extra forward without gradients). Fresh weights: U(-1/sqrt(H), 1/sqrt(H)).
* Mamba: the inner channels of every mixer (expand * d_model), h = the gated SSM output fed to
  ``out_proj``. Incoming: the channel's x and z rows of ``in_proj`` and its depthwise ``conv1d``
  filter and bias; outgoing: its ``out_proj`` column and its ``x_proj`` column (the channel's
  post-convolution activation feeds the step size and B, C of every channel). Neither has a
  bias, so a reset Mamba channel's mean contribution is dropped, not absorbed. The channel's SSM
  parameters (A, D, dt) are kept. Fresh weights: nn.Linear / nn.Conv1d defaults,
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from framework.models.lstm import LSTM
from framework.models.mamba import Mamba
from framework.models.mlp import MLP
from framework.models.transformer import Transformer

Init = Callable[[torch.Size, torch.Generator], torch.Tensor]


def normal_init(std: float) -> Init:
    return lambda shape, g: torch.randn(shape, generator=g) * std


def uniform_init(bound: float) -> Init:
    return lambda shape, g: (torch.rand(shape, generator=g) * 2 - 1) * bound


def zeros_init(shape, g) -> torch.Tensor:
    return torch.zeros(shape)


@dataclass
class Incoming:
    param: nn.Parameter
    dim: int  # the axis indexed by unit
    stride: int = 0  # > 0: unit i owns indices i, i+stride, ... (LSTM gates; Mamba's x and z halves)
    copies: int = 1
    init: Init = zeros_init

    def index(self, units: torch.Tensor) -> torch.Tensor:
        return torch.cat([units + k * self.stride for k in range(self.copies)])


@dataclass
class UnitGroup:
    """A layer of ``size`` units: how to read them, and which weights go in and out of each."""

    name: str
    size: int
    incoming: list  # [Incoming]: the weights that compute the unit (re-drawn at a reset)
    outgoing: list  # [(weight, dim)]: the weights that read the unit (zeroed at a reset)
    absorb: list  # [(weight (out, size), bias (out,))]: bias += weight[:, i] * mean h_i at a reset
    hook: Callable  # hook(callback) -> handles; calls callback(get_h) on each forward, get_h() -> (..., size)
    resettable: bool = True
    keepalive: list = field(default_factory=list)  # objects the hook needs (the shadow LSTM)

    def outgoing_weights(self) -> torch.Tensor:
        """(n_out, size): every weight reading each unit, for contribution utilities."""
        return torch.cat([w.detach().movedim(dim, -1).reshape(-1, self.size) for w, dim in self.outgoing])


# A hook passes a thunk, callback(lambda: h): the activation is only computed (for the LSTM's inner
# layers, by a shadow forward) when the recorder is armed.

def _hook_output(module: nn.Module, transform: Callable = lambda t: t):
    def register(callback):
        return [module.register_forward_hook(lambda m, inputs, out: callback(lambda: transform(out)))]
    return register


def _hook_input(module: nn.Module):
    def register(callback):
        return [module.register_forward_pre_hook(lambda m, inputs: callback(lambda: inputs[0]))]
    return register


def _ffn(name: str, fc: nn.Linear, out_proj: nn.Linear) -> UnitGroup:
    return UnitGroup(
        name, fc.out_features,
        incoming=[Incoming(fc.weight, 0, init=normal_init(0.02)), Incoming(fc.bias, 0)],
        outgoing=[(out_proj.weight, 1)],
        absorb=[(out_proj.weight, out_proj.bias)],
        hook=_hook_output(fc, torch.nn.functional.gelu),
    )


def _lstm_groups(model: LSTM) -> list[UnitGroup]:
    lstm, H, L = model.lstm, model.config.d_model, model.config.n_layers
    bound = 1.0 / math.sqrt(H)
    groups = []
    for layer in range(L):
        p = lambda kind, l=layer: getattr(lstm, f"{kind}_l{l}")  # noqa: E731
        top = layer == L - 1
        # a shadow LSTM of the first layer+1 layers, sharing the model's parameters, yields layer's h
        shadow = nn.LSTM(lstm.input_size, H, layer + 1, batch_first=True)
        for l in range(layer + 1):
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                setattr(shadow, f"{kind}_l{l}", getattr(lstm, f"{kind}_l{l}"))

        def register(callback, shadow=shadow, top=top):
            if top:
                return [lstm.register_forward_hook(lambda m, inputs, out: callback(lambda: out[0]))]

            def shadow_h(x):
                with torch.no_grad():
                    return shadow(x)[0]  # (B, T, H): this layer's hidden states
            return [lstm.register_forward_pre_hook(lambda m, inputs: callback(lambda: shadow_h(inputs[0])))]

        incoming = [Incoming(p(kind), 0, stride=H, copies=4, init=uniform_init(bound))
                    for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        outgoing = [(p("weight_hh"), 1)] + ([] if top else [(getattr(lstm, f"weight_ih_l{layer + 1}"), 1)])
        absorb = [(p("weight_hh"), p("bias_hh"))] + ([] if top else [
            (getattr(lstm, f"weight_ih_l{layer + 1}"), getattr(lstm, f"bias_ih_l{layer + 1}"))])
        groups.append(UnitGroup(f"lstm.layer{layer}", H, incoming, outgoing, absorb, register,
                                resettable=not top, keepalive=[shadow]))
    return groups


def _mamba_groups(model: Mamba) -> list[UnitGroup]:
    groups = []
    for i, block in enumerate(model.blocks):
        mixer = block.mixer
        E = mixer.out_proj.in_features
        d_model = mixer.in_proj.in_features
        k = mixer.conv1d.kernel_size[0]
        groups.append(UnitGroup(
            f"blocks.{i}.mixer", E,
            incoming=[Incoming(mixer.in_proj.weight, 0, stride=E, copies=2, init=uniform_init(1 / math.sqrt(d_model))),
                      Incoming(mixer.conv1d.weight, 0, init=uniform_init(1 / math.sqrt(k))),
                      Incoming(mixer.conv1d.bias, 0, init=uniform_init(1 / math.sqrt(k)))],
            outgoing=[(mixer.out_proj.weight, 1), (mixer.x_proj.weight, 1)],
            absorb=[],  # out_proj and x_proj have no bias
            hook=_hook_input(mixer.out_proj),
        ))
    return groups


def find_units(model: nn.Module) -> list[UnitGroup]:
    """The unit groups of the framework model inside ``model`` (a wrapper is looked through)."""
    from framework.continual.streams import sequence_model

    inner = sequence_model(model)
    if isinstance(inner, Transformer):
        return [_ffn(f"blocks.{i}.mlp", b.mlp.fc, b.mlp.out_proj) for i, b in enumerate(inner.blocks)]
    if isinstance(inner, MLP):
        return [_ffn(f"blocks.{i}", b.fc, b.out_proj) for i, b in enumerate(inner.blocks)]
    if isinstance(inner, LSTM):
        return _lstm_groups(inner)
    if isinstance(inner, Mamba):
        return _mamba_groups(inner)
    raise TypeError(f"no unit definition for {type(inner).__name__}; add one in framework/continual/units.py")


class ActivationStats:
    """Per-unit E|h| and E[h] over every forward while armed (all batch and time positions)."""

    def __init__(self, groups: list[UnitGroup]):
        self.groups = groups
        self.armed = False
        self.reset()
        self._handles = [h for g in groups for h in g.hook(self._recorder(g.name))]

    def _recorder(self, name: str):
        def record(get_h: Callable[[], torch.Tensor]) -> None:
            if not self.armed:
                return
            h = get_h().detach().float()
            h = h.reshape(-1, h.shape[-1])  # (N, size)
            abs_sum, sum_, n = self.stats.get(name, (0.0, 0.0, 0))
            self.stats[name] = (abs_sum + h.abs().sum(0), sum_ + h.sum(0), n + h.shape[0])
        return record

    def reset(self) -> None:
        self.stats: dict[str, tuple] = {}

    def mean_abs(self, name: str) -> Optional[torch.Tensor]:
        if name not in self.stats:
            return None
        abs_sum, _, n = self.stats[name]
        return abs_sum / n

    def mean(self, name: str) -> Optional[torch.Tensor]:
        if name not in self.stats:
            return None
        _, sum_, n = self.stats[name]
        return sum_ / n

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@torch.no_grad()
def reset_units(group: UnitGroup, units: torch.Tensor, mean_h: Optional[torch.Tensor],
                optimizer: Optional[torch.optim.Optimizer], generator: torch.Generator) -> None:
    """Dohare et al.'s reset of ``units`` (long indices) of ``group``, in this order:

    1. the next layers' biases absorb each unit's mean contribution, weight[:, i] * mean_h[i]
       (``mean_h=None``: nothing absorbed, as in ReDo);
    2. fresh incoming weights from the architecture's init;
    3. zero outgoing weights (after 2, so a weight that is both, the LSTM's self-recurrence, ends 0);
    4. the optimizer's per-element state (Adam's moments, SGD's momentum) of every touched slice
       is zeroed, so stale moments do not push the fresh weights.
    """
    if units.numel() == 0:
        return
    units = units.long().cpu()
    touched: list[tuple[torch.Tensor, int, torch.Tensor]] = []
    if mean_h is not None:
        for weight, bias in group.absorb:
            bias.add_(weight[:, units.to(weight.device)] @ mean_h[units].to(weight))
    for inc in group.incoming:
        index = inc.index(units)
        shape = list(inc.param.shape)
        shape[inc.dim] = index.numel()
        fresh = inc.init(torch.Size(shape), generator).to(inc.param)
        inc.param.index_copy_(inc.dim, index.to(inc.param.device), fresh)
        touched.append((inc.param, inc.dim, index))
    for weight, dim in group.outgoing:
        weight.index_fill_(dim, units.to(weight.device), 0.0)
        touched.append((weight, dim, units))
    if optimizer is not None:
        for param, dim, index in touched:
            for value in optimizer.state.get(param, {}).values():
                if torch.is_tensor(value) and value.shape == param.shape:
                    value.index_fill_(dim, index.to(value.device), 0.0)
