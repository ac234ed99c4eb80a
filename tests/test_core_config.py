import json

import pytest

import perforate as pf


def test_defaults_are_valid_and_documented_values():
    cfg = pf.Config()
    assert cfg.mode == "gd" and cfg.patience == 10 and cfg.max_growth_retries == 1
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
    ("candidates", 0, ">= 1"),
    ("dendrite_patience", 0, ">= 1"),
    ("dendrite_max_epochs", 0, ">= 1"),
    ("maximize", "yes", "true or false"),
    ("include", [1], "glob"),
    ("exclude", 3, "glob"),
    ("neuron_axis", {"a": "x"}, "axis"),
    ("checkpoint_best", "cloud", "memory"),
    ("correlation_decay", 1.0, "[0, 1)"),
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
