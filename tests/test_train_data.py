"""The new data features: chunking long documents, globs, broken .xz files, the token cache,
chain sources, per-source validation loss and the CPU probe. All data is made here, tiny."""

from __future__ import annotations

import lzma
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from horror.config import model_preset
from horror.model import GPT
from horror.tokenizer import StoryTokenizer
from train import data, hardware
from train.run_config import Source
from train.train import evaluate, split_by_source

ENDS = [".", "!", "?", '."', "?”", ".)"]


def random_document(rng: random.Random, max_words: int) -> tuple[str, list[list[list[str]]]]:
    """Paragraphs (one a line) of sentences of made-up words, one sentence longer than max_words;
    also returned as paragraphs -> sentences -> words, so a test knows where every cut may go."""
    word = lambda: "".join(rng.choices("abcdefghij", k=rng.randint(1, 6)))  # noqa: E731
    paragraphs = [
        [[word() for _ in range(rng.randint(0, 24))] + [word() + rng.choice(ENDS)] for _ in range(rng.randint(1, 6))]
        for _ in range(rng.randint(1, 8))
    ]
    rng.choice(paragraphs).insert(0, ["long"] * (2 * max_words + 2) + ["long."])
    return "\n".join(" ".join(w for s in p for w in s) for p in paragraphs), paragraphs


# ----- chunk_document -------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
def test_chunking_never_loses_a_word_and_cuts_only_at_paragraph_or_sentence_ends(seed: int):
    rng = random.Random(seed)
    max_words = rng.choice([10, 30, 60])
    document, paragraphs = random_document(rng, max_words)
    pieces = data.chunk_document(document, max_words)
    assert all(0 < len(p.split()) <= max_words and "\n" not in p for p in pieces)
    assert [w for p in pieces for w in p.split()] == document.split()
    where = [index for index, piece in enumerate(pieces) for _ in piece.split()]  # each word's piece
    allowed, start = set(), 0
    for paragraph in paragraphs:
        length = sum(map(len, paragraph))
        if length <= max_words:  # a paragraph that fits is never split
            assert len(set(where[start : start + length])) == 1
        for sentence in paragraph:
            if len(sentence) <= max_words:
                assert len(set(where[start : start + len(sentence)])) == 1
            allowed.update(range(start, start + len(sentence), max_words))  # overlong: cut every max_words
            start += len(sentence)
    cuts = {i for i in range(1, len(where)) if where[i] != where[i - 1]}
    assert cuts <= allowed


def test_chunking_prefers_paragraph_ends_then_sentence_ends():
    paragraph = lambda tag, n: " ".join(f"{tag}{i}" for i in range(n - 1)) + f" {tag}end."  # noqa: E731
    three = "\n".join(paragraph(t, 30) for t in "abc")
    assert data.chunk_document(three, 50) == [paragraph(t, 30) for t in "abc"]
    assert data.chunk_document(three, 60) == [paragraph("a", 30) + " " + paragraph("b", 30), paragraph("c", 30)]
    sentences = " ".join(paragraph(t, 20) for t in "xyz")  # one 60-word paragraph of three sentences
    assert data.chunk_document(sentences, 50) == [paragraph("x", 20) + " " + paragraph("y", 20), paragraph("z", 20)]


@pytest.mark.parametrize("max_words", [0, -3])
def test_chunking_rejects_a_word_limit_below_one(max_words: int):
    with pytest.raises(ValueError, match="at least 1"):
        data.chunk_document("Some words.", max_words)


# ----- chunked sources in build_corpus ----------------------------------------------
def write_stories_xz(path: Path, documents: list[str]) -> None:
    with lzma.open(path, "wt", encoding="utf-8") as handle:
        handle.write("".join(f"{doc}\n<|endoftext|>\n" for doc in documents))


