"""The model card's YAML is what the Hub reads: huggingface_hub.ModelCard parses it into the library,
task, data, licence and a model-index holding the validation losses (and bits/byte when known)."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard

from horror.config import model_preset
from horror.hub import BUNDLED_MODEL_DIR
from horror.model import GPT
from train.export import model_card
from train.run_config import TrainConfig


def run_facts(bits_per_byte: float | None = None) -> dict:
    """card.json as export.run_facts writes it for a run that pretrained on a Hub dataset and a local file."""
    phase = dict(train_kept=900, train_kept_share=0.97, val_kept=50)
    facts = {
        "data": {
            "pretrain": {
                **phase,
                "sources": [
                    {"source": "roneneldan/TinyStories", "weight": 1.0},
                    {"source": "data/horror/", "weight": 1.0},
                ],
            },
            "finetune": {**phase, "sources": [{"source": "data/horror/", "weight": 1.0}]},
        },
        "val_loss": {"pretrain": 3.8562, "finetune": 4.2151},
        "tokens_seen": {"pretrain": 1000, "finetune": 500},
        "wall_seconds": 60.0,
    }
    if bits_per_byte is not None:
        facts["bits_per_byte"] = bits_per_byte
    return facts


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(model_preset("test-tiny"))


def results_by_metric(card: ModelCard) -> dict[tuple[str, str], float]:
    return {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}


def test_the_card_yaml_is_what_the_hub_reads(model):
    card = ModelCard(model_card(TrainConfig(name="D"), model, run_facts()))
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert (data["license"], data["language"]) == ("mit", "en")
    assert data["datasets"] == ["roneneldan/TinyStories"]  # the local file is no Hub dataset
    assert data["model-index"][0]["name"] == "D"
    assert results_by_metric(card) == {
        ("pretraining data, held-out stories", "loss"): 3.8562,
        ("fine-tuning data, held-out stories", "loss"): 4.2151,
    }
    assert all(r.task_type == "text-generation" and r.dataset_split == "validation" for r in card.data.eval_results)
    assert card.text.lstrip().startswith("# Two-Sentence Horror — D")


def test_bits_per_byte_join_the_fine_tuning_result_when_known(model):
    card = ModelCard(model_card(TrainConfig(name="D"), model, run_facts(bits_per_byte=1.457)))
    assert results_by_metric(card)[("fine-tuning data, held-out stories", "bits_per_byte")] == 1.457
    finetune = [r for r in card.data.to_dict()["model-index"][0]["results"] if "fine-tuning" in r["dataset"]["name"]]
    assert [m["type"] for m in finetune[0]["metrics"]] == ["loss", "bits_per_byte"]  # one result, two metrics


def test_an_unfinished_run_has_no_scores_to_claim(model):
    facts = {**run_facts(), "val_loss": {}}
    data = ModelCard(model_card(TrainConfig(name="D"), model, facts)).data.to_dict()
    assert "model-index" not in data and data["library_name"] == "transformers"


def test_the_bundled_card_says_transformers_and_carries_its_scores():
    card = ModelCard.load(BUNDLED_MODEL_DIR / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    facts = json.loads((BUNDLED_MODEL_DIR / "card.json").read_text())  # what the run measured
    metrics = [(r.metric_type, r.metric_value) for r in card.data.eval_results]
    assert ("bits_per_byte", facts["bits_per_byte"]) in metrics
    assert {value for kind, value in metrics if kind == "loss"} == set(facts["val_loss"].values())
