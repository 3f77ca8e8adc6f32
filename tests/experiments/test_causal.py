"""Choices of the causal report that do not need a model: layer grid and concept order."""

from experiments.causal import CausalConfig, layer_grid
from experiments.sign_flips import PREFERRED, pick_concepts


def test_layer_grid_takes_every_step_and_the_last_layer():
    assert layer_grid(30, 3) == [2, 5, 8, 11, 14, 17, 20, 23, 26, 29]
    assert layer_grid(30, 6) == [5, 11, 17, 23, 29]
    assert layer_grid(18, 4) == [3, 7, 11, 15, 17]  # the last block always joins
    assert layer_grid(3, 1) == [0, 1, 2]
    assert layer_grid(2, 5) == [1]


def test_pick_concepts_prefers_the_listed_order_and_tops_up_without_repeats():
    assert len(PREFERRED) == len(set(PREFERRED))
    names = ["zebra_thing", "city", "country", "other", "vertebrate"]
    assert pick_concepts(names, 2) == ["vertebrate", "country"]
    assert pick_concepts(names, 4) == ["vertebrate", "country", "city", "zebra_thing"]
    assert pick_concepts(names, 10) == ["vertebrate", "country", "city", "zebra_thing", "other"]


def test_causal_config_defaults_match_the_shipped_report():
    cfg = CausalConfig()
    assert (cfg.layer_step, cfg.e5_step, cfg.concepts, cfg.prompts, cfg.top_n) == (3, 6, 12, 3, 200)
    assert str(cfg.out_dir) == "runs/smollm2/reports"