def tagged_document(tag: str, words: int, per_paragraph: int = 45) -> str:
    """Words `<tag>w<i>` in sentences of 9 words, paragraphs of `per_paragraph` words."""
    tokens = [f"{tag}w{i}" + ("." if i % 9 == 8 else "") for i in range(words)]
    return "\n".join(" ".join(tokens[i : i + per_paragraph]) for i in range(0, words, per_paragraph))


@pytest.fixture
def book(tmp_path: Path) -> Path:
    """A 2,000-word chapter and 40 shorter documents, `stories` format, xz-compressed."""
    write_stories_xz(
        tmp_path / "book.txt.xz",
        [tagged_document("ch", 2000)] + [tagged_document(f"d{k}", 150 + 10 * k) for k in range(40)],
    )
    return tmp_path / "book.txt.xz"


def tag_of(piece: str) -> str:
    return piece.split()[0].rsplit("w", 1)[0]


def test_a_long_chapter_becomes_many_pieces_and_no_word_is_dropped(book: Path):
    corpus = data.build_corpus([Source(str(book), chunk_words=100)], 0.3, seed=0)
    chapter = [p for p in corpus.unique_train + corpus.val if tag_of(p) == "ch"]
    assert len(chapter) >= 20 and all(len(p.split()) <= 100 for p in chapter)
    assert [w for p in chapter for w in p.split()] == tagged_document("ch", 2000).split()
    words = sum(len(p.split()) for p in corpus.unique_train + corpus.val)
    assert words == 2000 + sum(150 + 10 * k for k in range(40))


def test_held_out_split_is_by_document_so_no_document_is_on_both_sides(book: Path):
    corpus = data.build_corpus([Source(str(book), chunk_words=60)], 0.3, seed=0)
    train_tags, val_tags = {tag_of(p) for p in corpus.train}, {tag_of(p) for p in corpus.val}
    assert train_tags and val_tags and not train_tags & val_tags
    assert len(corpus.val) > len(val_tags)  # held-out documents were chunked too


def test_val_max_caps_a_sources_held_out_pieces_and_val_counts_label_every_piece(book: Path, tmp_path: Path):
    uncapped = data.build_corpus([Source(str(book), chunk_words=60)], 0.3, seed=0)
    assert len(uncapped.val) > 5
    (tmp_path / "short.txt").write_text("\n".join(f"Short story number {i}." for i in range(300)))
    corpus = data.build_corpus(
        [Source(str(book), chunk_words=60, val_max=5), Source(str(tmp_path / "short.txt"), name="shorts")], 0.3, seed=0
    )
    assert corpus.val[:5] == uncapped.val[:5]
    assert corpus.val_counts["book"] == 5 and corpus.val_counts["shorts"] > 0
    assert sum(corpus.val_counts.values()) == len(corpus.val)


def test_per_source_validation_groups_hold_only_their_sources_pieces(tmp_path: Path):
    for name in ("x1", "y", "x2"):
        (tmp_path / f"{name}.txt").write_text("\n".join(f"{name} story number {i}." for i in range(200)))
    sources = [
        Source(str(tmp_path / "x1.txt"), name="x"),
        Source(str(tmp_path / "y.txt")),
        Source(str(tmp_path / "x2.txt"), name="x"),
    ]
    corpus = data.build_corpus(sources, 0.3, seed=0)
    groups = split_by_source(corpus.val, corpus.val_counts)
    assert sum(map(len, groups.values())) == len(corpus.val)
    assert all(piece.startswith("y ") for piece in groups["y"])
    assert all(piece.startswith("x1 ") for piece in groups["x"])
    assert all(piece.startswith("x2 ") for piece in groups["x-2"])  # a repeated label gets a suffix


