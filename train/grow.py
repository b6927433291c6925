"""Make a trained model deeper without changing what it computes, so training can go on with more layers.

    python train/grow.py assets/model runs/deeper --layers 8
    python train/train.py --config train/configs/cpu.json --name F --init_from runs/deeper ...

Each new block is a copy of the block before it with both of its output projections (attention and MLP)
set to zero. A pre-norm block adds `attn(...)` and `mlp(...)` to the residual stream, so a block whose
projections are zero adds nothing: the grown model gives the same logits as the original, to the last
bit, and training starts from the original's loss rather than from a fresh block's noise. The copied
attention and MLP weights give the new block useful features to start from once its projections move
(the first optimiser step makes them non-zero, and gradients then reach the rest of the block).
At cpu-tiny's width the LM head (8,192 x 192) costs about as much as four blocks, so doubling its depth
made a training step 1.47x as long on our 2-core CPU, not 2x (see train/RESULTS.md, run F).
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import replace
from pathlib import Path

# `python train/grow.py` puts train/ first on sys.path, where train/train.py would hide the `train` package.
if __name__ == "__main__" and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import torch

from horror.model import GPT, Block
from horror.model_folder import load_model_folder, save_model_folder

MAX_LAYERS = 64


def insertion_points(old_layers: int, new_layers: int) -> list[int]:
    """After which original blocks (0-based) a new block goes, spread evenly through the depth.

    Doubling puts one new block after every original block; adding fewer spaces them out, last block first
    (e.g. 4 -> 6 inserts after blocks 1 and 3).
    """
    added = new_layers - old_layers
    return sorted(old_layers - 1 - (i * old_layers) // added for i in range(added))


def silent_copy(block: Block) -> Block:
    """A copy of `block` that adds nothing to the residual stream (its output projections are zero)."""
    new = copy.deepcopy(block)
    with torch.no_grad():
        for projection in (new.attn.proj, new.mlp.proj):
            projection.weight.zero_()
            if projection.bias is not None:
                projection.bias.zero_()
    return new


def grow(model: GPT, layers: int) -> GPT:
    """A new GPT with `layers` blocks that computes exactly what `model` computes."""
    old_layers = model.config.n_layers
    if not old_layers <= layers <= MAX_LAYERS:
        raise ValueError(f"layers must be between the model's {old_layers} and {MAX_LAYERS}, got {layers}")
    grown = copy.deepcopy(model)  # embeddings, blocks, final norm and the (tied) head, shared with nothing
    grown.config = replace(model.config, n_layers=layers)
    after = insertion_points(old_layers, layers)
    blocks = []
    for index, block in enumerate(grown.blocks):
        blocks.append(block)
        blocks.extend(silent_copy(block) for _ in range(after.count(index)))
    grown.blocks = torch.nn.ModuleList(blocks)
    return grown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a model folder (config.json, model.safetensors, tokenizer.json)")
    parser.add_argument("destination", help="where to write the deeper model folder")
    parser.add_argument("--layers", type=int, required=True, help="how many blocks the new model has")
    args = parser.parse_args(argv)
    if Path(args.destination).resolve() == Path(args.source).resolve():
        parser.error("destination must differ from source")
    loaded = load_model_folder(args.source)
    try:
        grown = grow(loaded.model, args.layers)
    except ValueError as error:
        parser.error(str(error))
    save_model_folder(args.destination, grown, loaded.tokenizer, loaded.generation_config)
    print(
        f"{args.source}: {loaded.model.config.n_layers} layers, {loaded.model.num_parameters():,} parameters -> "
        f"{args.destination}: {args.layers} layers, {grown.num_parameters():,} parameters"
    )


if __name__ == "__main__":
    main()
