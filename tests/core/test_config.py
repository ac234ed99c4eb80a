import json

import pytest
import torch

import perforate as pf


def test_defaults_are_valid_and_documented_values():
    cfg = pf.Config()
    assert cfg.mode == "gd" and cfg.patience == 20 and cfg.smoothing == 3 and cfg.max_epochs == 0 and cfg.max_growth_retries == 0
    assert cfg.maximize is True and cfg.include == ["*"] and cfg.exclude == []


@pytest.mark.parametrize("field,value,allowed", [
    ("mode", "cc", "gd"),
    ("dendrite_activation", "swish", "sigmoid"),
    ("patience", 0, ">= 1"),
    ("patience", 2.5, "integer"),
    ("max_dendrites", -1, ">= 0"),
    ("max_growth_retries", -1, ">= 0"),
    ("improvement_threshold", -0.1, ">= 0"),
    ("improvement_threshold_abs", float("nan"), "finite"),
    ("init_scale", 0.0, "> 0"),
    ("candidates", 0, "in [1, 1024]"),
    ("dendrite_patience", 0, ">= 1"),
    ("dendrite_max_epochs", 0, ">= 1"),
    ("maximize", "yes", "true or false"),
    ("include", [1], "glob"),
    ("exclude", 3, "glob"),
    ("neuron_axis", {"a": "x"}, "axis"),
    ("checkpoint_best", "cloud", "memory"),
    ("correlation_decay", 1.0, "[0, 1)"),
    # accepted once, then failing at the first growth (overflow) or making outputs NaN
    ("seed", 2**45, "[0, 4294967295]"),
    ("init_scale", 1e300, "<= 1000"),
    ("candidates", 10**7, "in [1, 1024]"),
    ("candidate_lr_scale", float("inf"), "finite"),
    ("patience", 2**70, "integer"),
])
def test_bad_values_name_the_field_and_allowed_values(field, value, allowed):
    with pytest.raises(pf.ConfigError) as err:
        pf.Config(**{field: value})
    assert field in str(err.value) and allowed in str(err.value)
    assert isinstance(err.value, pf.PerforateError) and isinstance(err.value, ValueError)


def test_unknown_key_lists_known_fields():
    with pytest.raises(pf.ConfigError, match="unknown config field.*patiense.*known fields.*patience"):
        pf.Config.from_dict({"patiense": 3})


def test_single_pattern_string_becomes_list():
    assert pf.Config(include="encoder.*").include == ["encoder.*"]


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_file_roundtrip(tmp_path, suffix):
    cfg = pf.Config(mode="pb", patience=3, exclude=["head"], neuron_axis={"seq.*": -1}, candidates=4)
    path = tmp_path / f"cfg{suffix}"
    cfg.save(path)
    assert pf.Config.load(path) == cfg


def test_file_with_bad_value_names_field(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"mode": "gradient"}))
    with pytest.raises(pf.ConfigError, match="mode must be one of"):
        pf.Config.load(path)
    with pytest.raises(pf.ConfigError, match=".toml, .yaml"):
        pf.Config.load(tmp_path / "c.ini")


def test_better_respects_direction_and_thresholds():
    acc = pf.Config(improvement_threshold=0.01, improvement_threshold_abs=0.5)
    assert acc.better(80.0, None)
    assert not acc.better(80.4, 80.0)  # below the absolute floor
    assert acc.better(80.9, 80.0)
    loss = pf.Config(maximize=False, improvement_threshold=0.1)
    assert loss.better(0.8, 1.0) and not loss.better(0.95, 1.0) and not loss.better(1.2, 1.0)


