"""Parallel conversion: ContextNorm, the parallel Glow, mel-cepstra and alignment, the distance
to a target singer's rendition, aligned pairs, a tiny parallel run and its command lines."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from common_definitions import Config
from utils.audio.mel_cepstrum import align_frames, mel_cepstrum, target_index, warping_alpha
from utils.errors import MigrationError
from utils.evaluation.metrics import compare_pitch, pitch_track, snr_db
from utils.flow.context_norm import ContextNorm, context_windows

pytest.importorskip("pyworld")

from utils.audio import world  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = 16000


def _brute_force_logdets(fn, x):
    """log|det d fn(x)_b / dx_b| per example of ``x`` (float64 slogdet of a batch Jacobian)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reshape(fn(x), [x.shape[0], -1])
    jac = tf.reshape(tape.batch_jacobian(y, x), [x.shape[0], y.shape[1], -1]).numpy()
    sign, logdet = np.linalg.slogdet(jac.astype(np.float64))
    assert np.all(sign != 0)
    return logdet


# ----------------------------------------------------------------------------- ContextNorm
def _context_norm_case(seed=0):
    rng = np.random.default_rng(seed)
    layer = ContextNorm(4, 2, num_singers=2, cond_dims=3, hidden=8, taps=3)
    table = rng.standard_normal((2, 3)).astype(np.float32)
    return layer, table, rng


def test_context_norm_is_solved_to_the_linear_map_of_its_initialisation_data():
    layer, table, rng = _context_norm_case()
    context = rng.standard_normal((48, 12, 4, 2))
    singer = rng.integers(0, 2, 48)
    maps = [0.3 * rng.standard_normal((3 * 8, 8)) for _ in range(2)]
    windows = context_windows(context, 3).reshape(48, 12, -1)
    clean = np.stack([windows[b] @ maps[singer[b]] for b in range(48)]).reshape(48, 12, 4, 2)
    x = clean + 0.1 * rng.standard_normal(clean.shape)
    layer.initialize(x, context, singer)
    shift, logs = layer.params(context, table[singer], table)
    # Each singer's own map: the prediction is the clean target, the scale the noise's.
    assert np.sqrt(np.mean(np.square(shift.numpy() - clean))) < 0.03
    np.testing.assert_allclose(np.exp(logs.numpy()).mean(), 0.1, rtol=0.1)
    # Initialised once: a second call changes nothing.
    before = layer.linear_kernel.numpy().copy()
    layer.initialize(x[::-1], context, singer)
    np.testing.assert_array_equal(layer.linear_kernel.numpy(), before)


@pytest.mark.parametrize("condition", ["singer 0", "singer 1", "a mix"])
def test_context_norm_inverts_with_the_jacobian_logdet_under_every_condition(condition):
    layer, table, rng = _context_norm_case(1)
    layer.initialize(rng.standard_normal((8, 12, 4, 2)), rng.standard_normal((8, 12, 4, 2)),
                     np.array([0, 1] * 4))
    for variable in layer.trainable_variables:  # off the solved map, onto the network too
        variable.assign(variable + 0.05 * rng.standard_normal(variable.shape))
    cond = {"singer 0": table[[0, 0]], "singer 1": table[[1, 1]],
            "a mix": 0.3 * table[[0, 0]] + 0.7 * table[[1, 1]]}[condition]
    x = tf.constant(rng.standard_normal((2, 12, 4, 2)), tf.float32)
    context = rng.standard_normal((2, 12, 4, 2)).astype(np.float32)
    y, logdet = layer.forward(x, cond, context, table)
    np.testing.assert_allclose(layer.inverse(y, cond, context, table).numpy(), x.numpy(),
                               atol=1e-5)
    brute = _brute_force_logdets(lambda v: layer.forward(v, cond, context, table)[0], x)
    np.testing.assert_allclose(logdet.numpy(), brute, rtol=1e-4, atol=1e-3)
    # A different context gives a different map of the same x.
    other, _ = layer.forward(x, cond, context[::-1], table)
    assert not np.allclose(other.numpy(), y.numpy())
    with pytest.raises(ValueError, match="needs the source's frames"):
        layer.forward(x, cond, None, table)


