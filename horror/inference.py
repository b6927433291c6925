"""Make a trained model fast to sample from on a CPU: the one place that chooses how inference runs.

Decoding one token reads every Linear weight once (10.7M of the 15.3M seed-15m parameters; the
17408x256 LM head alone is 4.5M), so on a 2-core CPU the time per token is memory traffic plus
per-op overhead. int8 weights with one scale per output row read 4x less than fp32. Two engines
run them, best first:

1. the C decoder (horror/native.py): the whole forward pass in one call, no per-op overhead;
2. PyTorch with fbgemm's dynamic-quantized matmul (`Int8Linear`), where the C decoder cannot
   be built (no compiler, not x86-64 with AVX2) or $HORROR_NATIVE=0. It uses
   `torch.ops.quantized`, which PyTorch plans to move out to torchao: where those kernels are
   missing, the PyTorch engine runs the fp32 weights instead.

Either way the result is an engine (horror.engine) with the PyTorch sampler passed in.
Quantization happens at load time only: model files stay fp32 safetensors, and the fp32 model is
what scoring and saving use.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings

import torch
import torch.nn as nn

from horror.engine import Engine, TorchEngine
from horror.model import GPT
from horror.native import NativeGPT, NativeUnavailable
from horror.sampling import choose_next_and_log_probs

logger = logging.getLogger(__name__)
QUANTIZE_ENV_VAR = "HORROR_QUANTIZE"
NATIVE_ENV_VAR = "HORROR_NATIVE"


def _choice(requested: bool | None, env_var: str) -> bool:
    """The explicit choice, else the environment variable (default on)."""
    if requested is not None:
        return requested
    return os.environ.get(env_var, "1").strip().lower() not in ("0", "false", "no", "off")


def quantization_enabled(requested: bool | None) -> bool:
    """The explicit choice, else $HORROR_QUANTIZE (default on)."""
    return _choice(requested, QUANTIZE_ENV_VAR)


class Int8Linear(nn.Module):
    """A frozen nn.Linear whose weight is int8 with one scale per output row (symmetric).

    The input is quantized to 8 bits per call from its own range, so nothing needs calibrating.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float().cpu()
        scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        zero_points = torch.zeros(self.out_features, dtype=torch.long)
        bias = linear.bias.detach().float().cpu() if linear.bias is not None else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized tensors announce their move to torchao
            qweight = torch.quantize_per_channel(weight, scales.double(), zero_points, 0, torch.qint8)
            # Packed once here into fbgemm's blocked layout; not a tensor, so never in a state_dict.
            self._packed = torch.ops.quantized.linear_prepack(qweight, bias)
        # The op's C++ entry point: going through torch.ops adds a Python argument scan that
        # costs ~5 us, a quarter of the op, and a 15M model calls it 33 times per token.
        operator = torch.ops.quantized.linear_dynamic.default
        self._matmul = getattr(operator, "_op", operator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # reduce_range=True keeps activations to 7 bits: AVX2 sums pairs of u8*s8 products in
        # int16, which full 8-bit activations can overflow (errors of ~0.3 instead of ~0.01).
        return self._matmul(x, self._packed, True)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def is_quantized(model: nn.Module) -> bool:
    """True if the model holds int8 weights (such a model cannot be saved; save the fp32 one)."""
    return any(isinstance(module, (Int8Linear, NativeGPT)) for module in model.modules())


def quantize_int8(model: GPT) -> GPT:
    """`model` with every nn.Linear (the LM head included) replaced by an Int8Linear, in place.

    Falls back to the fp32 model, with a log line, if this torch build lacks the int8 kernels."""
    try:
        replacements = [
            (parent, name, Int8Linear(child))
            for parent in model.modules()
            for name, child in parent.named_children()
            if isinstance(child, nn.Linear)
        ]
        probe = replacements[0][2]
        probe(torch.zeros(1, probe.in_features))  # some builds pack weights but cannot run them
    except (AttributeError, IndexError, NotImplementedError, RuntimeError) as error:
        logger.warning("int8 quantization unavailable (%s); using fp32 weights", error)
        return model
    for parent, name, quantized in replacements:
        setattr(parent, name, quantized)  # a tied head gets its own int8 copy; the embedding stays fp32
    return model


def describe_engine(engine: nn.Module) -> str:
    """How a prepared engine runs, for `horror info` and the app's About tab."""
    if isinstance(engine, NativeGPT):
        return "int8 weights, C decoder and sampler"
    if is_quantized(engine):
        return "int8 weights, PyTorch (fbgemm)"
    return f"{next(engine.parameters()).dtype} weights, PyTorch".replace("torch.", "")


def prepare_for_inference(
    model: GPT, quantize: bool | None = None, device: str = "cpu", native: bool | None = None
) -> Engine:
    """An engine to sample from `model`: eval mode, no dropout calls, int8 on CPU unless turned off.

    `quantize=None` follows $HORROR_QUANTIZE, `native=None` follows $HORROR_NATIVE (both default
    on): int8 runs in the C decoder where it builds, else in PyTorch. `model` is left untouched."""
    if str(device) == "cpu" and quantization_enabled(quantize) and _choice(native, NATIVE_ENV_VAR):
        try:
            return NativeGPT(model, choose_next_and_log_probs).eval()
        except NativeUnavailable as error:
            logger.warning("C decoder unavailable (%s); using PyTorch's int8 kernels", error)
    model = copy.deepcopy(model).eval()
    # Dropout is a no-op in eval mode but still a module call per layer per token.
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Dropout):
                setattr(module, name, nn.Identity())
    if str(device) == "cpu" and quantization_enabled(quantize):
        model = quantize_int8(model)
    return TorchEngine(model, choose_next_and_log_probs).eval()
