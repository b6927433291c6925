"""Build the placeholder bundled model: a real tokenizer trained on the horror corpus and a
randomly initialised `cpu-tiny` transformer, labelled untrained. Replaced by a trained model."""

import argparse
import json
from pathlib import Path

import torch

from horror.config import model_preset
from horror.hub import BUNDLED_MODEL_DIR
from horror.model import GPT
from horror.model_folder import save_model_folder
from horror.tokenizer import StoryTokenizer

CARD = """---
license: mit
language: en
tags: [text-generation, horror, untrained]
---
# Two-Sentence Horror — UNTRAINED placeholder

Randomly initialised weights: this model writes gibberish. It exists only so the app and
tests run before a trained model is bundled.
"""

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--corpus", nargs="+", required=True, help="text files, one story per line")
parser.add_argument("--out", default=str(BUNDLED_MODEL_DIR))
args = parser.parse_args()
stories = [line.strip() for path in args.corpus for line in Path(path).read_text().splitlines() if line.strip()]
tokenizer = StoryTokenizer.train(stories, vocab_size=8192, min_frequency=3)
torch.manual_seed(0)
model = GPT(model_preset("cpu-tiny", vocab_size=tokenizer.vocab_size)).eval()
out = save_model_folder(args.out, model, tokenizer, card=CARD)
(out / "card.json").write_text(json.dumps({"untrained": True}, indent=2) + "\n")
print(f"wrote untrained placeholder to {out} ({model.num_parameters():,} parameters)")