# ----------------------------------------------------------------------------- the parallel Glow
@pytest.fixture(scope="module")
def parallel_glow():
    from model import Glow

    model = Glow(input_shape=(8, 4, 2), k_glow=2, l_glow=2, hidden_channels=8, num_singers=2,
                 singer_dims=4, parallel=True, seed=3)
    rng = np.random.default_rng(0)
    x, context = (rng.standard_normal((16, 8, 4, 2)).astype(np.float32) for _ in range(2))
    assert model.initialize(x, np.arange(16) % 2, context)
    for variable in model.trainable_variables:
        variable.assign(variable + 0.05 * rng.standard_normal(variable.shape))
    return model, x, context


def test_a_parallel_glow_is_exact_given_any_context(parallel_glow):
    model, x, context = parallel_glow
    ids = np.array([0, 1], np.int32)
    for given in (context[:2], context[2:4]):
        z, logdet = model.encode(x[:2], ids, given)
        np.testing.assert_allclose(model.decode(z, ids, given).numpy(), x[:2], atol=1e-4)
        brute = _brute_force_logdets(lambda v: model.encode(v, ids, given)[0],
                                     tf.constant(x[:2]))
        np.testing.assert_allclose(logdet.numpy(), brute, rtol=1e-4, atol=1e-2)
    bits = model.bits_per_dim(x[:2], ids, context[:2]).numpy()
    assert np.isfinite(bits).all()
    with pytest.raises(Exception, match="needs the source's frames"):
        model.encode(x[:2], ids)


def test_a_parallel_config_needs_a_conditional_world_model_and_drops_singer_norm():
    config = Config(feature="world", conditional=True, parallel=True)
    assert config.parallel and not config.singer_norm
    with pytest.raises(ValueError, match="parallel needs conditional and the world feature"):
        Config(parallel=True)
    with pytest.raises(ValueError, match="parallel needs conditional and the world feature"):
        Config(feature="world", parallel=True)
    assert not Config.from_dict(Config(feature="world", conditional=True).to_dict()).parallel


# ----------------------------------------------------------------------------- mel-cepstra
def test_mel_cepstra_follow_the_mel_scale_and_put_a_level_change_in_c0_alone():
    assert warping_alpha(16000) == pytest.approx(0.41, abs=0.005)
    assert 0.53 <= warping_alpha(44100) <= 0.56
    rng = np.random.default_rng(0)
    envelope = np.exp(rng.standard_normal((5, 513)).cumsum(axis=1) * 0.05)
    cepstra = mel_cepstrum(envelope, RATE)
    louder = mel_cepstrum(envelope * 100.0, RATE)  # +20 dB of power: ln(10) of log amplitude
    np.testing.assert_allclose(louder[:, 1:], cepstra[:, 1:], atol=1e-9)
    np.testing.assert_allclose(louder[:, 0] - cepstra[:, 0], np.log(10.0), rtol=1e-6)
    flat = mel_cepstrum(np.full((2, 513), 4.0), RATE)
    np.testing.assert_allclose(flat[:, 1:], 0.0, atol=1e-9)


def test_alignment_recovers_a_time_stretch_and_works_piecewise_on_long_songs(monkeypatch):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((120, 6)).cumsum(axis=0)
    b = np.repeat(a, 2, axis=0)  # b is a at half speed
    index = target_index(align_frames(a, b), len(a))
    assert np.abs(index - (2 * np.arange(120) + 0.5)).max() <= 1
    import utils.audio.mel_cepstrum as mel

    monkeypatch.setattr(mel, "MAX_DTW_CELLS", 3000)  # several pieces
    path = align_frames(a, b)
    assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (119, 239)
    assert (np.diff(path, axis=0) >= 0).all()
    assert set(path[:, 0]) == set(range(120)) and set(path[:, 1]) == set(range(240))