def test_score_mode_and_maximize_are_one_setting():
    assert (pf.Config().score_mode, pf.Config().maximize) == ("max", True)
    loss = pf.Config(score_mode="min")
    assert loss.maximize is False and pf.Config(maximize=False).score_mode == "min"
    assert loss.better(0.8, 1.0) and not loss.better(1.2, 1.0)
    loss.maximize = True  # set live (e.g. by an integration): the other follows
    assert loss.score_mode == "max" and loss.better(1.2, 1.0)
    loss.score_mode = "min"
    assert loss.maximize is False
    assert loss.replace(maximize=True).score_mode == "max"
    assert loss.replace(score_mode="max").maximize is True
    with pytest.raises(pf.ConfigError, match="disagree"):
        pf.Config(score_mode="min", maximize=True)
    with pytest.raises(pf.ConfigError, match=r"score_mode must be one of \['max', 'min'\]"):
        loss.score_mode = "minimize"
    assert loss.score_mode == "min"  # a refused value changes nothing


@pytest.mark.parametrize("data", [{"score_mode": "min"}, {"maximize": False},
                                  {"score_mode": "min", "maximize": False}])
def test_files_with_either_spelling_load(tmp_path, data):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    cfg = pf.Config.load(path)
    assert (cfg.score_mode, cfg.maximize) == ("min", False)
    cfg.save(tmp_path / "c.toml")
    assert pf.Config.load(tmp_path / "c.toml") == cfg


def test_fields_set_later_are_validated_and_a_rejected_value_changes_nothing():
    cfg = pf.Config()
    with pytest.raises(pf.ConfigError, match="^mode must be one of"):
        cfg.mode = "bogus"
    assert cfg.mode == "gd" and cfg == pf.Config()
    with pytest.raises(pf.ConfigError, match="^seed must be an integer in"):
        cfg.seed = 2**45
    with pytest.raises(pf.ConfigError, match="^maximize must be true or false"):
        cfg.maximize = None  # found by the fuzzer: once silently meant "max"
    cfg.patience, cfg.include = 3, "encoder.*"  # good values go through (and are normalised)
    assert cfg.patience == 3 and cfg.include == ["encoder.*"]
    cfg.exclude.append(7)  # a list changed in place is caught when a grower starts
    with pytest.raises(pf.ConfigError, match="^exclude must be a list"):
        pf.Grower(torch.nn.Linear(2, 2), cfg, lambda p: torch.optim.SGD(p, lr=0.1))


@pytest.mark.parametrize("maximize,first", [(True, float("-inf")), (False, float("inf"))])
def test_an_infinite_first_score_does_not_freeze_the_best(maximize, first):
    cfg = pf.Config(maximize=maximize, patience=2, max_dendrites=0)
    later = [0.5, 0.6] if maximize else [0.5, 0.4]
    assert cfg.better(later[0], first) and not cfg.better(first, later[0])
    grower = pf.Grower(torch.nn.Linear(2, 2), cfg, lambda p: torch.optim.SGD(p, lr=0.1))
    for score in [first, *later, later[1], later[1]]:
        grower.step(score)
    assert grower.done and grower.state.best_score == later[1] and grower.state.best_epoch == 2


def test_config_files_that_are_not_utf8_or_aliases_bombs_give_short_config_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"mode: \xff\xfe pb\n")
    with pytest.raises(pf.ConfigError, match="not UTF-8 text.*save it as UTF-8"):
        pf.Config.load(path)
    levels = ['&a ["x","x","x","x","x","x","x","x","x"]']
    levels += [f"&{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    path.write_text(f"include: [{', '.join(levels)}]\n")  # 9**9 strings when expanded
    with pytest.raises(pf.ConfigError, match="^include must be a list") as err:
        pf.Config.load(path)
    assert len(str(err.value)) < 300


def test_save_creates_missing_folders(tmp_path):
    cfg = pf.Config(mode="pb")
    cfg.save(tmp_path / "new" / "deeper" / "cfg.toml")
    assert pf.Config.load(tmp_path / "new" / "deeper" / "cfg.toml") == cfg
    (tmp_path / "file").write_text("")
    with pytest.raises(pf.ConfigError, match="cannot write config file"):
        cfg.save(tmp_path / "file" / "cfg.json")


def test_long_messages_are_cut_to_a_readable_length():
    err = pf.CheckpointError("x" * 10**6)
    assert len(str(err)) <= 1000 and "characters cut" in str(err)
