"""Renamed Config fields: the new names are the fields, the old ones still work with a
DeprecationWarning, and files keep the keys version 0.1.0 wrote (both ways of a resume work)."""
from __future__ import annotations

import warnings

import pytest

import perforate as pf
from perforate.config import RENAMED_FIELDS

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
