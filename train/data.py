"""Corpora for training, through Hugging Face `datasets`: read local files or Hub datasets,
split deterministically by hash, tokenise once (cached on disk), filter by length and pack.

A story is one string with its whitespace collapsed. Sources come in three shapes:
  stories  TinyStories' convention: lines of text, a line `<|endoftext|>` after each story
  lines    one story per line (our horror corpus; also running text, one paragraph per line)
  jsonl    one JSON object per line with a `text` field
"""

from __future__ import annotations

import hashlib
import json
import lzma
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset, load_dataset

from horror.tokenizer import StoryTokenizer
from train.run_config import Source

STORY_SEPARATOR = "<|endoftext|>"
LOCAL_SUFFIXES = (".txt", ".txt.xz", ".jsonl", ".jsonl.xz")
# TinyStories V1 holds UTF-8 that was decoded as cp1252 somewhere; these are the sequences in
# it. Order matters: the bare "â€" (a closing quote whose last byte was lost) goes last.
MOJIBAKE = {"â€œ": "“", "â€™": "’", "â€˜": "‘", "â€”": "—", "â€“": "–", "â€¦": "…", "â€\x9d": "”", "â€": "”"}


def fix_mojibake(text: str) -> str:
    for bad, good in MOJIBAKE.items():
        text = text.replace(bad, good)
    return text


def _normalise(text: str) -> str:
    return " ".join(text.split())


def group_stories(rows: Iterable[str], fmt: str) -> Iterator[str]:
    """Stories from rows of text: `<|endoftext|>` rows end a story ("stories"), or each row is one."""
    if fmt == "lines":
        yield from (story for story in map(_normalise, rows) if story)
        return
    current: list[str] = []
    for row in rows:
        if row.strip() == STORY_SEPARATOR:
            if current:
                yield _normalise(" ".join(current))
            current = []
        elif row.strip():
            current.append(row)
    if current:
        yield _normalise(" ".join(current))


def _open_lines(path: Path) -> Iterator[str]:
    opener = lzma.open if path.suffix == ".xz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:  # lzma decompresses as it streams
            yield from handle
    except (UnicodeDecodeError, lzma.LZMAError, EOFError) as error:  # not UTF-8, or a broken .xz
        raise ValueError(f"{path} is not readable UTF-8 text: {error}") from error


def _local_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.name.removesuffix(".xz").endswith(".jsonl"):
        return "jsonl"
    head = [line for _, line in zip(range(20_000), _open_lines(path))]
    return "stories" if any(line.strip() == STORY_SEPARATOR for line in head) else "lines"


def _local_stories(path: Path, fmt: str) -> Iterator[str]:
    fmt = _local_format(path, fmt)
    if fmt == "jsonl":
        for number, line in enumerate(_open_lines(path), 1):
            if line.strip():
                try:
                    text = json.loads(line)["text"]
                    if not isinstance(text, str):  # str() would turn null into the story "None"
                        raise TypeError(type(text).__name__)
                except (json.JSONDecodeError, KeyError, TypeError) as error:
                    raise ValueError(f"{path}:{number}: expected a JSON object with a 'text' string") from error
                if _normalise(text):
                    yield _normalise(text)
    else:
        yield from group_stories(_open_lines(path), fmt)


def _local_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(LOCAL_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"data folder {path} holds no {', '.join(LOCAL_SUFFIXES)} files")
    return files


def _looks_like_hub_id(text: str) -> bool:
    # "owner/name" or "name"; anything with path syntax or a file suffix is meant to be local.
    return not text.startswith((".", "/", "~")) and text.count("/") <= 1 and not text.endswith(LOCAL_SUFFIXES)


def load_source(source: Source) -> Dataset:
    """One source as a `datasets.Dataset` with a `text` column, one story per row."""
    path = Path(source.path).expanduser()
    if path.exists():
        stories = [s for file in _local_files(path) for s in _local_stories(file, source.format)]
        dataset = Dataset.from_dict({"text": stories})
    elif _looks_like_hub_id(source.path):
        dataset = _hub_stories(source)
    else:
        raise FileNotFoundError(f"data source {source.path} does not exist (and is not a Hub dataset id)")
    if source.max_stories:
        dataset = dataset.select(range(min(source.max_stories, len(dataset))))
    if source.fix_mojibake:
        dataset = dataset.map(lambda row: {"text": fix_mojibake(row["text"])}, keep_in_memory=True)
    if len(dataset) == 0:
        raise ValueError(f"data source {source.path} holds no stories")
    return dataset


def _hub_stories(source: Source) -> Dataset:
    """A Hub dataset, e.g. roneneldan/TinyStories with data_files=TinyStoriesV2-GPT4-train.txt
    (one row per line, `<|endoftext|>` rows between stories) or a dataset with one story per row."""
    try:
        rows = load_dataset(source.path, data_files=source.data_files, split="train")
    except Exception as error:  # offline, no such dataset, gated, bad data_files ...
        raise ValueError(f"could not load the Hub dataset {source.path!r}: {str(error).splitlines()[0][:300]}") from error
    if "text" not in rows.column_names:
        raise ValueError(f"Hub dataset {source.path} has no 'text' column (columns: {rows.column_names})")
    fmt = source.format
    if fmt in ("auto", "jsonl"):  # a Hub row is already a parsed record; look for separator rows
        head = rows[: min(len(rows), 20_000)]["text"]
        fmt = "stories" if any(str(t).strip() == STORY_SEPARATOR for t in head) else "lines"
    texts = (str(t) for batch in rows.iter(batch_size=10_000) for t in batch["text"])
    stories = group_stories(texts, fmt)
    if source.max_stories:
        stories = (story for _, story in zip(range(source.max_stories), stories))
    return Dataset.from_dict({"text": list(stories)})


