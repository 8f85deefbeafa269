"""export.py: a trained run as a self-contained SavedModel, loaded by plain TensorFlow in a process
where no module of this repository can be imported."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import export as export_cli
from tests.conftest import ROOT, copy_run, run_python

# Run in a temporary folder with ``python -I`` (no PYTHONPATH, no user site, no script or current
# folder on sys.path): only TensorFlow is at hand. Writes what it computed to out.npz / out.json.
LOADER = textwrap.dedent("""
    import importlib, json, sys
    import numpy as np
    import tensorflow as tf

    saved = sys.argv[1]
    report = {"sys_path": sys.path}
    for name in ("model", "export", "common_definitions", "utils.audio.features"):
        try:
            importlib.import_module(name)
            report[name] = "importable"
        except ImportError:
            report[name] = "missing"
    loaded = tf.saved_model.load(saved)
    x = np.load("in.npz")["x"]
    z, logdet = loaded.encode(x)
    served = loaded.signatures["encode"](x=tf.constant(x))
    out = {"z": z.numpy(), "logdet": logdet.numpy(), "back": loaded.decode(z).numpy(),
           "log_prob": loaded.log_prob(x).numpy(),
           "served_z": served["z"].numpy(), "served_logdet": served["logdet"].numpy(),
           "served_log_prob": loaded.signatures["log_prob"](x=tf.constant(x))["log_prob"].numpy(),
           "served_back": loaded.signatures["decode"](z=z)["x"].numpy(),
           "features": loaded.denormalize(x).numpy(),
           "renormalized": loaded.normalize(loaded.denormalize(x)).numpy()}
    info = loaded.metadata()
    out.update({"mean": info["feature_mean"].numpy(), "std": info["feature_std"].numpy()})
    report["metadata"] = {k: (v.numpy().tolist() if v.dtype != tf.string else
                              [s.decode() for s in np.atleast_1d(v.numpy())])
                          for k, v in info.items() if k not in ("feature_mean", "feature_std")}
    report["signatures"] = sorted(loaded.signatures)
    with open(loaded.config_file.asset_path.numpy().decode(), encoding="utf-8") as handle:
        report["config_asset"] = json.load(handle)
    try:
        loaded.encode(x[:, :-2])
        report["odd_length"] = "accepted"
    except tf.errors.InvalidArgumentError as error:
        report["odd_length"] = str(error)
    np.savez("out.npz", **out)
    with open("out.json", "w") as handle:
        json.dump(report, handle)
""")


def _run_export(*argv):
    return export_cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The tiny run exported by the CLI (verified), and the Codec of the run."""
    from utils.runs.run_folder import load_for_inference

    out = tmp_path_factory.mktemp("export") / "saved"
    assert _run_export("--checkpoint_dir", tiny_run.config.checkpoint_dir, "--out", out) == 0
    return out, load_for_inference(tiny_run.config.checkpoint_dir)


