"""GPA.pc: every reference setting is known, schedules, unknown and unsupported names, attribute styles."""
import logging

import pytest
import torch

from perforate.compat.perforatedai import globals_perforatedai as GPA
from perforate.compat.perforatedai import pb_globals as PBG
from perforate.compat.perforatedai import utils_perforatedai as UPA
from perforate.compat.perforatedai.errors import CompatConfigError

from tests.helpers.compat import mlp

# every set_* that GPA.pc of perforatedai 3.2.9 has (read from the installed wheel)
REFERENCE_3_2_9 = """candidate_weight_init_by_main candidate_weight_initialization_multiplier
checked_skipped_modules config_file configuration_confirmed confirm_correct_sizes d_type dashboard_debug
dashboard_events_enabled dashboard_url debugging_output_dimensions device
dont_give_up_unless_learning_rate_lowered drawing_extra_graphs drawing_pai extra_verbose find_best_lr
first_fixed_switch_num fixed_switch_num global_candidates history_lookback improvement_threshold
improvement_threshold_raw initial_history_after_switches learn_dendrites_live library_extra_scores
library_extra_scores_without_graphing library_validation_score max_dendrite_tries max_dendrites
maximizing_score module_by_name_processing_classes module_ids_to_perforate module_ids_to_track
module_names_to_not_save module_names_to_perforate module_names_to_track module_names_with_processing
modules_processing_classes modules_to_perforate modules_to_replace modules_to_track
modules_with_processing n_epochs_to_switch no_extra_n_modes output_dimensions pai_forward_function
pai_saves param_vals_setting parameter_ids_to_track perforated_backpropagation replacement_modules
reset_best_score_on_switch retain_all_dendrites save_name save_old_graph_scores silent strict_loading
switch_mode test_saves testing_dendrite_capacity unwrapped_modules_confirmed use_cuda using_safe_tensors
verbose weight_decay_accepted weight_tying_experimental""".split()
OLDER_AND_PAID = """modules_to_convert module_names_to_convert module_ids_to_convert input_dimensions
debugging_input_dimensions p_epochs_to_switch cap_at_n pai_improvement_threshold
pai_improvement_threshold_raw initial_correlation_batches dendrite_update_mode dendrite_graph_mode
debugging_memory_leak pai_email pai_token""".split()


def test_every_reference_setting_is_known_and_round_trips(fresh, caplog):
    for name in REFERENCE_3_2_9 + OLDER_AND_PAID:
        value = getattr(GPA.pc, f"get_{name}")()
        with caplog.at_level(logging.WARNING, "perforate"):
            getattr(GPA.pc, f"set_{name}")(value)
        assert getattr(GPA.pc, f"get_{name}")() == value, name
    assert "has no setting" not in caplog.text


def test_a_list_on_a_scalar_setting_is_a_schedule_by_dendrite_count(fresh):
    GPA.pc.set_improvement_threshold([0.01, 0.001, 0])
    assert [GPA.pc.value("improvement_threshold", n) for n in (0, 1, 2, 7)] == [0.01, 0.001, 0, 0]
    assert GPA.pc.get_improvement_threshold() == 0.01  # no dendrites yet
    GPA.pc.append_module_names_to_perforate(["Block"])
    assert GPA.pc.get_module_names_to_perforate()[-1] == "Block"  # list settings come whole


def test_unknown_names_log_one_line_with_a_suggestion_and_are_ignored(fresh, caplog):
    with caplog.at_level(logging.WARNING, "perforate"):
        GPA.pc.set_n_epoch_to_switch(3)
        GPA.pc.set_n_epoch_to_switch(4)
    assert len(caplog.records) == 1
    assert "n_epoch_to_switch" in caplog.text and "did you mean 'n_epochs_to_switch'" in caplog.text
    assert GPA.pc.get_n_epochs_to_switch() == 10
    with pytest.raises(AttributeError, match="set_<name>"):
        GPA.pc.n_epochs_to_switch


def test_unsupported_settings_say_what_perforate_does_only_when_asked_for(fresh, caplog):
    with caplog.at_level(logging.WARNING, "perforate"):
        GPA.pc.set_find_best_lr(False)  # what perforate does anyway
        GPA.pc.set_retain_all_dendrites(True)
        GPA.pc.set_silent(True)
        GPA.pc.set_cap_at_n(True)  # silenced
    assert len(caplog.records) == 1 and "always rolled back" in caplog.text


def test_aliases_and_the_skill_md_name(fresh):
    GPA.pc.set_input_dimensions([-1, -1, 0])
    GPA.pc.set_n_fixed_switch_num(7)
    assert GPA.pc.get_output_dimensions() == [-1, -1, 0]
    assert GPA.pc.get_fixed_switch_num() == 7


def test_module_attribute_styles_of_older_generations(fresh):
    GPA.n_epochs_to_switch = 4  # 1.2.x
    PBG.maxDendrites = 2  # 1.0.x camelCase
    PBG.moduleNamesToConvert.append("BasicBlock")
    PBG.switchMode = PBG.doingFixedSwitch
    assert GPA.pc.get_n_epochs_to_switch() == 4 and GPA.pc.get_max_dendrites() == 2
    assert "BasicBlock" in GPA.pc.get_module_names_to_convert()
    assert GPA.pc.get_switch_mode() == GPA.pc.DOING_FIXED_SWITCH
    assert PBG.pbTracker is GPA.pai_tracker and PBG.PBSequential is GPA.PAISequential


def test_config_file_round_trip_hand_set_values_win(fresh, tmp_path):
    GPA.pc.set_n_epochs_to_switch(3)
    GPA.pc.set_max_dendrites(5)
    GPA.pc.save_config(tmp_path / "c.json")
    GPA.reset()
    GPA.pc.set_max_dendrites(2)
    UPA.perforate_model(mlp(), config_file=str(tmp_path / "c.json"))
    assert GPA.pc.get_n_epochs_to_switch() == 3 and GPA.pc.get_max_dendrites() == 2
    assert (tmp_path / "PAI" / "PAI_config.json").exists()


def test_bad_values_name_the_setting(fresh):
    GPA.pc.set_n_epochs_to_switch(0)
    with pytest.raises(CompatConfigError, match="set_n_epochs_to_switch"):
        UPA.perforate_model(mlp())
    GPA.pc.set_n_epochs_to_switch(3)
    GPA.pc.set_pai_forward_function(torch.nn.functional.silu)
    with pytest.raises(CompatConfigError, match="one of \\['sigmoid', 'tanh'"):
        UPA.perforate_model(mlp())
