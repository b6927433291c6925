"""Make a trained model fast to sample from on a CPU.

Decoding one token reads every weight once, so on a 2-core CPU time per token is mostly
memory traffic: int8 weights (dynamic quantization of every nn.Linear, the LM head included)
read 4x less than fp32. Quantization happens at load time only; files stay fp32 safetensors.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings

import torch

from horror.model import GPT

logger = logging.getLogger(__name__)
QUANTIZE_ENV_VAR = "HORROR_QUANTIZE"


def quantization_enabled(requested: bool | None) -> bool:
    """The explicit choice, else $HORROR_QUANTIZE (default on)."""
    if requested is not None:
        return requested
    return os.environ.get(QUANTIZE_ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


def quantize_int8(model: GPT) -> GPT:
    """`model` (changed in place) with Linear layers that hold int8 weights (activations quantized per call).

    Falls back to the fp32 model, with a log line, if this torch build lacks the kernels."""
    if model.config.tie_embeddings:
        # The head shares its weight with the embedding; give it its own copy to quantize.
        model.lm_head.weight = torch.nn.Parameter(model.token_embedding.weight.detach().clone())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
            quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    except (AttributeError, RuntimeError) as error:
        logger.warning("int8 quantization unavailable (%s); using fp32 weights", error)
        return model
    return quantized


def prepare_for_inference(model: GPT, quantize: bool | None = None, device: str = "cpu") -> GPT:
    """The model to serve: eval mode, and int8 on CPU unless turned off."""
    model = copy.deepcopy(model).eval()
    # Dropout is a no-op in eval mode but still a Python call per layer per token.
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Dropout):
                setattr(module, child_name, torch.nn.Identity())
    if str(device) == "cpu" and quantization_enabled(quantize):
        return quantize_int8(model)
    return model
