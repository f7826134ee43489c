"""Run configuration: strict validation, helpful messages, YAML loading and --set overrides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from tfkd_search.config import (
    METHODS,
    NUM_CLASSES,
    RunConfig,
    build_run_config,
    config_to_dict,
    flatten,
    get_path,
    load_run_config,
    parse_set,
    read_yaml,
    set_path,
    with_overrides,
)
from tfkd_search.errors import ConfigError


def _error(raw, source: str = "config") -> str:
    with pytest.raises(ConfigError) as exc:
        build_run_config(raw, source=source)
    return str(exc.value)


def _lines(msg: str) -> list[str]:
    return [ln.strip() for ln in msg.splitlines()[1:] if ln.strip()]


# ---------------------------------------------------------------------------------------------------
# Defaults and round trips


def test_defaults_build():
    cfg = build_run_config({})
    assert isinstance(cfg, RunConfig)
    assert cfg.method == "ce" and cfg.model == "tiny_cnn"
    assert cfg.data.dataset == "digits" and cfg.num_classes == 10
    # the paper's recipe (tfkd_method.md 3.1): SGD 0.1 per 128, momentum 0.9, wd 5e-4, 200 epochs,
    # x0.2 at 60/120/160, one warm-up epoch
    assert (cfg.optim.lr, cfg.optim.lr_batch, cfg.optim.batch_size) == (0.1, 128, 128)
    assert (cfg.optim.momentum, cfg.optim.weight_decay) == (0.9, 5e-4)
    assert cfg.schedule.epochs == 200 and cfg.schedule.milestones == (60, 120, 160)
    assert cfg.schedule.gamma == 0.2 and cfg.schedule.warmup_epochs == 1
    assert cfg.schedule.trained_epochs == 200
    assert cfg.loss.semantics == "paper" and cfg.loss.a == 0.99
    assert cfg.teacher is None


def test_config_is_frozen():
    cfg = build_run_config({})
    with pytest.raises(ValidationError):
        cfg.seed = 3  # type: ignore[misc]


def test_config_to_dict_round_trips():
    raw = {"method": "tfkd_reg", "loss": {"tau": 40, "alpha": 0.95, "semantics": "official"},
           "schedule": {"epochs": 70, "milestones": [20, 40]}, "keep_checkpoints": [1, 5]}
    cfg = build_run_config(raw)
    d = config_to_dict(cfg)
    assert d["schedule"]["milestones"] == [20, 40]  # tuples become lists
    assert isinstance(d["keep_checkpoints"], list)
    assert build_run_config(d) == cfg
    flat = flatten(d)
    assert flat["loss.tau"] == 40.0 and flat["schedule.epochs"] == 70


# ---------------------------------------------------------------------------------------------------
# Unknown keys, wrong types, ranges


def test_unknown_top_level_key_has_hint():
    msg = _error({"sead": 3})
    assert "sead" in msg and "unknown key" in msg
    assert "Did you mean 'seed'" in msg


def test_unknown_nested_key_names_path_and_hint():
    msg = _error({"loss": {"tua": 2}}, source="my.yaml")
    (line,) = _lines(msg)
    assert line.startswith("my.yaml: loss.tua:"), line
    assert "Did you mean 'tau'" in line
    assert "tau" in line.split("Did you mean", 1)[1]


def test_unknown_key_deeper_section():
    msg = _error({"schedule": {"milestone": [5]}})
    assert "schedule.milestone" in msg and "Did you mean 'milestones'" in msg


@pytest.mark.parametrize("raw,path,bad", [
    ({"seed": "x"}, "seed", "'x'"),
    ({"optim": {"batch_size": "big"}}, "optim.batch_size", "'big'"),
    ({"optim": {"batch_size": 12.5}}, "optim.batch_size", "12.5"),
    ({"loss": {"tau": "hot"}}, "loss.tau", "'hot'"),
    ({"loss": 5}, "loss", "5"),
    ({"schedule": {"milestones": 5}}, "schedule.milestones", "5"),
    ({"device": "tpu"}, "device", "'tpu'"),
    ({"loss": {"semantics": "offical"}}, "loss.semantics", "'offical'"),
])
def test_wrong_types(raw, path, bad):
    (line,) = _lines(_error(raw))
    assert line.startswith(f"config: {path}:"), line
    assert f"(got {bad})" in line


@pytest.mark.parametrize("alpha", [-0.1, 1.01, 5])
def test_alpha_out_of_range(alpha):
    (line,) = _lines(_error({"loss": {"alpha": alpha}}))
    assert "loss.alpha" in line and str(alpha) in line


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.5])
def test_alpha_in_range(alpha):
    assert build_run_config({"loss": {"alpha": alpha}}).loss.alpha == alpha


@pytest.mark.parametrize("raw,path", [
    ({"loss": {"tau": 0}}, "loss.tau"),
    ({"loss": {"tau": -1}}, "loss.tau"),
    ({"loss": {"eps": 1.0}}, "loss.eps"),
    ({"loss": {"multiplier": 0}}, "loss.multiplier"),
    ({"loss": {"a": 1.5}}, "loss.a"),
    ({"optim": {"lr": 0}}, "optim.lr"),
    ({"optim": {"momentum": 1.0}}, "optim.momentum"),
    ({"data": {"val_fraction": 0.9}}, "data.val_fraction"),
    ({"checkpoint_every": 0}, "checkpoint_every"),
])
def test_other_ranges(raw, path):
    assert f"config: {path}:" in _error(raw)


# ---------------------------------------------------------------------------------------------------
# Cross-field checks


def test_tfkd_reg_a_must_exceed_one_over_c_on_cifar100():
    raw = {"method": "tfkd_reg", "data": {"dataset": "cifar100"}, "loss": {"a": 0.01}}
    msg = _error(raw)
    assert "loss.a" in msg and "0.01" in msg and "C=100" in msg
    raw["loss"]["a"] = 0.011
    cfg = build_run_config(raw)
    assert cfg.loss.a == 0.011 and cfg.num_classes == 100


def test_tfkd_reg_a_on_ten_classes():
    msg = _error({"method": "tfkd_reg", "loss": {"a": 0.1}})
    assert "loss.a" in msg and "C=10" in msg
    assert build_run_config({"method": "tfkd_reg", "loss": {"a": 0.11}}).loss.a == 0.11
    # `a` is only constrained for tfkd_reg
    assert build_run_config({"method": "ce", "loss": {"a": 0.05}}).loss.a == 0.05


@pytest.mark.parametrize("raw,path,bad,hint", [
    ({"model": "resnet19"}, "model", "resnet19", "resnet18"),
    ({"method": "tfkd_regg"}, "method", "tfkd_regg", "tfkd_reg"),
    ({"data": {"dataset": "cifar1000"}}, "data.dataset", "cifar1000", "cifar100"),
    ({"data": {"dataset": "digit"}}, "data.dataset", "digit", "digits"),
    ({"method": "kd", "teacher": {"checkpoint": "t.pt", "model": "mobilenetv3"}}, "teacher.model",
     "mobilenetv3", "mobilenetv2"),
])
def test_unknown_names_have_close_match(raw, path, bad, hint):
    (line,) = _lines(_error(raw))
    assert line.startswith(f"config: {path}:"), line
    assert repr(bad) in line
    assert f"Did you mean {hint!r}?" in line
    assert "Available:" in line


def test_unknown_name_without_close_match_lists_choices():
    (line,) = _lines(_error({"method": "zzzzzz"}))
    assert "Did you mean" not in line
    for m in METHODS:
        assert m in line


@pytest.mark.parametrize("method", ["kd", "tfkd_self"])
def test_teacher_methods_need_a_teacher(method):
    msg = _error({"method": method})
    assert "teacher" in msg and method in msg
    cfg = build_run_config({"method": method, "teacher": {"checkpoint": "t.pt"}})
    assert cfg.teacher is not None and cfg.teacher.checkpoint == "t.pt"


def test_teacher_without_checkpoint_is_rejected():
    assert "teacher.checkpoint" in _error({"method": "kd", "teacher": {"model": "tiny_cnn"}})


def test_tfkd_self_teacher_must_be_same_architecture():
    msg = _error({"method": "tfkd_self", "model": "tiny_cnn",
                  "teacher": {"checkpoint": "t.pt", "model": "tiny_mlp"}})
    assert "tiny_mlp" in msg and "tiny_cnn" in msg
    ok = build_run_config({"method": "tfkd_self", "model": "tiny_cnn",
                           "teacher": {"checkpoint": "t.pt", "model": "tiny_cnn"}})
    assert ok.teacher.model == "tiny_cnn"
    # kd may use another architecture
    kd = build_run_config({"method": "kd", "model": "tiny_cnn",
                           "teacher": {"checkpoint": "t.pt", "model": "tiny_mlp"}})
    assert kd.teacher.model == "tiny_mlp"


def test_budget_cannot_exceed_epochs():
    msg = _error({"schedule": {"epochs": 10, "budget": 11, "milestones": [5]}})
    assert "budget" in msg and "11" in msg and "10" in msg
    cfg = build_run_config({"schedule": {"epochs": 200, "budget": 70}})
    assert cfg.schedule.trained_epochs == 70


@pytest.mark.parametrize("milestones", [[120, 60], [0, 60], [60, 200], [60, 250], [-5]])
def test_bad_milestones(milestones):
    msg = _error({"schedule": {"epochs": 200, "milestones": milestones}})
    assert "milestones" in msg and str(milestones) in msg


def test_empty_milestones_ok():
    assert build_run_config({"schedule": {"epochs": 3, "milestones": []}}).schedule.milestones == ()


def test_all_problems_reported_at_once():
    msg = _error({"loss": {"alpha": 2.0, "tua": 3}, "optim": {"batch_size": 0}, "sead": 1})
    lines = _lines(msg)
    assert len(lines) == 4, msg
    joined = "\n".join(lines)
    for path in ("loss.alpha", "loss.tua", "optim.batch_size", "sead"):
        assert path in joined


def test_two_bad_fields_in_one_message():
    msg = _error({"loss": {"alpha": -1}, "model": "resnet19"})
    assert "loss.alpha" in msg and "model" in msg and "resnet19" in msg


# ---------------------------------------------------------------------------------------------------
# YAML files


def _write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_read_yaml_and_load(tmp_path):
    p = _write(tmp_path, "method: tfkd_reg\nloss:\n  tau: 40\n  alpha: 0.95\nschedule:\n"
                         "  epochs: 70\n  milestones: [20, 40]\n")
    assert read_yaml(p)["loss"] == {"tau": 40, "alpha": 0.95}
    cfg = load_run_config(p, overrides={"loss.tau": 10, "seed": 7})
    assert cfg.loss.tau == 10.0 and cfg.loss.alpha == 0.95 and cfg.seed == 7
    assert cfg.schedule.milestones == (20, 40)


def test_load_run_config_errors_name_the_file(tmp_path):
    p = _write(tmp_path, "loss:\n  tua: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_run_config(p)
    assert f"{p}: loss.tua" in str(exc.value)


def test_yaml_syntax_error_names_line(tmp_path):
    p = _write(tmp_path, "name: x\nseed: 1\nmethod: ce: lsr\nmodel: tiny_cnn\n")
    with pytest.raises(ConfigError) as exc:
        read_yaml(p)
    msg = str(exc.value)
    assert str(p) in msg
    assert re.search(r"\bline 3\b", msg), msg


def test_yaml_syntax_error_other_line(tmp_path):
    p = _write(tmp_path, "name: x\nloss:\n  tau: 2\n   alpha: 0.1\n")
    with pytest.raises(ConfigError) as exc:
        read_yaml(p)
    assert re.search(r"\bline 4\b", str(exc.value)), str(exc.value)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path, text):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError, match="empty"):
        read_yaml(p)


@pytest.mark.parametrize("text,kind", [("- a\n- b\n", "list"), ("42\n", "int"), ("hello\n", "str")])
def test_non_mapping_top_level(tmp_path, text, kind):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        read_yaml(p)
    assert "mapping" in str(exc.value) and kind in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "nope.yaml")


def test_yaml_is_safe_loaded(tmp_path):
    p = _write(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError):
        read_yaml(p)


# ---------------------------------------------------------------------------------------------------
# --set overrides


def test_parse_set_values():
    out = parse_set(["loss.tau=20", "loss.alpha=0.5", "schedule.milestones=[5, 7]", "name=my run",
                     "evaluate_test=true", "teacher.checkpoint=a=b.pt", "data.data_dir="])
    assert out == {"loss.tau": 20, "loss.alpha": 0.5, "schedule.milestones": [5, 7],
                   "name": "my run", "evaluate_test": True, "teacher.checkpoint": "a=b.pt",
                   "data.data_dir": ""}
    assert isinstance(out["loss.tau"], int)


def test_parse_set_unparsable_yaml_stays_a_string():
    assert parse_set(["name=[oops"]) == {"name": "[oops"}


@pytest.mark.parametrize("item", ["loss.tau", "=20", " =1", ""])
def test_parse_set_malformed(item):
    with pytest.raises(ConfigError) as exc:
        parse_set([item])
    assert repr(item) in str(exc.value) and "key.path=value" in str(exc.value)


def test_set_path_and_with_overrides():
    raw = {"loss": {"tau": 4}, "seed": 1}
    out = with_overrides(raw, {"loss.alpha": 0.3, "schedule.epochs": 5, "seed": 2})
    assert out == {"loss": {"tau": 4, "alpha": 0.3}, "seed": 2, "schedule": {"epochs": 5}}
    assert raw == {"loss": {"tau": 4}, "seed": 1}  # input untouched (deep copy)
    tree: dict = {}
    set_path(tree, "a.b.c", 1)
    assert tree == {"a": {"b": {"c": 1}}}
    assert get_path(tree, "a.b.c") == 1 and get_path(tree, "a.x", "d") == "d"
    with pytest.raises(ConfigError, match="not a section"):
        set_path({"loss": 5}, "loss.tau", 3)


def test_overrides_then_validation():
    cfg = build_run_config(with_overrides({}, parse_set(["loss.tau=20", "method=tfkd_reg"])))
    assert cfg.loss.tau == 20.0 and cfg.method == "tfkd_reg"
    msg = _error(with_overrides({}, parse_set(["loss.tua=20"])))
    assert "loss.tua" in msg and "Did you mean 'tau'" in msg


# ---------------------------------------------------------------------------------------------------
# Static facts


def test_num_classes_agrees_with_data():
    from tfkd_search.data import DATASETS

    assert set(NUM_CLASSES) == set(DATASETS)
    for name, info in DATASETS.items():
        assert NUM_CLASSES[name] == info.num_classes, name


# ---------------------------------------------------------------------------------------------------
# Structured problems, the method table, --set origins, path hints (issues 12.4, 13.3, 13.5)


def test_key_typo_message_has_a_full_stop_before_the_hint():
    (line,) = _lines(_error({"loss": {"tua": 2}}))
    assert "unknown key. Did you mean 'tau'? Valid keys here:" in line, line
    (line,) = _lines(_error({"zzzzzz": 1}))
    assert "unknown key. Valid keys here:" in line and "Did you mean" not in line, line


def test_problems_are_records_with_path_value_and_source():
    with pytest.raises(ConfigError) as exc:
        build_run_config({"loss": {"tau": -1, "tua": 2}}, source="f.yaml")
    probs = {p.path: p for p in exc.value.problems}
    assert set(probs) == {"loss.tau", "loss.tua"}
    assert probs["loss.tau"].value == -1 and probs["loss.tau"].source == "f.yaml"
    assert probs["loss.tau"].origin is None
    assert str(exc.value).count("\n") == 2  # formatted once: header + one line per problem


@pytest.mark.parametrize("raw,path,value", [
    ({"method": "tfkd_reg", "loss": {"a": 0.05}}, "loss.a", 0.05),
    ({"method": "kd"}, "teacher", None),
    ({"method": "tfkd_self", "teacher": {"checkpoint": "t.pt", "model": "tiny_mlp"}},
     "teacher.model", None),
])
def test_cross_field_problems_name_their_key(raw, path, value):
    with pytest.raises(ConfigError) as exc:
        build_run_config(raw, source="f.yaml")
    (prob,) = exc.value.problems
    assert prob.path == path, prob
    if value is not None:
        assert prob.value == value
    assert str(exc.value).splitlines()[1].strip().startswith(f"f.yaml: {path}: ")


def test_methods_are_derived_from_the_method_table():
    from tfkd_search.config import TEACHER_METHODS, LossConfig
    from tfkd_search.registry import METHOD_REGISTRY

    assert METHODS == ("ce", "lsr", "kd", "tfkd_self", "tfkd_reg")
    assert set(TEACHER_METHODS) == {n for n, m in METHOD_REGISTRY.items() if m.needs_teacher}
    assert set(TEACHER_METHODS) == {"kd", "tfkd_self"}
    for name, m in METHOD_REGISTRY.items():
        assert m.name == name
        assert set(m.loss_fields) <= set(LossConfig.model_fields), name
    assert RunConfig.model_fields["method"].description == " | ".join(METHODS)


def test_set_errors_name_the_override_not_the_file(tmp_path):
    p = _write(tmp_path, "loss:\n  alpha: 2.0\n")
    with pytest.raises(ConfigError) as exc:
        load_run_config(p, overrides={"loss.tau": -2, "seed": 3})
    lines = _lines(str(exc.value))
    assert "--set loss.tau=-2: loss.tau: Input should be greater than 0 (got -2)" in lines, lines
    assert any(ln.startswith(f"{p}: loss.alpha:") for ln in lines), lines  # the file's own problem
    assert not any(ln.startswith(f"{p}: loss.tau") for ln in lines)
    (tau,) = [x for x in exc.value.problems if x.path == "loss.tau"]
    assert tau.origin == "--set loss.tau=-2" and tau.source == str(p)


def test_set_unknown_key_and_section_and_custom_label(tmp_path):
    p = _write(tmp_path, "seed: 1\n")
    with pytest.raises(ConfigError) as exc:
        load_run_config(p, {"optim.lrr": 0.2, "data": {"dataset": "cifar1000"}})
    msg = str(exc.value)
    assert "--set optim.lrr=0.2: optim.lrr: unknown key. Did you mean 'lr'?" in msg, msg
    assert '--set data={"dataset": "cifar1000"}: data.dataset: unknown dataset' in msg, msg
    with pytest.raises(ConfigError) as exc:
        load_run_config(p, {"data.val_fraction": 0.9}, labels={"data.val_fraction": "--val"})
    assert "--val: data.val_fraction:" in str(exc.value)


def test_describe_changes_lists_changed_keys():
    from tfkd_search.config import describe_changes

    old = {"loss.tau": 20, "search.num_samples": 4, "name": "a"}
    new = {"loss.tau": 4, "search.num_samples": 4, "loss": {"alpha": 0.5}, "name": "a"}
    assert describe_changes(old, new) == ["loss.tau: 20 -> 4", "loss.alpha: (not set) -> 0.5"]
    assert describe_changes(new, new) == []
    assert describe_changes({"x": True}, {"x": 1}) == ["x: true -> 1"]
    assert describe_changes({"x": 1}, {"x": 1.0}) == []
    assert describe_changes({"m": [1, 2]}, {}) == ["m: [1, 2] -> (not set)"]


def test_missing_file_suggests_a_sibling(tmp_path):
    (tmp_path / "quickstart.yaml").write_text("name: x\n")
    (tmp_path / "notes.txt").write_text("x\n")
    with pytest.raises(ConfigError) as exc:
        read_yaml(tmp_path / "quickstrat.yaml")
    msg = str(exc.value)
    assert "file not found" in msg and f"Did you mean {tmp_path / 'quickstart.yaml'}?" in msg, msg
    with pytest.raises(ConfigError) as exc:
        read_yaml(tmp_path / "zzz.yaml")
    assert "Did you mean" not in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        read_yaml(tmp_path / "nodir" / "quickstart.yaml")
    assert "file not found" in str(exc.value) and "Did you mean" not in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        read_yaml(tmp_path)
    assert "is a folder" in str(exc.value) and str(tmp_path / "quickstart.yaml") in str(exc.value)


def test_exit_code_rule():
    from tfkd_search import errors

    assert errors.TfkdError.exit_code == 1 and errors.TrainingDiverged.exit_code == 1
    for cls in (errors.ConfigError, errors.DataError, errors.CheckpointError):
        assert cls.exit_code == 2, cls
    assert errors.EnvironmentProblem("ray down").exit_code == 3
    assert issubclass(errors.EnvironmentProblem, errors.TfkdError)
    assert not issubclass(errors.EnvironmentProblem, errors.ConfigError)
    for word in ("exit", "2", "3", "1"):
        assert word in errors.__doc__


@pytest.mark.parametrize("kind,needle", [
    ("truncated", "zip archive is incomplete"),
    ("text", "not PyTorch's checkpoint format"),
    ("empty", "the file is empty"),
    ("object", "Python objects beyond tensors"),
    ("cut-model", "the data ends early or is damaged"),  # torch raises OSError (EINVAL) here
])
def test_corrupt_checkpoint_message_is_short_and_never_suggests_unsafe_loading(tmp_path, kind,
                                                                                needle):
    import torch

    from tfkd_search.errors import CheckpointError
    from tfkd_search.io import load_checkpoint

    p = tmp_path / "ck.pt"
    if kind == "truncated":
        torch.save({"w": torch.zeros(64)}, p)
        p.write_bytes(p.read_bytes()[:200])
    elif kind == "text":
        p.write_text("this is not a checkpoint\n")
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "cut-model":
        from tfkd_search.models import build_model

        model = build_model("tiny_cnn", 10, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model(torch.randn(2, 1, 8, 8)).sum().backward()
        opt.step()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "rng": torch.get_rng_state()}, p)
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    else:
        torch.save({"w": Path("x")}, p)  # an arbitrary Python object
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(p, "teacher checkpoint")
    msg = str(exc.value)
    assert needle in msg, msg
    assert "weights_only" not in msg and "trust" not in msg.lower(), msg
    assert "re-create it with 'tfkd-search train'" in msg, msg
    assert len(msg) < 400