def is_validation(story: str, fraction: float) -> bool:
    """Deterministic split: the same story always lands on the same side, whatever the order."""
    digest = int.from_bytes(hashlib.sha1(story.encode("utf-8")).digest()[:8], "big")
    return digest % 10_000 < fraction * 10_000


@dataclass
class Corpus:
    """One phase's text: the weighted training mix, the held-out stories, and facts for the card."""

    train: list[str]
    val: list[str]
    unique_train: list[str]  # before weighting: what the tokenizer learns from
    facts: dict = field(default_factory=dict)


def build_corpus(sources: list[Source], val_fraction: float, seed: int) -> Corpus:
    """Read and mix sources. A weight repeats (2.0) or samples (0.5) a source's training stories;
    validation stories are never repeated."""
    rng = random.Random(seed)
    train: list[str] = []
    val: list[str] = []
    unique: list[str] = []
    per_source = []
    for source in sources:
        stories = list(load_source(source)["text"])
        if source.split == "hash":
            held_out = [is_validation(s, val_fraction) for s in stories]
            source_val = [s for s, v in zip(stories, held_out) if v]
            source_train = [s for s, v in zip(stories, held_out) if not v]
        else:
            source_train, source_val = (stories, []) if source.split == "train" else ([], stories)
        whole, fraction = divmod(source.weight, 1.0)
        train.extend(source_train * int(whole))
        train.extend(rng.sample(source_train, int(round(fraction * len(source_train)))))
        val.extend(source_val)
        unique.extend(source_train)
        per_source.append({"source": source.path, "stories": len(stories), "weight": source.weight})
    if not train or not val:
        raise ValueError(
            f"{len(train)} training and {len(val)} validation stories from {[s.path for s in sources]}: "
            "need both (more data, a larger val_fraction, or a source with split 'val')"
        )
    return Corpus(train, val, unique, {"sources": per_source, "train_stories": len(train), "val_stories": len(val)})


def tokenize_stories(stories: list[str], tokenizer: StoryTokenizer, cache_dir: Path) -> list[np.ndarray]:
    """<BOS> story <EOS> ids per story, via `datasets.map`, cached on disk by content hash so a
    second run (or a resumed one) starts at once."""
    key = hashlib.sha1(b"tokenized-v2\0")
    key.update(tokenizer.tokenizer.to_str().encode())
    for story in stories:
        key.update(story.encode("utf-8") + b"\0")
    cache_file = Path(cache_dir) / f"{key.hexdigest()[:20]}.npz"
    if cache_file.is_file():
        with np.load(cache_file) as cached:
            return np.split(cached["ids"], cached["offsets"][1:-1])
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    encoded = Dataset.from_dict({"text": stories}).map(
        lambda batch: {"ids": [[bos, *ids, eos] for ids in tokenizer.encode_batch(batch["text"])]},
        batched=True,
        batch_size=2000,
        remove_columns=["text"],
        keep_in_memory=True,
        desc="tokenising",
    )
    arrays = [np.asarray(ids, dtype=np.int32) for ids in encoded["ids"]]
    offsets = np.cumsum([0] + [len(a) for a in arrays])
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(f"{cache_file.stem}.{random.randrange(1 << 30)}.tmp.npz")
    np.savez(tmp, ids=np.concatenate(arrays) if arrays else np.zeros(0, np.int32), offsets=offsets)
    tmp.replace(cache_file)  # atomic: a reader never sees half a file
    return arrays


def filter_by_length(sequences: list[np.ndarray], min_tokens: int, max_tokens: int) -> list[np.ndarray]:
    """Sequences whose length (with <BOS> and <EOS>) is in [min_tokens, max_tokens]."""
    return [s for s in sequences if min_tokens <= len(s) <= max_tokens]


def pack_stream(sequences: list[np.ndarray], row_length: int, pad_id: int, seed: int) -> np.ndarray:
    """Pretraining rows: shuffled stories laid end to end and cut every `row_length` tokens.

    No compute goes to padding (only the last row is padded). A story may run across two rows,
    and attention is plain causal over the row, so a token also sees the end of the previous
    story, as in nanoGPT; the <BOS> at each story's start tells the model a new story begins.
    """
    order = np.random.default_rng(seed).permutation(len(sequences))
    stream = np.concatenate([sequences[i] for i in order]) if len(sequences) else np.zeros(0, np.int32)
    rows = -(-len(stream) // row_length)
    packed = np.full(rows * row_length, pad_id, dtype=np.int64)
    packed[: len(stream)] = stream
    return packed.reshape(rows, row_length)


def pack_whole(sequences: list[np.ndarray], row_length: int, pad_id: int, seed: int) -> np.ndarray:
    """Fine-tuning rows: whole stories, best-fit decreasing, so no story is cut and almost no row
    space is left over; what is left is padding, which the loss ignores. Every row starts at a
    story's <BOS>, as generation does; the stories within a row are in seeded random order."""
    by_free: list[list[int]] = [[] for _ in range(row_length + 1)]  # row ids by free space left
    rows: list[list[int]] = []
    for index in sorted(range(len(sequences)), key=lambda i: -len(sequences[i])):
        size = min(len(sequences[index]), row_length)
        free = next((f for f in range(size, row_length + 1) if by_free[f]), None)
        if free is None:
            row, free = len(rows), row_length
            rows.append([])
        else:
            row = by_free[free].pop()
        rows[row].append(index)
        by_free[free - size].append(row)
    rng = np.random.default_rng(seed)
    packed = np.full((len(rows), row_length), pad_id, dtype=np.int64)
    for r, members in enumerate(rows):
        row_ids = np.concatenate([sequences[i][:row_length] for i in rng.permutation(members)])
        packed[r, : len(row_ids)] = row_ids
    return packed
