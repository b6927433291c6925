"""train/grow.py: a deeper model that computes what the original computes, and then learns."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from horror.model_folder import load_model_folder
from horror.storyteller import StoryTeller
from train import grow


@pytest.mark.parametrize(
    ("old", "new", "after"),
    [(4, 4, []), (4, 5, [3]), (4, 6, [1, 3]), (4, 8, [0, 1, 2, 3]), (2, 6, [0, 0, 1, 1]), (3, 4, [2])],
)
def test_new_blocks_are_spread_evenly_through_the_depth(old: int, new: int, after: list[int]) -> None:
    assert grow.insertion_points(old, new) == after


def test_a_grown_model_gives_the_same_logits_and_has_the_new_depth(tiny_model_dir: Path) -> None:
    model = load_model_folder(tiny_model_dir).model.eval()
    old_layers = model.config.n_layers
    grown = grow.grow(model, 2 * old_layers + 1).eval()
    assert grown.config.n_layers == len(grown.blocks) == 2 * old_layers + 1
    assert grown.num_parameters() > model.num_parameters()
    tokens = torch.randint(0, model.config.vocab_size, (3, 17), generator=torch.Generator().manual_seed(0))
    assert torch.equal(grown(tokens), model(tokens))
    # The original is untouched, and the grown model shares no tensor with it.
    with torch.no_grad():
        grown.blocks[0].mlp.fc.weight.zero_()
        grown.token_embedding.weight.zero_()
    assert model.blocks[0].mlp.fc.weight.any() and model.token_embedding.weight.any()


def test_the_new_blocks_learn_after_one_step(tiny_model_dir: Path) -> None:
    grown = grow.grow(load_model_folder(tiny_model_dir).model, 4).train()
    new_block = grown.blocks[grow.insertion_points(2, 4)[0] + 1]
    assert not new_block.mlp.proj.weight.any()
    fc_before = new_block.mlp.fc.weight.detach().clone()
    optimizer = torch.optim.AdamW(grown.parameters(), lr=1e-2)
    tokens = torch.randint(0, grown.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        logits = grown(tokens[:, :-1])
        F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1)).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert new_block.mlp.proj.weight.any() and new_block.attn.proj.weight.any()
    assert not torch.equal(new_block.mlp.fc.weight, fc_before)


def test_the_command_writes_a_folder_that_tells_the_same_stories(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grow.main([str(tiny_model_dir), str(tmp_path / "deeper"), "--layers", "5"])
    assert "5 layers" in capsys.readouterr().out
    deeper = StoryTeller.load(tmp_path / "deeper", fallback=False)
    assert deeper.config.n_layers == 5
    original = StoryTeller.load(tiny_model_dir, fallback=False)
    for prompt in ("I heard a knock.", "The lights went out"):
        assert deeper.tell(prompt, seed=3).story == original.tell(prompt, seed=3).story


@pytest.mark.parametrize("layers", ["1", "65"])
def test_shrinking_or_an_absurd_depth_is_refused(tiny_model_dir: Path, tmp_path: Path, layers: str) -> None:
    with pytest.raises(SystemExit):
        grow.main([str(tiny_model_dir), str(tmp_path / "out"), "--layers", layers])
    assert not (tmp_path / "out").exists()


def test_growing_a_folder_into_itself_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(SystemExit):
        grow.main([str(tiny_model_dir), str(tiny_model_dir), "--layers", "4"])
