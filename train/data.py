"""Corpora for training, through Hugging Face `datasets`: read local files, globs or Hub datasets,
split deterministically by hash, chunk long documents, tokenise once into a memory-mapped cache
of flat token arrays, filter by length and pack.

A story is one string with its whitespace collapsed. Sources come in three shapes:
  stories  TinyStories' convention: lines of text, a line `<|endoftext|>` after each story
           (our pretraining prose too: a chapter or a book per document, paragraphs on lines)
  lines    one story per line (our horror corpus; also running text, one paragraph per line)
  jsonl    one JSON object per line with a `text` field
A source with `chunk_words` cuts each document into pieces of at most that many words, at
paragraph ends where it can, else at sentence ends: a book chapter becomes many training pieces
instead of being dropped, and each piece starts with <BOS> like a story.
"""

from __future__ import annotations

import glob
import hashlib
import json
import lzma
import os
import random
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset, load_dataset
from huggingface_hub import snapshot_download

from horror.tokenizer import StoryTokenizer
from train.run_config import Source

STORY_SEPARATOR = "<|endoftext|>"
# A piece of a `chain` source carries this character first; tokenising turns it into the
# tokenizer's <CHAIN> start token (instead of <BOS>). Prompts never hold it: text cleaning drops
# control characters.
CHAIN_MARK = "\x1e"
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


def _paragraphs(rows: list[str]) -> str:
    """A document's non-empty rows, each normalised, one paragraph per line (chunking cuts there)."""
    return "\n".join(_normalise(row) for row in rows if row.strip())


def group_stories(rows: Iterable[str], fmt: str) -> Iterator[str]:
    """Stories from rows of text: `<|endoftext|>` rows end a story ("stories"), or each row is one.
    Paragraphs stay on their own lines; `_normalise` joins them when the story is used."""
    if fmt == "lines":
        yield from (story for story in map(_normalise, rows) if story)
        return
    current: list[str] = []
    for row in rows:
        if row.strip() == STORY_SEPARATOR:
            if current:
                yield _paragraphs(current)
            current = []
        elif row.strip():
            current.append(row)
    if current:
        yield _paragraphs(current)


# A sentence ends at . ! or ? (possibly closed by a quote or bracket) followed by a space.
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'”’)\]])\s+")


def chunk_document(document: str, max_words: int) -> list[str]:
    """Cut a document (paragraphs on lines) into pieces of at most `max_words` words, each
    normalised to one line: whole paragraphs while they fit, then whole sentences, and only a
    sentence longer than `max_words` is cut between words. Every word lands in exactly one piece."""
    if max_words < 1:
        raise ValueError(f"chunk_words must be at least 1, got {max_words}")
    units: list[list[str]] = []  # paragraphs, or the sentences of a paragraph too long to keep whole
    for paragraph in document.split("\n"):
        words = paragraph.split()
        if len(words) <= max_words:
            units.append(words)
            continue
        for sentence in SENTENCE_BREAK.split(paragraph):
            words = sentence.split()
            units += [words[i : i + max_words] for i in range(0, len(words), max_words)]
    pieces: list[list[str]] = []
    current: list[str] = []
    for words in units:
        if current and len(current) + len(words) > max_words:
            pieces.append(current)
            current = []
        current = current + words
    if current:
        pieces.append(current)
    return [" ".join(words) for words in pieces if words]


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
                if text.strip():
                    yield _paragraphs(text.splitlines())
    else:
        yield from group_stories(_open_lines(path), fmt)


GLOB_CHARS = ("*", "?", "[")


def _is_glob(path: str | Path) -> bool:
    return any(char in str(path) for char in GLOB_CHARS)


def _local_files(path: Path) -> list[Path]:
    if _is_glob(path):
        files = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"data source pattern {path} matches no files")
        return files
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
    """One source as a `datasets.Dataset` with a `text` column, one story (or document) per row.
    Documents of a source that will be chunked keep their paragraphs on separate lines."""
    path = Path(source.path).expanduser()
    if path.exists() or _is_glob(source.path):
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
    if not source.chunk_words:
        dataset = dataset.map(lambda row: {"text": _normalise(row["text"])}, keep_in_memory=True)
    if len(dataset) == 0:
        raise ValueError(f"data source {source.path} holds no stories")
    return dataset