# ----- globs and broken files -------------------------------------------------------
def test_a_glob_path_reads_exactly_the_matching_files(tmp_path: Path):
    for name in ("a1.txt", "a2.txt", "b.txt"):
        (tmp_path / name).write_text(f"A story from {name}.\n")
    (tmp_path / "a3.txt").mkdir()  # matches, but is no file
    texts = data.load_source(Source(str(tmp_path / "a*.txt")))["text"]
    assert list(texts) == ["A story from a1.txt.", "A story from a2.txt."]
    with pytest.raises(FileNotFoundError, match=r"z\*\.txt"):
        data.load_source(Source(str(tmp_path / "z*.txt")))


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_broken_xz_file_is_a_value_error_naming_the_file(tmp_path: Path, damage: str):
    rng = random.Random(0)
    path = tmp_path / "broken.txt.xz"
    write_stories_xz(
        path,
        [
            " ".join(rng.choice(["night", "door", "eyes", "cold"]) + str(rng.randrange(10**6)) for _ in range(300))
            for _ in range(50)
        ],
    )
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        middle = len(raw) // 2
        raw[middle : middle + 16] = bytes(b ^ 0xFF for b in raw[middle : middle + 16])
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="broken.txt.xz"):
        data.load_source(Source(str(path)))
    with pytest.raises(ValueError, match="broken.txt.xz"):
        data.build_corpus([Source(str(path), chunk_words=50)], 0.5, seed=0)


# ----- the token cache and chain sources --------------------------------------------
@pytest.fixture(scope="module")
def tokenizer() -> StoryTokenizer:
    rng = random.Random(0)
    texts = [
        f"The {rng.choice(['door', 'cellar', 'doll'])} {rng.choice(['creaked', 'laughed'])} at night."
        for _ in range(200)
    ]
    return StoryTokenizer.train(texts, vocab_size=300, min_frequency=1)


STORIES = ["The door creaked.", "The doll laughed at night.", "The cellar.", data.CHAIN_MARK + "The doll creaked."]


def test_tokenize_stories_wraps_each_story_in_its_start_token_and_eos(tokenizer: StoryTokenizer, tmp_path: Path):
    arrays = data.tokenize_stories(STORIES, tokenizer, tmp_path / "cache")
    assert len(arrays) == len(STORIES) and tokenizer.chain_id is not None
    for story, ids in zip(STORIES, arrays):
        start = tokenizer.chain_id if story.startswith(data.CHAIN_MARK) else tokenizer.bos_id
        assert ids.dtype == np.uint16
        assert ids.tolist() == [start, *tokenizer.encode(data.plain_text(story)), tokenizer.eos_id]


