"""Every flag of train_ds.py, the merge script, chat.py and app.py reaches the code.

The flags are read from each script's own parser, so a flag added without a case here fails. For
each flag a value other than its default is parsed, and the test checks where it lands:

- MODEL, LORA, DATA, DEEPSPEED: the settings the builders take (model.builder.ModelSettings and
  LoraSettings, utils.data.build.DataConfig, the DeepSpeed config) differ from the default's;
- LOAD: the keyword arguments the segmenter is loaded with differ (or loading is refused with a
  sentence that names the flag);
- RUN: the parsed setting differs and the script itself reads it (``config.<name>`` or
  ``args.<name>`` in its source);
- REFUSED: the value is refused with a sentence naming the flag;
- IGNORED: the flag's help says it is kept for the original's command lines, and a run prints
  one line saying so.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

import pytest
import torch

import app
import chat
import merge_lora_weights_and_save_hf_model as merge
import train_ds
from model.builder import model_settings_from
from model.segmenter import LisaSegmenter
from tests.toy_runs import base_flags
from tools.tiny_base import build_tiny_base
from tools.tiny_configs import FLAGS_BASE
from utils.distributed import DistributedInfo
from utils.errors import UsageError
from utils.ignored_flags import IGNORED_HELP
from utils.segmenter_flags import ModelLoadError, SegmenterSettings, load_segmenter

REPO = Path(__file__).resolve().parents[1]
MODEL, LORA, DATA, DEEPSPEED, LOAD, RUN, REFUSED, IGNORED = (
    "model",
    "lora",
    "data",
    "deepspeed",
    "load",
    "run",
    "refused",
    "ignored",
)

TRAIN_FLAGS = {
    "version": {MODEL},
    "vision_tower": {MODEL},
    "vision_pretrained": {MODEL},
    "segmenter": {MODEL},
    "weight": {RUN},
    "precision": {DEEPSPEED},
    "image_size": {MODEL, DATA},
    "model_max_length": {RUN},
    "out_dim": {MODEL},
    "use_mm_start_end": {MODEL, RUN},
    "train_mask_decoder": {MODEL},
    "gradient_checkpointing": {RUN},
    "pack_conversations": {RUN},
    "load_in_8bit": {REFUSED},
    "load_in_4bit": {REFUSED},
    "trainable": {LORA, RUN},
    "lora_r": {LORA},
    "lora_alpha": {LORA},
    "lora_dropout": {LORA},
    "lora_target_modules": {LORA},
    **dict.fromkeys(
        ("dataset_dir", "dataset", "sample_rates", "sem_seg_data", "refer_seg_data", "vqa_data"),
        {DATA},
    ),
    **dict.fromkeys(("reason_seg_data", "num_classes_per_sample", "explanatory"), {DATA}),
    "val_dataset": {DATA, RUN},
    "exclude_val": {DATA},
    "conv_type": {DATA, RUN},
    "answer_templates": {DATA},
    "epochs": {DEEPSPEED},
    "steps_per_epoch": {DEEPSPEED},
    "batch_size": {DEEPSPEED},
    "grad_accumulation_steps": {DEEPSPEED},
    "lr": {DEEPSPEED},
    "beta1": {DEEPSPEED},
    "beta2": {DEEPSPEED},
    "ce_loss_weight": {MODEL},
    "dice_loss_weight": {MODEL},
    "bce_loss_weight": {MODEL},
    "zero_stage": {DEEPSPEED},
    "deepspeed_config": {DEEPSPEED},
    "seed": {DATA, RUN},
    **dict.fromkeys(("val_batch_size", "no_eval", "eval_only", "workers"), {RUN}),
    **dict.fromkeys(("log_base_dir", "exp_name", "overwrite", "print_freq", "save_steps"), {RUN}),
    **dict.fromkeys(("resume", "auto_resume", "start_epoch", "local_rank"), {RUN}),
    "vis_save_path": {IGNORED},
}

MERGE_FLAGS = {
    **dict.fromkeys(
        ("version", "vision_tower", "vision_pretrained", "segmenter", "out_dim"), {MODEL}
    ),
    **dict.fromkeys(("image_size", "use_mm_start_end", "train_mask_decoder"), {MODEL}),
    **dict.fromkeys(("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"), {LORA}),
    **dict.fromkeys(("weight", "save_path", "overwrite", "include_vision_tower"), {RUN}),
    **dict.fromkeys(("precision", "model_max_length"), {RUN}),
    **dict.fromkeys(("conv_type", "vis_save_path", "local_rank"), {IGNORED}),
}

SEGMENTER_FLAGS = {  # utils.segmenter_flags.add_model_flags: chat.py's and app.py's
    **dict.fromkeys(("version", "precision", "image_size", "model_max_length"), {LOAD}),
    **dict.fromkeys(("vision_tower", "local_rank", "load_in_8bit", "load_in_4bit"), {LOAD}),
    **dict.fromkeys(("use_mm_start_end", "conv_type", "device", "max_new_tokens"), {LOAD}),
    "lora_r": {IGNORED},
}
CHAT_FLAGS = {
    **SEGMENTER_FLAGS,
    **dict.fromkeys(("vis_save_path", "prompt", "image", "output_json", "rle"), {RUN}),
    "overwrite": {RUN},
}
APP_FLAGS = {
    **SEGMENTER_FLAGS,
    **dict.fromkeys(("host", "port", "queue_size", "examples", "max_image_side"), {RUN}),
}


# --- reading a parser -----------------------------------------------------------------------


def parser_of(parse_args, argv: list[str]) -> argparse.ArgumentParser:
    """The parser a script's parse_args builds (caught as it parses ``argv``)."""
    seen = []
    original = argparse.ArgumentParser.parse_args

    def spy(self, *args, **kwargs):
        seen.append(self)
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", spy)
        parse_args(argv)
    return seen[-1]


