"""Corpora for training, through Hugging Face `datasets`: read local files or Hub datasets,
filter, split deterministically by hash, tokenise once (cached on disk) and pack."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import lzma
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from datasets import Dataset, load_dataset

from horror.tokenizer import StoryTokenizer
from train.run_config import Source

STORY_SEPARATOR = "<|endoftext|>"
# TinyStories V1 holds UTF-8 read as cp1252; these are the sequences that occur in it.
MOJIBAKE = {"â€œ": "“", "â€™": "’", "â€˜": "‘", "â€”": "—", "â€“": "–", "â€¦": "…", "â€\x9d": "”", "â€": "”"}


def _open_text(path: Path) -> str:
    if path.suffix == ".xz":
        with lzma.open(path, "rt", encoding="utf-8") as handle:
            return handle.read()
    return path.read_text(encoding="utf-8")


def _split_stories(text: str) -> Iterator[str]:
    for chunk in text.split(STORY_SEPARATOR):
        story = " ".join(chunk.split())
        if story:
            yield story


def _local_stories(source: Source) -> list[str]:
    path = Path(source.path)
    text = _open_text(path)
    fmt = source.format
    if fmt == "auto":
        name = path.name.removesuffix(".xz")
        fmt = "jsonl" if name.endswith(".jsonl") else "stories" if STORY_SEPARATOR in text else "lines"
    if fmt == "jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [" ".join(str(row["text"]).split()) for row in rows if str(row.get("text", "")).strip()]
    if fmt == "stories":
        return list(_split_stories(text))
    if fmt == "lines":
        return [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    raise ValueError(f"unknown source format {fmt!r} for {path}; use auto, stories, lines or jsonl")


def _hub_stories(source: Source) -> list[str]:
    """A Hub dataset with a `text` column; rows that are `<|endoftext|>` separate stories."""
    dataset = load_dataset(source.path, data_files=source.data_files, split="train")
    column = "text" if "text" in dataset.column_names else dataset.column_names[0]
    joined = "\n".join(dataset[column])
    return list(_split_stories(joined)) if STORY_SEPARATOR in joined else [" ".join(t.split()) for t in dataset[column] if t.strip()]


def read_stories(source: Source) -> list[str]:
    """All stories of one source, whitespace-normalised; a clear error if there are none."""
    local = Path(source.path)
    if local.is_dir():  # every text file in the folder, in name order
        files = sorted(p for p in local.iterdir() if p.name.endswith((".txt", ".txt.xz", ".jsonl")))
        stories = [s for p in files for s in _local_stories(dataclasses.replace(source, path=str(p)))]
    elif local.exists():
        stories = _local_stories(source)
    elif source.path.startswith((".", "/", "~")) or source.path.count("/") != 1:
        raise FileNotFoundError(f"data source {source.path} does not exist (nor is it a Hub dataset id)")
    else:
        stories = _hub_stories(source)
    if source.fix_mojibake:
        for bad, good in MOJIBAKE.items():
            stories = [story.replace(bad, good) for story in stories]
    if not stories:
        raise ValueError(f"data source {source.path} holds no stories")
    return stories


def mix_sources(sources: list[Source], seed: int) -> list[str]:
    """Stories of several sources; a weight w repeats a source w times (fractions sample)."""
    rng = random.Random(seed)
    mixed: list[str] = []
    for source in sources:
        stories = read_stories(source)
        whole, fraction = divmod(source.weight, 1.0)
        mixed.extend(stories * int(whole))
        mixed.extend(rng.sample(stories, int(round(fraction * len(stories)))))
    return mixed


def is_validation(story: str, fraction: float) -> bool:
    """Deterministic split: the same story always lands on the same side, whatever the order."""
    digest = int.from_bytes(hashlib.sha1(story.encode("utf-8")).digest()[:8], "big")
    return digest % 10_000 < fraction * 10_000


def split_train_val(stories: list[str], fraction: float) -> tuple[list[str], list[str]]:
    train = [s for s in stories if not is_validation(s, fraction)]
    val = [s for s in stories if is_validation(s, fraction)]
    if not train or not val:
        raise ValueError(f"{len(stories)} stories are too few to split into train and validation")
    return train, val


def tokenize_stories(
    stories: list[str], tokenizer: StoryTokenizer, cache_dir: Path, tag: str
) -> list[np.ndarray]:
    """<BOS> story <EOS> ids per story, via `datasets.map`, cached on disk by content hash."""
    key = hashlib.sha1()
    key.update(tokenizer.tokenizer.to_str().encode())
    for story in stories:
        key.update(story.encode("utf-8") + b"\0")
    cache_file = cache_dir / f"{tag}-{key.hexdigest()[:16]}.npz"
    if cache_file.is_file():
        with np.load(cache_file) as data:
            return np.split(data["ids"], data["offsets"][1:-1])
    dataset = Dataset.from_dict({"text": stories})
    encoded = dataset.map(
        lambda batch: {"ids": [tokenizer.encode_story(t) for t in batch["text"]]},
        batched=True,
        remove_columns=["text"],
        keep_in_memory=True,
    )
    arrays = [np.asarray(ids, dtype=np.int32) for ids in encoded["ids"]]
    offsets = np.cumsum([0] + [len(a) for a in arrays])
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npz")
    np.savez(tmp, ids=np.concatenate(arrays) if arrays else np.zeros(0, np.int32), offsets=offsets)
    tmp.replace(cache_file)
    return arrays


def filter_by_length(sequences: list[np.ndarray], min_tokens: int, max_tokens: int) -> list[np.ndarray]:
    return [s for s in sequences if min_tokens <= len(s) <= max_tokens]


def pack(sequences: list[np.ndarray], row_length: int, pad_id: int) -> np.ndarray:
    """Concatenate stories into rows of `row_length` tokens so no compute goes to padding.

    Only the last row is padded; `pad_id` positions are ignored by the loss. Stories run
    across row boundaries and attention crosses story boundaries (as in nanoGPT); each story
    starts with <BOS>, which tells the model a new story begins.
    """
    stream = np.concatenate(sequences) if sequences else np.zeros(0, np.int32)
    rows = -(-len(stream) // row_length)
    packed = np.full(rows * row_length, pad_id, dtype=np.int64)
    packed[: len(stream)] = stream
    return packed.reshape(rows, row_length)