def test_plain_tensorflow_loads_the_export_and_reproduces_the_model(exported, tiny_run,
                                                                    tmp_path):
    out, codec = exported
    assert sorted(os.listdir(out / "assets")) == ["config.json", "feature_stats.json"]
    # Two songs four patches long (64 frames), made of the run's own normalised patches.
    batch = np.asarray(tiny_run.batch, np.float32)
    x = batch[:8].reshape(2, 4 * batch.shape[1], *batch.shape[2:])
    np.savez(tmp_path / "in.npz", x=x)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-I", "-c", LOADER, str(out)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "out.json", encoding="utf-8") as handle:
        report = json.load(handle)
    got = dict(np.load(tmp_path / "out.npz"))

    # Nothing of the repository was importable there.
    assert not [p for p in report["sys_path"] if os.path.realpath(p or os.curdir) in (
        os.path.realpath(ROOT), os.path.realpath(tmp_path))]
    assert {report[name] for name in ("model", "export", "common_definitions",
                                      "utils.audio.features")} == {"missing"}

    # The Keras model, to float32 precision, and the round trip of a four-patch input to 1e-3.
    want_z, want_logdet = (t.numpy() for t in codec.model.encode(x))
    assert got["z"].shape == want_z.shape == (2, x[0].size)
    np.testing.assert_allclose(got["z"], want_z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["logdet"], want_logdet, rtol=1e-6, atol=1e-3)
    assert np.max(np.abs(got["back"] - x)) < 1e-3
    np.testing.assert_allclose(got["log_prob"], codec.model.log_prob(x).numpy(), rtol=1e-6,
                               atol=1e-2)
    # The serving signatures are the same functions with named tensors.
    np.testing.assert_array_equal(got["served_z"], got["z"])
    np.testing.assert_array_equal(got["served_logdet"], got["logdet"])
    np.testing.assert_array_equal(got["served_log_prob"], got["log_prob"])
    np.testing.assert_array_equal(got["served_back"], got["back"])
    assert report["signatures"] == ["decode", "denormalize", "encode", "log_prob", "metadata",
                                    "normalize"]

    # The normalisation and the configuration travel with it.
    np.testing.assert_allclose(got["features"], codec.stats.denormalize(x), atol=1e-5)
    np.testing.assert_allclose(got["renormalized"], x, atol=1e-5)
    np.testing.assert_array_equal(got["mean"], codec.stats.mean)
    np.testing.assert_array_equal(got["std"], codec.stats.std)
    meta, config = report["metadata"], codec.config
    assert json.loads(meta["config_json"][0]) == config.to_dict() == report["config_asset"]
    assert meta["time_multiple"] == 2 ** config.l_glow and meta["patch_steps"] == 16
    assert (meta["width"], meta["channels"]) == (32, 1) and meta["num_singers"] == 0
    assert meta["singers"] == [] and meta["feature"] == ["spectrogram"]
    assert (meta["sampling_rate"], meta["n_fft"], meta["hop_length"]) == (
        config.sampling_rate, config.n_fft, config.hop_length)
    assert meta["format_version"] == export_cli.FORMAT_VERSION
    # A length the model cannot take is refused with a message that says why.
    assert "must divide by 2**L = 4" in report["odd_length"]


def _ready(glow, x, singer=None):
    glow.initialize(x, singer)
    rng = np.random.default_rng(0)
    for v in glow.trainable_variables:
        v.assign(v.numpy() + 0.05 * rng.standard_normal(v.shape).astype(np.float32))
    return glow