# ----------------------------------------------------------------------------- distance
@pytest.fixture(scope="module")
def pair(demo_corpus):
    from utils.audio.signal import load_audio

    return tuple(load_audio(os.path.join(folder, "song_00.wav"), RATE)
                 for folder in (demo_corpus.virtual, demo_corpus.real))


def test_the_distance_to_a_rendition_is_zero_for_itself_and_the_ceiling_comes_closer(pair):
    from utils.evaluation.distance import Renditions, share_closed

    virtual, real = pair
    config = Config(feature="world")
    renditions = Renditions([real], config)
    assert renditions.to(0, real) == pytest.approx(0.0, abs=1e-9)
    source = renditions.to(0, virtual)
    ceiling = renditions.ceiling(0, virtual)
    assert ceiling.shape == virtual.shape and np.isfinite(ceiling).all()
    closer = renditions.to(0, ceiling)
    assert closer < 0.5 * source, (closer, source)
    pitch = compare_pitch(pitch_track(virtual, RATE)[0], pitch_track(ceiling, RATE)[0])
    assert pitch["raw_pitch_accuracy"] >= 0.9, pitch
    assert share_closed(source, closer, source) == 0.0
    assert share_closed(source, closer, closer) == 1.0
    assert np.isnan(share_closed(2.0, 2.0, 1.0))


def test_an_envelope_ratio_rendering_is_the_song_unchanged_and_a_filter_when_changed(pair):
    from utils.migration.rendering import render_envelope_ratio

    song = pair[0]
    config = Config(feature="world")
    analysis = world.analyse(song, config)
    same = render_envelope_ratio(analysis.features, analysis.features, song, config)
    assert snr_db(song, same) > 60
    louder = analysis.features.copy()
    louder[:, 0, 0] += np.log(4.0)  # envelope power x4: amplitude x2 in every frame and bin
    doubled = render_envelope_ratio(louder, analysis.features, song, config)
    assert snr_db(2.0 * song, doubled) > 40
    pitch = compare_pitch(pitch_track(song, RATE)[0], pitch_track(doubled, RATE)[0])
    assert pitch["raw_pitch_accuracy"] >= 0.99


# ----------------------------------------------------------------------------- pairs
def test_songs_pair_by_name_across_singers_and_a_folder_without_partners_is_refused():
    from utils.data.parallel import find_pairs
    from utils.data.shards import DataError

    labels = {"/v/a.wav": "v", "/v/b.wav": "v", "/v/c.wav": "v", "/h/a.mp3": "h",
              "/h/b.wav": "h", "/x/b.flac": "x", "/h/d.wav": "h"}
    assert find_pairs(labels, "v") == [("/v/a.wav", "/h/a.mp3", "h"),
                                       ("/v/b.wav", "/h/b.wav", "h"),
                                       ("/v/b.wav", "/x/b.flac", "x")]
    assert find_pairs(labels, "v", songs=["/v/a.wav", "/h/a.mp3"]) == [
        ("/v/a.wav", "/h/a.mp3", "h")]
    with pytest.raises(DataError, match="no song of 'v' has a song of the same file name"):
        find_pairs({"/v/a.wav": "v", "/h/z.wav": "h"}, "v")
    with pytest.raises(DataError, match="has no song"):
        find_pairs(labels, "nobody")


def test_a_paired_validation_split_holds_both_renditions_of_a_melody_out():
    from utils.training.validation import held_out_per_label

    names = [f"song_{i:02d}" for i in range(10)]
    labels = {f"/v/{n}.wav": "v" for n in names}
    labels.update({f"/h/{n}.mp3": "h" for n in names})
    held = held_out_per_label(labels, 0.2, paired=True)
    assert len(held) == 4
    stems = {os.path.splitext(os.path.basename(p))[0] for p in held}
    assert len(stems) == 2  # the same two melodies in both folders