def _hub_stories(source: Source) -> Dataset:
    """A Hub dataset, e.g. roneneldan/TinyStories with data_files=TinyStoriesV2-GPT4-train.txt
    (one row per line, `<|endoftext|>` rows between stories) or a dataset with one story per row."""
    try:
        rows = _load_hub_rows(source)
    except Exception as error:  # offline, no such dataset, gated, bad data_files ...
        raise ValueError(
            f"could not load the Hub dataset {source.path!r}: {str(error).splitlines()[0][:300]}"
        ) from error
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


def _load_hub_rows(source: Source) -> Dataset:
    """`load_dataset` on the Hub id; offline, a dataset loaded with `data_files` comes from the Hub cache.

    datasets names its cache of such a dataset after the files' resolved Hub URLs (commit included),
    which it cannot resolve offline, so it never finds that cache again (huggingface/datasets#7551).
    The downloaded files are in the Hub cache, though: offline, or with the Hub unreachable, they
    are loaded from there."""
    try:
        return load_dataset(source.path, data_files=source.data_files, split="train")
    except Exception as hub_error:
        if source.data_files:
            try:
                folder = snapshot_download(
                    source.path, repo_type="dataset", allow_patterns=source.data_files, local_files_only=True
                )
                return load_dataset(folder, data_files=source.data_files, split="train")
            except Exception:
                pass  # never downloaded, or not these files: the Hub's own error says more
        raise hub_error


def plain_text(story: str) -> str:
    """A training piece without its chain mark: what a tokenizer should learn from."""
    return story.removeprefix(CHAIN_MARK)


def is_validation(story: str, fraction: float) -> bool:
    """Deterministic split: the same story always lands on the same side, whatever the order."""
    digest = int.from_bytes(hashlib.sha1(story.encode("utf-8")).digest()[:8], "big")
    return digest % 10_000 < fraction * 10_000


@dataclass
class Corpus:
    """One phase's text: the weighted training mix, the held-out stories, and facts for the card."""

    train: list[str]
    val: list[str]
    unique_train: list[str]  # before weighting: what the tokenizer learns from (see `plain_text`)
    facts: dict = field(default_factory=dict)
    val_counts: dict[str, int] = field(default_factory=dict)  # source label -> its pieces in `val`, in order


def build_corpus(sources: list[Source], val_fraction: float, seed: int) -> Corpus:
    """Read and mix sources. Each source is split by hash of each document (so no held-out text
    is ever trained on, even as another chunk of the same chapter), then chunked if it asks, then
    weighted: a weight repeats (2.0) or samples (0.5) a source's training pieces; validation
    pieces are never repeated, and at most `val_max` of them are kept per source."""
    rng = random.Random(seed)
    train: list[str] = []
    val: list[str] = []
    unique: list[str] = []
    per_source = []
    val_counts: dict[str, int] = {}
    for source in sources:
        documents = list(load_source(source)["text"])
        if source.split == "hash":
            held_out = [is_validation(_normalise(d), val_fraction) for d in documents]
            source_val = [d for d, v in zip(documents, held_out) if v]
            source_train = [d for d, v in zip(documents, held_out) if not v]
        else:
            source_train, source_val = (documents, []) if source.split == "train" else ([], documents)
        if source.chunk_words:
            source_train = [c for d in source_train for c in chunk_document(d, source.chunk_words)]
            source_val = [c for d in source_val for c in chunk_document(d, source.chunk_words)]
        if source.val_max:
            source_val = source_val[: source.val_max]
        if source.chain:
            source_train = [CHAIN_MARK + p for p in source_train]
            source_val = [CHAIN_MARK + p for p in source_val]
        whole, fraction = divmod(source.weight, 1.0)
        train.extend(source_train * int(whole))
        train.extend(rng.sample(source_train, int(round(fraction * len(source_train)))))
        val.extend(source_val)
        label, n = source.label, 1  # two sources with one label (two "stories.txt"): "stories", "stories-2"
        while label in val_counts:
            n += 1
            label = f"{source.label}-{n}"
        val_counts[label] = len(source_val)
        unique.extend(source_train)
        per_source.append(
            {
                "source": source.path,
                "label": label,
                "stories": len(documents),
                "weight": source.weight,
                "train_pieces": len(source_train),
                "val_pieces": len(source_val),
                "train_words": sum(len(p.split()) for p in source_train),
            }
        )
    if not train or not val:
        raise ValueError(
            f"{len(train)} training and {len(val)} validation stories from {[s.path for s in sources]}: "
            "need both (more data, a larger val_fraction, or a source with split 'val')"
        )
    facts = {"sources": per_source, "train_stories": len(train), "val_stories": len(val)}
    return Corpus(train, val, unique, facts, val_counts)