def flag_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if not isinstance(a, argparse._HelpAction)}


def other_value(action: argparse.Action) -> list[str]:
    """Command-line words that give the flag a value other than its default."""
    option = action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        return [f"--no-{option[2:]}"] if action.default else [option]
    if action.nargs == 0:  # store_true
        return [option]
    if action.choices:
        return [option, str(next(c for c in action.choices if c != action.default))]
    if action.type is int:
        return [option, str((action.default or 0) + 3)]
    if action.type is float:
        return [option, str(action.default + 0.25)]
    return [option, f"other-{action.dest}"]


def names_read(script: Path, holders: tuple[str, ...]) -> set[str]:
    """Attribute names the script reads from ``config``/``args`` (or ``<anything>.config``)."""
    names = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Attribute):
            holder = node.value
            if (isinstance(holder, ast.Name) and holder.id in holders) or (
                isinstance(holder, ast.Attribute) and holder.attr in holders
            ):
                names.add(node.attr)
    return names


def check_table(parser: argparse.ArgumentParser, table: dict[str, set[str]]) -> None:
    flags = set(flag_actions(parser))
    assert flags - set(table) == set(), "flags without a case in this test"
    assert set(table) - flags == set(), "cases of flags the script no longer has"
    for dest, action in flag_actions(parser).items():
        ignored = IGNORED_HELP in (action.help or "")
        assert ignored == (IGNORED in table[dest]), f"--{dest}: help and case disagree"


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("flag_walk")
    (root / "clip").mkdir()
    (root / "sam.pth").write_bytes(b"")
    (root / "ds.json").write_text(json.dumps({"train_micro_batch_size_per_gpu": 2}))
    return root


# --- train_ds.py ----------------------------------------------------------------------------


def train_overrides(paths: Path) -> dict[str, list[str]]:
    return {
        "vision_tower": ["--vision-tower", str(paths / "clip")],
        "vision_pretrained": ["--vision_pretrained", str(paths / "sam.pth")],
        "deepspeed_config": ["--deepspeed_config", str(paths / "ds.json")],
    }