# ----------------------------------------------------------------------------- a tiny run
@pytest.fixture(scope="module")
def parallel_run(tmp_path_factory):
    """Three 4-second songs per demo singer (the same melodies, same file names), a tiny
    conditional parallel world model trained on them by pipeline.Trainer for 8 steps with one
    melody held out: ``(config, result, messages, corpus)``."""
    import types

    from pipeline import Trainer
    from tests.conftest import tiny_config
    from utils.data.demo_data import make_demo_corpus

    folder = tmp_path_factory.mktemp("parallel_run")
    make_demo_corpus(root=str(folder / "audio"), songs_per_singer=3, song_seconds=4.0)
    corpus = types.SimpleNamespace(virtual=str(folder / "audio" / "virtual"),
                                   real=str(folder / "audio" / "real"))
    config = tiny_config(str(folder / "records"), folder, feature="world", world_dims=16,
                         hop_length=256, n_fft=510, window_size=16, conditional=True,
                         parallel=True, singer_dims=4, epochs=2, steps_per_epoch=4,
                         checkpoint_every=4, validation_split=0.34,
                         data_dirs=(corpus.virtual, corpus.real))
    messages = []
    trainer = Trainer(config, log=messages.append, progress=False)
    result = trainer.fit()
    return types.SimpleNamespace(config=config, result=result, messages=messages, corpus=corpus,
                                 trainer=trainer, folder=folder)


def test_a_parallel_run_trains_on_aligned_pairs_and_validates_on_a_held_out_melody(parallel_run):
    run = parallel_run
    assert run.trainer.singers == ("virtual", "real")  # the first --data_dir is the source
    assert len(run.trainer.data.pairs) == 2 and len(run.trainer.data.held_pairs) == 1
    assert any("parallel: 2 pair(s) of virtual with real" in m for m in run.messages)
    history = run.result.history
    assert history[-1]["bits_per_dim"] < history[0]["bits_per_dim"]
    assert all(np.isfinite(h["val_bits_per_dim"]) for h in history)
    from utils.runs.run_folder import read_singers

    assert read_singers(run.config.checkpoint_dir) == ("virtual", "real")
    assert os.path.isfile(os.path.join(run.config.output_dir, "sample.wav"))
    # The same seed gives the same batches; the target and its source share their frames' time.
    x, ids, context = next(iter(run.trainer.data.batches(run.config, 7)))
    again = next(iter(run.trainer.data.batches(run.config, 7)))
    np.testing.assert_array_equal(x.numpy(), again[0].numpy())
    assert x.shape == context.shape == (run.config.batch_size, 16, 16, 2)
    assert set(ids.numpy()) == {1}


def test_parallel_convert_keeps_the_song_at_strength_zero_and_the_melody_at_one(parallel_run):
    from utils.audio.signal import load_audio
    from utils.migration.convert import Convert
    from utils.runs.run_folder import load_for_inference

    codec = load_for_inference(parallel_run.config.checkpoint_dir)
    song = load_audio(os.path.join(parallel_run.corpus.virtual, "song_02.wav"), RATE)
    convert = Convert(codec.with_singer("virtual"), "real")
    assert convert.plan == "parallel"
    assert snr_db(song, convert.transform(song, 0.0).samples) > 60
    out = convert.transform(song, 1.0).samples
    assert out.shape == song.shape and np.isfinite(out).all() and snr_db(song, out) < 40
    np.testing.assert_array_equal(out, convert.transform(song, 1.0).samples)  # seeded draws
    pitch = compare_pitch(pitch_track(song, RATE)[0], pitch_track(out, RATE)[0])
    assert pitch["raw_pitch_accuracy"] >= 0.9, pitch
    coldest = Convert(codec.with_singer("virtual"), "real", temperature=0.0)
    assert not np.array_equal(coldest.transform(song, 1.0).samples, out)
    with pytest.raises(MigrationError, match="converts songs of 'virtual'"):
        Convert(codec.with_singer("real"), "virtual")
    with pytest.raises(MigrationError, match="source singer"):
        Convert(codec.with_singer("virtual"), "virtual")
    with pytest.raises(MigrationError, match="temperature must be a finite number >= 0"):
        Convert(codec.with_singer("virtual"), "real", temperature=-1.0)
    with pytest.raises(MigrationError, match="cannot transpose"):
        convert.transform(song, 1.0, semitones=2.0)
    with pytest.raises(MigrationError, match="does not classify"):
        codec.classify(song)


