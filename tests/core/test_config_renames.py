"""Renamed Config fields: the new names are the fields, the old ones still work with a
DeprecationWarning, and files keep the keys version 0.1.0 wrote (both ways of a resume work)."""
from __future__ import annotations

import warnings

import pytest

import perforate as pf
from perforate.config import CHECKPOINT_POLICIES, RENAMED_FIELDS, RENAMED_VALUES

# what Config.to_dict wrote before the renames, in order: a run saved now must resume on that code
FILE_KEYS_0_1_0 = [
    "mode", "patience", "smoothing", "max_epochs", "overfit_gap", "train_rise", "growth_lr_scale",
    "improvement_threshold", "improvement_threshold_abs", "score_mode", "maximize", "score_name",
    "max_dendrites", "max_growth_retries", "trial", "dendrite_activation", "init_scale", "include",
    "exclude", "output_head", "neuron_axis", "dendrite_inputs", "dendrite_input_choice", "seed",
    "snapshot_device", "candidates", "candidate_training", "candidate_steps", "candidate_lr",
    "candidate_passes", "candidate_cache_mb", "min_correlation", "dendrite_patience",
    "dendrite_max_epochs", "correlation_decay", "candidate_lr_scale", "correlation_improvement",
    "correlation_floor", "checkpoint_best", "checkpoint_every", "plots",
]
VALUES = {"min_correlation": 0.2, "correlation_floor": 0.3, "correlation_improvement": 0.04}


@pytest.mark.parametrize("old", sorted(RENAMED_FIELDS))
def test_an_old_field_name_warns_and_sets_the_new_field(old):
    new = RENAMED_FIELDS[old]
    with pytest.warns(DeprecationWarning, match=f"'{old}' is renamed '{new}'"):
        cfg = pf.Config(mode="pb", **{old: VALUES[old]})
    assert getattr(cfg, new) == VALUES[old] == getattr(cfg, old)
    with pytest.warns(DeprecationWarning, match=new):
        setattr(cfg, old, 0.5)
    assert getattr(cfg, new) == 0.5
    with pytest.warns(DeprecationWarning, match=new):
        assert getattr(cfg.replace(**{old: 0.6}), new) == 0.6
    with pytest.raises(pf.ConfigError, match=f"^{old} is the old name of {new}"):
        pf.Config(**{old: 0.1, new: 0.2})
    with pytest.raises(pf.ConfigError, match=new):  # the value is still checked
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            setattr(cfg, old, -1.0)
    assert getattr(cfg, new) == 0.5  # a rejected value leaves the config unchanged


def test_maximize_is_the_old_spelling_of_score_mode():
    with pytest.warns(DeprecationWarning, match="'maximize' is renamed 'score_mode'"):
        cfg = pf.Config(maximize=False)
    assert (cfg.score_mode, cfg.maximize) == ("min", False)
    with pytest.warns(DeprecationWarning, match="score_mode"):
        cfg.maximize = True
    assert cfg.score_mode == "max"
    assert "maximize" not in {f for f in pf.Config.__dataclass_fields__}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reading it, and using score_mode, warn nothing
        assert pf.Config(score_mode="min").replace(improvement_threshold=0.1).maximize is False


def test_files_keep_the_old_keys_and_read_back_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = pf.Config(mode="pb", score_mode="min", join_min_correlation=0.2, warn_min_correlation=0.3,
                        dendrite_improvement_threshold=0.04)
        data = cfg.to_dict()
        assert list(data) == FILE_KEYS_0_1_0
        assert (data["min_correlation"], data["correlation_floor"], data["correlation_improvement"],
                data["maximize"]) == (0.2, 0.3, 0.04, False)
        assert pf.Config.from_dict(data) == cfg  # a run saved before the renames, or by this code
        current = {RENAMED_FIELDS.get(k, k): v for k, v in data.items() if k != "maximize"}
        assert pf.Config.from_dict(current) == cfg  # a file written with the new names
    with pytest.raises(pf.ConfigError, match="unknown config field"):
        pf.Config.from_dict({"min_corelation": 0.1})


@pytest.mark.parametrize("old, new", sorted(RENAMED_VALUES["checkpoint_best"].items()))
def test_an_old_checkpoint_best_value_warns_and_becomes_the_new_one(old, new):
    with pytest.warns(DeprecationWarning, match=f"checkpoint_best='{old}' is renamed checkpoint_best='{new}'"):
        cfg = pf.Config(checkpoint_best=old)
    assert cfg.checkpoint_best == new and cfg == pf.Config(checkpoint_best=new)
    other = "events" if new == "every_best" else "every_best"
    with pytest.warns(DeprecationWarning, match=f"renamed checkpoint_best='{new}'"):
        assert pf.Config(checkpoint_best=other).replace(checkpoint_best=old).checkpoint_best == new
    cfg.checkpoint_best = other
    with pytest.warns(DeprecationWarning, match=f"renamed checkpoint_best='{new}'"):
        cfg.checkpoint_best = old
    assert cfg.checkpoint_best == new
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # files: the old value written, either read, silently
        assert cfg.to_dict()["checkpoint_best"] == old
        assert pf.Config.from_dict({"checkpoint_best": old}) == cfg == pf.Config.from_dict(
            {"checkpoint_best": new})
        assert pf.Config.from_dict(cfg.to_dict()) == cfg


def test_checkpoint_best_values_say_when_best_pt_is_written():
    assert pf.Config().checkpoint_best == "events"
    assert set(RENAMED_VALUES["checkpoint_best"].values()) == set(CHECKPOINT_POLICIES)
    with pytest.raises(pf.ConfigError, match=r"\['events', 'every_best'\] \(formerly 'memory' and 'disk'\)"):
        pf.Config(checkpoint_best="cloud")
    cfg = pf.Config()
    with pytest.raises(pf.ConfigError, match="every_best"):
        cfg.checkpoint_best = "always"
    assert cfg.checkpoint_best == "events"  # a rejected value leaves the config unchanged


@pytest.mark.parametrize("value", ["events", "every_best", "memory", "disk"])
def test_best_pt_follows_each_new_best_only_with_every_best(value, tmp_path):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cfg = pf.Config(checkpoint_best=value)
    model = pf.perforate(torch.nn.Sequential(torch.nn.Linear(2, 2)), cfg)
    grower = pf.Grower(model, cfg, lambda params: torch.optim.Adam(params, lr=1e-3), out_dir=tmp_path)
    grower.step(0.5)  # a new best, no growth event
    grower.flush()
    assert (tmp_path / "best.pt").exists() == (cfg.checkpoint_best == "every_best")
    grower.finish()
    assert (tmp_path / "best.pt").exists()  # the end writes it either way