def train_landings(config) -> dict[str, object]:
    """What each builder of train_ds.py is given for ``config`` (as on a GPU, where --precision
    is taken as asked)."""
    gpu = torch.device("cuda", 0)
    dtype, precision = train_ds.run_precision(config.precision, gpu)
    run = train_ds.RunContext(config, DistributedInfo(0, 0, 1, gpu), dtype, precision, Path("r"))
    return {
        MODEL: train_ds.model_settings(config),
        LORA: train_ds.lora_settings(config),
        DATA: config.data_config(),
        DEEPSPEED: train_ds.deepspeed_config_for(run),
    }


def test_every_train_ds_flag_reaches_the_code(paths):
    parser = parser_of(train_ds.parse_args, [])
    check_table(parser, TRAIN_FLAGS)
    base = train_ds.parse_args([])
    landed = train_landings(base)
    read = names_read(REPO / "train_ds.py", ("config",))
    overrides = train_overrides(paths)
    for dest, action in flag_actions(parser).items():
        config = train_ds.parse_args(overrides.get(dest) or other_value(action))
        assert getattr(config, dest) != getattr(base, dest), dest
        if REFUSED in TRAIN_FLAGS[dest]:
            with pytest.raises(UsageError, match=action.option_strings[0]):
                config.validate()
            continue
        if IGNORED in TRAIN_FLAGS[dest]:
            assert [*config.ignored_flags()] in ([option] for option in action.option_strings)
            continue
        assert base.ignored_flags() == config.ignored_flags() == []
        now = train_landings(config)
        for place in (MODEL, LORA, DATA, DEEPSPEED):
            assert (now[place] != landed[place]) == (place in TRAIN_FLAGS[dest]), (dest, place)
        if RUN in TRAIN_FLAGS[dest]:
            assert dest in read, f"train_ds.py never reads config.{dest}"