TOKEN_CACHE_VERSION = b"tokenized-v3\0"


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned type for the ids: uint16 halves the cache and the packed rows."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def tokenize_stories(
    stories: list[str], tokenizer: StoryTokenizer, cache_dir: Path, batch_size: int = 4096
) -> list[np.ndarray]:
    """<BOS> story <EOS> ids per story (<CHAIN> ... <EOS> for a chain's), as views into one flat memory-mapped array cached on disk
    by content hash, so a second run (or a resumed one) starts at once and holds no per-token
    Python objects. The cache is a folder that appears by one atomic rename once both of its files
    are written: a process killed mid-write leaves only a temporary folder, never read as a cache."""
    key = hashlib.sha1(TOKEN_CACHE_VERSION)
    key.update(tokenizer.tokenizer.to_str().encode())
    for story in stories:
        key.update(story.encode("utf-8") + b"\0")
    cache = Path(cache_dir) / key.hexdigest()[:20]
    if not (cache / "ids.npy").is_file():
        _write_token_cache(stories, tokenizer, cache, batch_size)
    ids = np.load(cache / "ids.npy", mmap_mode="r")
    offsets = np.load(cache / "offsets.npy")
    return [ids[start:end] for start, end in zip(offsets[:-1], offsets[1:])]


def _start_id(story: str, tokenizer: StoryTokenizer) -> int:
    if not story.startswith(CHAIN_MARK):
        return tokenizer.bos_id
    if tokenizer.chain_id is None:
        raise ValueError(
            "a chain source needs a tokenizer with the <CHAIN> token: retrain the tokenizer "
            "(or drop `chain: true` from the source)"
        )
    return tokenizer.chain_id


def _write_token_cache(stories: list[str], tokenizer: StoryTokenizer, cache: Path, batch_size: int) -> None:
    dtype = token_dtype(tokenizer.vocab_size)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.parent / f"{cache.name}.{os.getpid()}.{random.randrange(1 << 30)}.tmp"
    tmp.mkdir()
    try:
        chunks, lengths = [], []
        for start in range(0, len(stories), batch_size):
            batch = stories[start : start + batch_size]
            encoded = tokenizer.encode_batch([plain_text(s) for s in batch])  # parallel, in Rust
            starts = [_start_id(s, tokenizer) for s in batch]
            sizes = [len(ids) + 2 for ids in encoded]
            chunks.append(
                np.fromiter(
                    (t for first, ids in zip(starts, encoded) for t in (first, *ids, tokenizer.eos_id)),
                    dtype=dtype,
                    count=sum(sizes),
                )
            )
            lengths += sizes
        np.save(tmp / "ids.npy", np.concatenate(chunks) if chunks else np.zeros(0, dtype))
        np.save(tmp / "offsets.npy", np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]))
        try:
            os.rename(tmp, cache)  # atomic; fails if another process got there first, which is fine
        except OSError:
            if not (cache / "ids.npy").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    dtype = sequences[0].dtype if len(sequences) else np.dtype(np.int64)
    stream = np.concatenate([sequences[i] for i in order]) if len(sequences) else np.zeros(0, dtype)
    rows = -(-len(stream) // row_length)
    packed = np.full(rows * row_length, pad_id, dtype=dtype)
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
    packed = np.full((len(rows), row_length), pad_id, dtype=sequences[0].dtype if sequences else np.int64)
    for r, members in enumerate(rows):
        row_ids = np.concatenate([sequences[i][:row_length] for i in rng.permutation(members)])
        packed[r, : len(row_ids)] = row_ids
    return packed