def test_second_tokenize_reads_the_memory_mapped_cache(tokenizer: StoryTokenizer, tmp_path: Path, monkeypatch):
    first = data.tokenize_stories(STORIES, tokenizer, tmp_path)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert {p.name for p in folder.iterdir()} == {"ids.npy", "offsets.npy"}
    monkeypatch.setattr(tokenizer, "encode_batch", lambda texts: pytest.fail("the cache was not used"))
    second = data.tokenize_stories(STORIES, tokenizer, tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert all(isinstance(ids, np.memmap) or isinstance(ids.base, np.memmap) for ids in second)


def test_a_killed_writers_temporary_folder_is_never_read_as_a_cache(tokenizer: StoryTokenizer, tmp_path: Path):
    expected = [ids.tolist() for ids in data.tokenize_stories(STORIES, tokenizer, tmp_path / "clean")]
    (key,) = [p.name for p in (tmp_path / "clean").iterdir()]
    leftover = tmp_path / "cache" / f"{key}.1234.5678.tmp"
    leftover.mkdir(parents=True)
    np.save(leftover / "ids.npy", np.array([7, 7, 7], dtype=np.uint16))  # partial: no offsets.npy
    arrays = data.tokenize_stories(STORIES, tokenizer, tmp_path / "cache")
    assert [ids.tolist() for ids in arrays] == expected
    assert (tmp_path / "cache" / key / "ids.npy").is_file() and (tmp_path / "cache" / key / "offsets.npy").is_file()


def test_a_chain_story_needs_a_tokenizer_with_the_chain_token(tokenizer: StoryTokenizer, tmp_path: Path):
    from tokenizers import Tokenizer

    renamed = Tokenizer.from_str(tokenizer.tokenizer.to_str().replace("<CHAIN>", "<NOCHAIN>"))
    old = StoryTokenizer(renamed)
    assert old.chain_id is None
    data.tokenize_stories(STORIES[:3], old, tmp_path)  # plain stories still work
    with pytest.raises(ValueError, match="<CHAIN>"):
        data.tokenize_stories(STORIES, old, tmp_path)


def test_a_chain_source_marks_its_pieces_and_plain_text_strips_the_mark(tmp_path: Path):
    (tmp_path / "chains.txt").write_text("\n".join(f"Chain {i} begins. It goes on. It ends." for i in range(100)))
    (tmp_path / "plain.txt").write_text("\n".join(f"Story {i} is short." for i in range(100)))
    corpus = data.build_corpus(
        [Source(str(tmp_path / "chains.txt"), chain=True), Source(str(tmp_path / "plain.txt"))], 0.3, seed=0
    )
    for piece in corpus.train + corpus.val + corpus.unique_train:
        assert piece.startswith(data.CHAIN_MARK) == piece.startswith(data.CHAIN_MARK + "Chain")
        assert data.plain_text(piece) == piece.removeprefix(data.CHAIN_MARK)
        assert data.CHAIN_MARK not in data.plain_text(piece)
    assert any(p.startswith(data.CHAIN_MARK) for p in corpus.val) and any(p.startswith("Story") for p in corpus.val)


# ----- hardware ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "flags, native", [("fpu avx2 avx512_bf16 fma", True), ("sse amx_bf16", True), ("avx2 fma", False), ("", False)]
)
def test_native_bf16_is_read_from_the_cpu_flags(flags: str, native: bool):
    assert hardware.has_native_bf16(flags) is native


def test_training_precision_keeps_an_explicit_choice_and_resolves_auto(monkeypatch):
    assert hardware.training_precision("no") == "no" and hardware.training_precision("bf16") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: {"flags": "avx2 fma"})
    assert hardware.training_precision("auto") == "no"
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: {"flags": "avx2 amx_bf16"})
    assert hardware.training_precision("auto") == "bf16"
    assert isinstance(hardware.describe_cpu(), str) and hardware.describe_cpu()


# ----- per-group validation loss ----------------------------------------------------
@pytest.fixture
def accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(reset_partial_state=True)  # leave no state for other in-process runs


def test_overall_validation_loss_is_the_token_weighted_mean_of_the_groups(accelerator):
    torch.manual_seed(0)
    model = GPT(model_preset("test-tiny"))
    rng = np.random.default_rng(0)
    rows = rng.integers(4, 512, size=(7, 65)).astype(np.uint16)
    rows[1, 20:], rows[5, 40:] = 0, 0  # padding: the groups hold different numbers of real targets
    overall, by_group = evaluate(model, rows, accelerator, pad_id=0, batch_size=2, groups={"a": (0, 3), "b": (3, 7)})
    assert model.training  # evaluation hands the model back in training mode
    with torch.no_grad():
        batch = torch.from_numpy(rows.astype(np.int64))
        logits = model.eval()(batch[:, :-1])
        per_token = F.cross_entropy(logits.reshape(-1, 512), batch[:, 1:].reshape(-1), ignore_index=0, reduction="none")
    per_token, real = per_token.view(7, 64), batch[:, 1:] != 0
    expected = {"a": (per_token[:3].sum() / real[:3].sum()).item(), "b": (per_token[3:].sum() / real[3:].sum()).item()}
    assert overall == pytest.approx((per_token.sum() / real.sum()).item(), abs=1e-4)
    assert by_group == pytest.approx(expected, abs=1e-4)
    weighted = (by_group["a"] * real[:3].sum() + by_group["b"] * real[3:].sum()) / real.sum()
    assert overall == pytest.approx(weighted.item(), abs=1e-4)
    assert evaluate(model, rows, accelerator, 0, 4)[1] == {}  # no groups: the overall loss only