def test_an_ignored_train_ds_flag_prints_one_line(tmp_path, capsys):
    code = train_ds.run([f"--version={tmp_path / 'none'}", "--vis_save_path=./elsewhere"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert [line for line in err if "note" in line] == [
        f"train_ds.py note: --vis_save_path is {IGNORED_HELP}"
    ]


def test_no_train_mask_decoder_freezes_the_decoder_of_the_training_model(tmp_path):
    sizes = FLAGS_BASE
    base = build_tiny_base(tmp_path, ["Please segment the circle."], sizes)

    def decoder_trains(*flags: str) -> bool:
        config = train_ds.parse_args(
            [
                *base_flags(base),
                f"--image_size={sizes.sam_image_size}",
                f"--out_dim={sizes.sam_prompt_embed_dim}",
                *flags,
            ]
        )
        model, _ = train_ds.build_model(config, torch.float32)
        decoder = train_ds.unwrap_lisa(model).model.visual_model.mask_decoder
        flags_of_decoder = {p.requires_grad for p in decoder.parameters()}
        assert len(flags_of_decoder) == 1
        return flags_of_decoder.pop()

    assert decoder_trains()
    assert not decoder_trains("--no-train_mask_decoder")


# --- the merge ------------------------------------------------------------------------------

MERGE_BASE = ["--weight=w.bin", "--save_path=out"]


def test_every_merge_flag_reaches_the_code(paths):
    parser = parser_of(merge.parse_args, MERGE_BASE)
    check_table(parser, MERGE_FLAGS)
    base = merge.parse_args(MERGE_BASE)
    read = names_read(REPO / "merge_lora_weights_and_save_hf_model.py", ("config",))
    overrides = train_overrides(paths)
    for dest, action in flag_actions(parser).items():
        config = merge.parse_args([*MERGE_BASE, *(overrides.get(dest) or other_value(action))])
        assert getattr(config, dest) != getattr(base, dest), dest
        if IGNORED in MERGE_FLAGS[dest]:
            assert [*config.ignored_flags()] in ([option] for option in action.option_strings)
            continue
        assert config.ignored_flags() == []
        model_changed = model_settings_from(config) != model_settings_from(base)
        lora_changed = merge.lora_settings(config) != merge.lora_settings(base)
        assert model_changed == (MODEL in MERGE_FLAGS[dest]), dest
        assert lora_changed == (LORA in MERGE_FLAGS[dest]), dest
        if RUN in MERGE_FLAGS[dest]:
            assert dest in read, f"the merge never reads config.{dest}"


@pytest.mark.parametrize(
    "flag", ["--conv_type=llava_llama_2", "--vis_save_path=x", "--local_rank=1"]
)
def test_an_ignored_merge_flag_prints_one_line(tmp_path, capsys, flag):
    code = merge.main([f"--version={tmp_path / 'none'}", *MERGE_BASE, flag])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    name = flag.split("=")[0]
    assert [line for line in err if "note" in line] == [f"merge note: {name} is {IGNORED_HELP}"]


# --- chat.py and app.py ---------------------------------------------------------------------


@pytest.fixture
def load_calls(monkeypatch):
    """The arguments LisaSegmenter.from_pretrained is called with (the loading itself is
    tested in tests/model/test_segmenter.py and tests/test_chat.py)."""
    calls = []

    def record(cls, version, **kwargs):
        calls.append({"version": version, **kwargs})
        return cls

    monkeypatch.setattr(LisaSegmenter, "from_pretrained", classmethod(record))
    return calls


def load_kwargs(args, load_calls, monkeypatch) -> dict | str:
    """The load call's arguments, or the sentence that refuses the load."""
    with monkeypatch.context() as patch:
        if args.local_rank != 0:  # --local-rank chooses among CUDA devices only
            patch.setattr(torch.cuda, "is_available", lambda: True)
        try:
            load_segmenter(SegmenterSettings.from_flags(args))
        except ModelLoadError as error:
            return str(error)
    return load_calls.pop()


SCRIPT_BASE = {"chat": ["--version=ckpt"], "app": ["--version=ckpt"]}
COMPANIONS = {  # flags that need others beside them
    "prompt": ["--image=x.png"],
    "image": ["--prompt=hi"],
    "output_json": ["--prompt=hi", "--image=x.png"],
}


@pytest.mark.parametrize(
    ("script", "table"), [(chat, CHAT_FLAGS), (app, APP_FLAGS)], ids=["chat", "app"]
)
def test_every_chat_and_app_flag_reaches_the_code(script, table, load_calls, monkeypatch, capsys):
    name = script.__name__
    base_argv = SCRIPT_BASE[name]
    parser = parser_of(script.parse_args, base_argv)
    check_table(parser, table)
    read = names_read(REPO / f"{name}.py", ("args",))
    base_args = script.parse_args(base_argv)
    base_load = load_kwargs(base_args, load_calls, monkeypatch)
    assert isinstance(base_load, dict)
    for dest, action in flag_actions(parser).items():
        words = other_value(action)
        if dest == "device":  # the base already names the CPU
            words = ["--device", "cuda:7"]
        argv = [*base_argv, *COMPANIONS.get(dest, []), *words]
        if dest == "load_in_4bit":
            argv = [*SCRIPT_BASE[name], *words]
        capsys.readouterr()
        args = script.parse_args(argv)
        notes = [line for line in capsys.readouterr().err.splitlines() if "note" in line]
        assert getattr(args, dest) != getattr(base_args, dest), dest
        if IGNORED in table[dest]:
            note = f"{parser.prog} note: {action.option_strings[0]} is {IGNORED_HELP}"
            assert notes == [note]  # the program's name as it was started
            continue
        assert notes == []
        if LOAD in table[dest]:
            loaded = load_kwargs(args, load_calls, monkeypatch)
            if isinstance(loaded, str):  # refused: the sentence names the flag
                assert any(option in loaded for option in action.option_strings), (dest, loaded)
            else:
                assert loaded != base_load, dest
        if RUN in table[dest]:
            assert dest in read, f"{name}.py never reads args.{dest}"
