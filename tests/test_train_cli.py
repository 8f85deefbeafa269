"""Tests of train.py: flags reach the model and the data, bad input is refused on one line, a run
ends with a checkpoint, events and wavs, and the same command resumes."""

import os
import subprocess
import sys
import types

import pytest
import tensorflow as tf

import train
from common_definitions import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGS = ["--n_fft", "62", "--hop_length", "16", "--window_size", "16", "--k_glow", "2",
              "--l_glow", "2", "--hidden_channels", "8", "--batch_size", "8",
              "--griffin_lim_iters", "2", "--warmup_steps", "2", "--no_progress"]


@pytest.fixture(scope="module")
def corpus(demo_corpus):
    """The shared demo corpus (tests/conftest.py): singer folders ``a`` and ``b``."""
    return types.SimpleNamespace(a=demo_corpus.virtual, b=demo_corpus.real)


def run_cli(args, timeout=300, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


def assert_refused(result, *fragments):
    """Non-zero exit, no traceback, exactly one ``train.py: error:`` line naming ``fragments``."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("train.py: error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def output_flags(folder):
    return ["--checkpoint_dir", str(folder / "ck"), "--logdir", str(folder / "logs"),
            "--records_dir", str(folder / "rec"), "--output_dir", str(folder / "out")]


# ---------------------------------------------------------------------------------- in process
def test_flags_build_the_config():
    args = train.build_parser().parse_args(
        ["--data_dir", "a", "--data_dir", "b", "--k_glow", "3", "--coupling", "additive",
         "--no_lu", "--learning_rate", "5e-4", "--epochs", "7"])
    config = train.config_from_args(args)
    assert config.data_dirs == ("a", "b") and config.k_glow == 3 and config.coupling == "additive"
    assert config.lu_decomposed is False and config.learning_rate == 5e-4 and config.epochs == 7
    assert config.l_glow == Config().l_glow  # not passed: the Config default
    demo = train.config_from_args(train.build_parser().parse_args(["--demo", "--epochs", "1"]))
    assert demo.demo and demo.epochs == 1 and demo.k_glow == train.DEMO_DEFAULTS["k_glow"]
    assert demo.checkpoint_dir == train.DEMO_DEFAULTS["checkpoint_dir"]
    assert all("demo_data" in d for d in demo.data_dirs)
    steering = train.config_from_args(train.build_parser().parse_args(
        ["--validation_dir", "held/a", "--validation_dir", "held/b", "--early_stopping_patience",
         "3", "--mixed_precision", "bf16", "--init_from", "base/ck", "--renormalize"]))
    assert steering.validation_dirs == ("held/a", "held/b")
    assert steering.early_stopping_patience == 3 and steering.mixed_precision == "bf16"
    assert steering.init_from == "base/ck" and steering.renormalize is True
    assert Config().validation_split == 0.1 and Config().mixed_precision == "off"


def test_conditional_trains_the_world_feature_unless_told_or_resuming_another(tmp_path):
    def config(*flags):
        return train.config_from_args(train.build_parser().parse_args(list(flags)))

    ck = ["--checkpoint_dir", str(tmp_path / "ck")]
    assert config(*ck, "--conditional").feature == "world"
    assert config(*ck, "--conditional", "--feature", "spectrogram").feature == "spectrogram"
    assert config(*ck).feature == "spectrogram"  # the unconditional default is unchanged
    assert config("--demo").feature == "spectrogram"
    # A conditional run started under another feature resumes as what it is.
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "config.json").write_text(
        Config(conditional=True, feature="spectrogram").to_json())
    assert config(*ck, "--conditional").feature == "spectrogram"
    (tmp_path / "ck" / "config.json").write_text("{not json")
    assert config(*ck, "--conditional").feature == "world"  # refused later, on one line


def test_every_config_field_has_one_flag_with_its_help():
    import dataclasses

    actions = {action.dest: action for action in train.build_parser()._actions}
    for field in dataclasses.fields(Config):
        action = actions[field.name]
        assert action.default is None  # "not given": the Config's (or --demo's) default applies
        assert (field.metadata["flag_help"] or field.metadata["help"]) in action.help
    assert actions["data_dirs"].option_strings == ["--data_dir"]
    assert actions["lu_decomposed"].option_strings == ["--no_lu"]


def test_flags_reach_the_model_and_the_data(corpus, tmp_path):
    from pipeline import Trainer

    args = train.build_parser().parse_args(
        ["--data_dir", corpus.a, "--feature", "waveform", "--window_size", "64", "--channel_size", "2",
         "--k_glow", "3", "--l_glow", "2", "--hidden_channels", "12", "--coupling", "additive",
         "--no_lu", "--batch_size", "4", "--learning_rate", "3e-4", "--warmup_steps", "0",
         *output_flags(tmp_path)])
    trainer = Trainer(train.config_from_args(args), log=lambda _: None, progress=False)
    model = trainer.model
    assert (model.k_glow, model.l_glow, model.hidden_channels) == (3, 2, 12)
    assert model.coupling == "additive" and model.lu_decomposed is False
    assert model.image_shape == (32, 1, 2)  # 64 samples folded into 2 channels
    assert float(trainer.schedule(0)) == pytest.approx(3e-4)
    # records made from --data_dir into --records_dir when the trainer was built
    assert os.path.isfile(tmp_path / "rec" / "feature_stats_waveform.json")
    assert tuple(trainer.init_batch().shape) == (4, 32, 1, 2)


# ---------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("case", [
    "zero_k", "unknown_flag", "bad_choice", "bad_number", "bad_shape", "missing_data_dir",
    "data_dir_is_a_file", "checkpoint_dir_under_a_file", "logdir_under_a_file", "no_data",
    "bad_split", "patience_without_validation", "missing_validation_dir", "bad_precision",
    "missing_init_from", "renormalize_alone",
])
def test_bad_input_is_refused_on_one_line(case, corpus, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    data = ["--data_dir", corpus.a]
    argv, fragments = {
        "zero_k": (data + ["--k_glow", "0"], ["k_glow"]),
        "unknown_flag": (data + ["--kglow", "2"], ["--kglow"]),
        "bad_choice": (data + ["--feature", "mel"], ["--feature"]),
        "bad_number": (data + ["--learning_rate", "fast"], ["--learning_rate"]),
        "bad_shape": (data + ["--n_fft", "62", "--hop_length", "16", "--l_glow", "6"], ["n_fft"]),
        "missing_data_dir": (["--data_dir", str(tmp_path / "nowhere")], ["nowhere"]),
        "data_dir_is_a_file": (["--data_dir", str(blocker)], ["file.txt"]),
        "checkpoint_dir_under_a_file": (data + ["--checkpoint_dir", str(blocker / "ck")],
                                        ["--checkpoint_dir"]),
        "logdir_under_a_file": (data + ["--logdir", str(blocker / "logs")], ["--logdir"]),
        "no_data": (["--records_dir", str(tmp_path / "empty")], ["--data_dir"]),
        "bad_split": (data + ["--validation_split", "1.5"], ["validation_split", "[0, 1)"]),
        "patience_without_validation": (
            data + ["--validation_split", "0", "--early_stopping_patience", "2"],
            ["early_stopping_patience", "validation"]),
        "missing_validation_dir": (data + ["--validation_dir", str(tmp_path / "held")],
                                   ["--validation_dir", "held"]),
        "bad_precision": (data + ["--mixed_precision", "fp8"], ["--mixed_precision"]),
        "missing_init_from": (data + ["--init_from", str(tmp_path / "base")],
                              ["--init_from", "not found"]),
        "renormalize_alone": (data + ["--renormalize"], ["renormalize", "init_from"]),
    }[case]
    defaults = ["--checkpoint_dir", str(tmp_path / "ck"), "--logdir", str(tmp_path / "logs"),
                "--records_dir", str(tmp_path / "rec"), "--output_dir", str(tmp_path / "out")]
    overridden = {arg for arg in argv if arg.startswith("--")}
    for flag, value in zip(defaults[::2], defaults[1::2]):
        if flag not in overridden:
            argv = argv + [flag, value]
    result = run_cli(argv, timeout=60)
    assert_refused(result, *fragments)
    assert result.returncode == 2
    assert not os.path.exists(tmp_path / "rec" / "manifest.json")  # refused before any work


# ---------------------------------------------------------------------------------- runs
def test_train_then_resume_then_refuse_another_model(corpus, tmp_path):
    command = ["--data_dir", corpus.a, "--data_dir", corpus.b, *TINY_FLAGS,
               "--steps_per_epoch", "3", "--checkpoint_every", "2", *output_flags(tmp_path)]
    first = run_cli(command + ["--epochs", "2"])
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Traceback" not in first.stderr
    assert "epoch 2/2 (step 6)" in first.stdout
    # The default --validation_split 0.1 holds out one song of each singer's two.
    assert "validation: 2 held-out song(s) (real 1, virtual 1) of 4" in first.stdout
    epochs = [line for line in first.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2 and all(", val " in line for line in epochs)
    checkpoint_dir = str(tmp_path / "ck")
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    assert tf.train.load_variable(latest, "step/.ATTRIBUTES/VARIABLE_VALUE") == 6
    config = Config.load(os.path.join(checkpoint_dir, "config.json"))
    assert (config.k_glow, config.hidden_channels, config.n_fft) == (2, 8, 62)
    assert config.data_dirs == (corpus.a, corpus.b)
    for name in ("feature_stats.json", "glow.weights.h5", "validation.json",
                 "best/config.json", "best/feature_stats.json", "best/glow.weights.h5"):
        assert os.path.isfile(os.path.join(checkpoint_dir, name)), name
    with open(os.path.join(checkpoint_dir, "validation.json"), encoding="utf-8") as handle:
        split = handle.read()
    for name in ("reconstruction.wav", "sample.wav"):
        assert os.path.getsize(tmp_path / "out" / name) > 1000
    assert os.listdir(tmp_path / "logs")

    second = run_cli(command + ["--epochs", "3"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resumed from {latest} at step 6" in second.stdout
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    assert tf.train.load_variable(latest, "step/.ATTRIBUTES/VARIABLE_VALUE") == 9
    with open(os.path.join(checkpoint_dir, "validation.json"), encoding="utf-8") as handle:
        assert handle.read() == split  # the resumed run holds out the same songs

    refused = run_cli(command + ["--epochs", "4", "--hidden_channels", "16"])  # the last wins
    assert_refused(refused, "hidden_channels=8 (now 16)", checkpoint_dir)
    assert tf.train.latest_checkpoint(checkpoint_dir) == latest


def test_init_from_a_run_of_another_model_is_refused_on_one_line(tiny_run, corpus, tmp_path):
    refused = run_cli(["--data_dir", corpus.a, *TINY_FLAGS, "--k_glow", "3",
                       "--init_from", tiny_run.config.checkpoint_dir, *output_flags(tmp_path)],
                      timeout=120)
    assert_refused(refused, "--init_from", "k_glow=2 (now 3)")
    assert refused.returncode == 2
    assert not os.path.exists(tmp_path / "ck") and not os.path.exists(tmp_path / "rec")