def _run(script, *args, timeout=600):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_the_command_lines_convert_and_measure_the_distance_to_the_renditions(parallel_run,
                                                                              tmp_path):
    corpus, checkpoint = parallel_run.corpus, parallel_run.config.checkpoint_dir
    sources, renditions = tmp_path / "sources", tmp_path / "renditions"
    sources.mkdir()
    renditions.mkdir()
    shutil.copy(os.path.join(corpus.virtual, "song_02.wav"), sources / "song_02.wav")
    shutil.copy(os.path.join(corpus.real, "song_02.wav"), renditions / "song_02.wav")
    out = tmp_path / "converted.wav"
    done = _run("migrate.py", "--checkpoint_dir", checkpoint, "--source",
                str(sources / "song_02.wav"), "--method", "convert", "--target_singer", "real",
                "--temperature", "0.3", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert "source singer: virtual (the one this parallel checkpoint converts)" in (
        done.stdout + done.stderr)
    assert out.is_file()
    refused = _run("migrate.py", "--checkpoint_dir", checkpoint, "--source",
                   str(sources / "song_02.wav"), "--method", "eq", "--reference", corpus.real,
                   "--temperature", "0.3", "--output", str(tmp_path / "eq.wav"))
    assert refused.returncode == 2 and "--temperature is for --method convert" in refused.stderr
    report = tmp_path / "eval.json"
    done = _run("evaluate.py", "--checkpoint_dir", checkpoint, "--virtual", corpus.virtual,
                "--real", corpus.real, "--sources", str(sources), "--target_renditions",
                str(renditions), "--methods", "eq", "convert", "--strengths", "0", "1",
                "--json", str(report))
    assert done.returncode == 0, done.stderr
    assert "distance to the target's renditions: source" in done.stdout
    assert "of the way to the ceiling" in done.stdout
    results = json.loads(report.read_text())
    points = results["renditions"]
    assert points["ceiling"]["mcd_db"] < points["source_mcd_db"]
    rows = {(r["method"], r["strength"]): r for r in results["migration"]}
    assert rows[("convert", 0.0)]["mcd_db"] == pytest.approx(points["source_mcd_db"], abs=0.05)
    assert results["flow_classifier"] is None
    assert results["heldout"]["patches"] > 0 and np.isfinite(results["heldout"]["bits_per_dim"])
    (renditions / "song_02.wav").rename(renditions / "other.wav")
    refused = _run("evaluate.py", "--checkpoint_dir", checkpoint, "--virtual", corpus.virtual,
                   "--real", corpus.real, "--sources", str(sources), "--target_renditions",
                   str(renditions), "--json", str(tmp_path / "refused.json"))
    assert refused.returncode == 2 and "has no rendition of song_02.wav" in refused.stderr


def test_train_py_refuses_parallel_without_a_conditional_world_model(tmp_path):
    done = _run("train.py", "--parallel", "--data_dir", str(tmp_path), "--checkpoint_dir",
                str(tmp_path / "ck"), timeout=120)
    assert done.returncode == 2
    assert "parallel needs conditional and the world feature" in done.stderr
    assert "Traceback" not in done.stderr