def test_a_conditional_model_exports_with_a_singer_input(tmp_path):
    from common_definitions import Config
    from model import Glow
    from utils.audio.features import FeatureStats

    config = Config(n_fft=14, hop_length=4, window_size=8, k_glow=1, l_glow=2, hidden_channels=8,
                    conditional=True, singer_dims=4)
    x = tf.random.stateless_normal((4, 16, 8, 1), seed=[3, 4])  # two patches long
    ids = tf.constant([0, 1, 1, 0])
    glow = _ready(Glow.from_config(config, num_singers=2), x, ids)
    out = tmp_path / "conditional"
    assert export_cli.export(glow, config, FeatureStats.identity(config), str(out),
                             singers=("alto", "tenor")) == str(out)
    assert sorted(os.listdir(out / "assets")) == ["config.json", "feature_stats.json",
                                                  "singers.json"]
    loaded = tf.saved_model.load(str(out))
    z, logdet = loaded.encode(x, ids)
    want_z, want_logdet = glow.encode(x, ids)
    np.testing.assert_allclose(z.numpy(), want_z.numpy(), atol=1e-5)
    np.testing.assert_allclose(logdet.numpy(), want_logdet.numpy(), atol=1e-3)
    # Conversion: decode under the other singer, as the Keras model does.
    np.testing.assert_allclose(loaded.decode(z, 1 - ids).numpy(),
                               glow.decode(want_z, 1 - ids).numpy(), atol=1e-4)
    assert np.max(np.abs(loaded.decode(z, ids).numpy() - x.numpy())) < 1e-4
    np.testing.assert_allclose(loaded.log_prob(x, ids).numpy(), glow.log_prob(x, ids).numpy(),
                               atol=1e-2)
    served = loaded.signatures["encode"]
    assert set(served.structured_input_signature[1]) == {"x", "singer"}
    np.testing.assert_array_equal(served(x=x, singer=ids)["z"].numpy(), z.numpy())
    info = loaded.metadata()
    assert [s.decode() for s in info["singers"].numpy()] == ["alto", "tenor"]
    assert int(info["num_singers"]) == 2
    with pytest.raises(tf.errors.InvalidArgumentError, match="singer ids must be in"):
        loaded.encode(x, tf.constant([0, 1, 2, 0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="one singer id per example"):
        loaded.encode(x, tf.constant([0, 1]))

    # Singer names must match the model.
    with pytest.raises(export_cli.ExportError, match="2 singers"):
        export_cli.build_module(glow, config, FeatureStats.identity(config), ["alto"])
    plain = Glow.from_config(config.replace(conditional=False))
    with pytest.raises(export_cli.ExportError, match="unconditional"):
        export_cli.build_module(plain, config, FeatureStats.identity(config), ["alto"])


def test_flag_errors_come_back_before_tensorflow_loads(tmp_path):
    result = run_python(f"""
        import sys
        import export
        codes = [export.main([]), export.main(["--checkpoint_dir", {str(tmp_path / 'none')!r},
                                               "--out", {str(tmp_path / 'out')!r}])]
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
        print(codes)
    """, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[2, 2]"
    errors = [line for line in result.stderr.splitlines() if line]
    assert len(errors) == 2 and all(line.startswith("export.py: error: ") for line in errors)
    assert "checkpoint folder not found" in errors[1]
    assert not (tmp_path / "out").exists()


def test_out_is_replaced_whole_or_not_at_all(exported, tiny_run, tmp_path, monkeypatch, capsys):
    saved, _ = exported
    ck = tiny_run.config.checkpoint_dir

    # A folder that holds something else is never replaced, with or without --overwrite.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert _run_export("--checkpoint_dir", ck, "--out", other, "--overwrite") == 2
    assert os.listdir(other) == ["notes.txt"]
    assert _run_export("--checkpoint_dir", ck, "--out", other / "notes.txt") == 2
    assert "not a folder" in capsys.readouterr().err

    # An existing SavedModel needs --overwrite.
    out = tmp_path / "saved"
    shutil.copytree(saved, out)
    (out / "stale.txt").write_text("from before")
    assert _run_export("--checkpoint_dir", ck, "--out", out) == 2
    assert "--overwrite" in capsys.readouterr().err

    # A failed export (here: its verification) leaves the old one exactly as it was.
    def failing(path, *args, **kwargs):
        assert os.path.isfile(os.path.join(path, "saved_model.pb"))  # checks the written copy
        raise export_cli.ExportError("verification failed (test)")

    monkeypatch.setattr(export_cli, "verify", failing)
    assert _run_export("--checkpoint_dir", ck, "--out", out, "--overwrite") == 1
    assert "verification failed (test)" in capsys.readouterr().err
    assert (out / "stale.txt").read_text() == "from before"
    assert sorted(os.listdir(tmp_path)) == ["other", "saved"]  # no hidden leftovers

    # --overwrite replaces it whole (the stale file goes); --no_verify skips the reload.
    assert _run_export("--checkpoint_dir", ck, "--out", out, "--overwrite", "--no_verify") == 0
    assert "wrote" in capsys.readouterr().out
    assert not (out / "stale.txt").exists() and (out / "saved_model.pb").is_file()
    assert sorted(os.listdir(tmp_path)) == ["other", "saved"]


def test_a_broken_run_folder_is_refused(tiny_run, tmp_path, capsys):
    config = copy_run(tiny_run.config, tmp_path / "run")
    os.remove(os.path.join(config.checkpoint_dir, "feature_stats.json"))
    assert _run_export("--checkpoint_dir", config.checkpoint_dir, "--out", tmp_path / "out") == 2
    assert "feature_stats.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
