"""The singer-conditional model in training: train.py --conditional, the singer map beside the
checkpoint, resuming under it, and what is refused."""

import json
import math
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from common_definitions import Config
from data_loader import SongDataLoader
from pipeline import CheckpointMismatch, Trainer
from tests.conftest import TINY, tiny_config


@pytest.fixture(scope="module")
def conditional_run(tiny_records, tmp_path_factory):
    folder = tmp_path_factory.mktemp("conditional")
    config = tiny_config(tiny_records, folder, conditional=True, singer_dims=4, epochs=1,
                         steps_per_epoch=6, checkpoint_every=6)
    trainer = Trainer(config, log=lambda _: None, progress=False)
    result = trainer.fit()
    return config, trainer, result


def test_a_conditional_run_trains_on_singer_ids_and_saves_its_singer_map(conditional_run):
    config, trainer, result = conditional_run
    assert result.step == 6 and np.isfinite(result.history[-1]["bits_per_dim"])
    assert trainer.model.num_singers == 2 and trainer.singers == ("real", "virtual")
    with open(os.path.join(config.checkpoint_dir, "singers.json"), encoding="utf-8") as handle:
        assert json.load(handle) == {"singers": ["real", "virtual"]}
    patches, ids = trainer.init_batch()
    assert patches.shape == (config.batch_size, *config.input_shape)
    assert ids.dtype == tf.int32 and set(ids.numpy()) <= {0, 1}
    # The labels really reach the model: each batch's ids are its patches' singers.
    records = SongDataLoader(config).records()
    x, names = next(iter(records.training_dataset(seed=config.seed, stats=trainer.stats,
                                                  labels=True)))
    np.testing.assert_array_equal(x.numpy(), patches.numpy())
    assert [trainer.singers[i] for i in ids.numpy()] == [n.decode() for n in names.numpy()]
    # SingerNorm was set from the first batches, each singer's sounding frames standardised,
    # and is not trained (neither is the embedding it is a function of).
    from pipeline import SINGER_NORM_BATCHES
    from utils.audio.features import sounding_frames

    model = trainer.model
    assert config.singer_norm and model.input_norm is not None and model.is_initialized()
    trained = {id(v) for v in model.trainable_variables}
    assert id(model.input_norm.kernel) not in trained and id(model.singer_embedding) not in trained
    many, many_ids = trainer.init_batches(SINGER_NORM_BATCHES)
    assert len(many) == SINGER_NORM_BATCHES * config.batch_size
    np.testing.assert_array_equal(many[:config.batch_size], patches.numpy())
    frames = sounding_frames(many, many_ids, config, trainer.stats)
    y, _ = model.input_norm.forward(many, model.singer_condition(many_ids))
    assert set(many_ids) == {0, 1}
    for singer in (0, 1):
        mine = many_ids == singer
        assert frames[mine].sum() >= model.input_norm.MIN_FRAMES
        sounding = y.numpy()[mine][frames[mine]]  # (N, W, C)
        np.testing.assert_allclose(sounding.mean(axis=0), 0.0, atol=1e-4)
    # Training used the conditioning: the two singers' latents differ.
    z_real = trainer.model.encode(patches, tf.zeros_like(ids))[0]
    z_virtual = trainer.model.encode(patches, tf.ones_like(ids))[0]
    assert float(tf.reduce_max(tf.abs(z_real - z_virtual))) > 1e-3


def test_resuming_keeps_the_singer_map_and_refuses_an_unknown_singer(
        conditional_run, demo_corpus, tmp_path):
    config, trainer, _ = conditional_run
    copied = config.replace(checkpoint_dir=str(tmp_path / "ck"), epochs=2)
    shutil.copytree(config.checkpoint_dir, copied.checkpoint_dir)
    messages = []
    resumed = Trainer(copied, log=messages.append, progress=False)
    assert resumed.singers == trainer.singers and resumed.global_step == 6
    for new, old in zip(resumed.model.variables, trainer.model.variables):
        np.testing.assert_array_equal(new.numpy(), old.numpy())
    # Records that hold a third singer cannot be trained into this singer map.
    third = tmp_path / "audio" / "other"
    shutil.copytree(demo_corpus.real, third)
    records = str(tmp_path / "records3")
    SongDataLoader(Config(**TINY, data_dirs=(*demo_corpus.data_dirs, str(third)),
                          records_dir=records)).make(log=lambda _: None)
    with pytest.raises(CheckpointMismatch, match="also hold other"):
        Trainer(copied.replace(records_dir=records), progress=False)
    # An unconditional run cannot resume a conditional checkpoint (a model field differs).
    with pytest.raises(CheckpointMismatch, match="conditional"):
        Trainer(copied.replace(conditional=False), progress=False)


# ---------------------------------------------------------------------------------- inference
TINY_RATE = Config().sampling_rate


@pytest.fixture(scope="module")
def song(demo_corpus):
    from utils.audio.signal import load_audio

    return load_audio(os.path.join(demo_corpus.virtual, "song_00.wav"), TINY_RATE)


def convert(codec, song, singer, strength, **options):
    """The song converted to ``singer`` at ``strength`` by ``convert`` (a codec under the source
    singer): ``(N,)`` samples."""
    from utils.migration.convert import Convert

    return Convert(codec, singer, **options).transform(song, strength).samples


def test_the_codec_of_a_conditional_run_converts_and_classifies(conditional_run, song):
    from utils.errors import MigrationError
    from utils.evaluation.metrics import snr_db
    from utils.runs.run_folder import load_for_inference

    config, trainer, _ = conditional_run
    codec = load_for_inference(config.checkpoint_dir)
    assert codec.singers == ("real", "virtual") and codec.model.conditional
    with pytest.raises(MigrationError, match="choose the singer"):
        codec.reconstruct(song)
    with pytest.raises(MigrationError, match="unknown singer 'nobody'; the checkpoint knows "
                                             "real, virtual"):
        codec.singer_id("nobody")
    virtual = codec.with_singer("virtual")
    assert snr_db(song, virtual.reconstruct(song)) >= 40.0
    # Strength 0 decodes under the source's own conditioning: the source back.
    assert snr_db(song, convert(virtual, song, "real", 0.0)) >= 40.0
    converted = convert(virtual, song, "real", 1.0)
    assert converted.shape == song.shape and np.isfinite(converted).all()
    assert snr_db(song, converted) < 40.0  # decoding under the other singer changes the song
    halfway = convert(virtual, song, "real", 0.5)
    assert snr_db(song, halfway) > snr_db(song, converted) - 1.0
    # Spectrograms convert from the song's own bin moments by default; the singer's are the
    # other choice, and both give the source back at strength 0.
    by_singer = convert(virtual, song, "real", 1.0, source_moments="singer")
    assert np.abs(by_singer - converted).max() > 1e-3
    assert snr_db(song, convert(virtual, song, "real", 0.0, source_moments="singer")) >= 40.0
    with pytest.raises(MigrationError, match="source_moments must be 'singer' or 'song'"):
        convert(virtual, song, "real", 1.0, source_moments="album")
    # Below harmonic_hz (default 1000 Hz) the change keeps the source's harmonics; 0 lets every
    # bin change freely; both give the source back at strength 0.
    free = convert(virtual, song, "real", 1.0, harmonic_hz=0.0)
    assert np.abs(free - converted).max() > 1e-3
    assert snr_db(song, convert(virtual, song, "real", 0.0, harmonic_hz=0.0)) >= 40.0
    with pytest.raises(MigrationError, match="harmonic_hz must be a finite number >= 0"):
        convert(virtual, song, "real", 1.0, harmonic_hz=-5.0)
    scores = codec.singer_scores(song)
    assert set(scores) == {"real", "virtual"} and all(np.isfinite(list(scores.values())))
    assert codec.classify(song) == min(scores, key=scores.get)


def test_migrate_cli_converts_and_refuses_what_cannot_be_converted(
        conditional_run, tiny_run, demo_corpus, song, tmp_path, capsys):
    import migrate
    from utils.audio.signal import load_audio

    config, _, _ = conditional_run
    source = os.path.join(demo_corpus.virtual, "song_00.wav")
    out = tmp_path / "converted.wav"
    code = migrate.main(["--checkpoint_dir", config.checkpoint_dir, "--source", source,
                         "--method", "convert", "--target_singer", "real", "--strength", "1",
                         "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "source singer: " in captured.err and "(the most likely; bits/dim" in captured.err
    assert load_audio(str(out), TINY_RATE).shape == song.shape
    assert os.path.isfile(tmp_path / "converted.png")

    def refused(*flags):
        code = migrate.main(["--source", source, "--output", str(tmp_path / "x.wav"), *flags])
        errors = [line for line in capsys.readouterr().err.splitlines()
                  if line.startswith("migrate.py: error:")]
        assert code == 2 and len(errors) == 1
        assert not os.path.exists(tmp_path / "x.wav")
        return errors[0]

    ck = ["--checkpoint_dir", config.checkpoint_dir]
    line = refused(*ck, "--method", "convert", "--target_singer", "HUMAN")
    assert "unknown singer 'HUMAN'; the checkpoint knows real, virtual" in line
    line = refused(*ck, "--method", "convert", "--target_singer", "real",
                   "--source_singer", "robot")
    assert "unknown singer 'robot'" in line
    assert "needs --target_singer" in refused(*ck, "--method", "convert")
    line = refused(*ck, "--method", "eq", "--reference", demo_corpus.real, "--source_moments",
                   "song")
    assert "--source_moments is for --method convert, not eq" in line
    line = refused(*ck, "--method", "match", "--reference", demo_corpus.real, "--harmonic_hz",
                   "500")
    assert "--harmonic_hz is for --method convert or eq, not match" in line
    line = refused(*ck, "--method", "convert", "--target_singer", "real", "--harmonic_hz", "-1")
    assert "--harmonic_hz must be >= 0, got -1" in line
    line = refused("--checkpoint_dir", tiny_run.config.checkpoint_dir, "--method", "convert",
                   "--target_singer", "real")
    assert "not singer-conditional" in line
    # The no-model baseline needs no conditional checkpoint, only reference songs.
    code = migrate.main(["--checkpoint_dir", tiny_run.config.checkpoint_dir, "--source", source,
                         "--method", "eq", "--reference", demo_corpus.real, "--strength", "0",
                         "--output", str(tmp_path / "eq.wav")])
    assert code == 0, capsys.readouterr().err
    from utils.evaluation.metrics import snr_db

    assert snr_db(song, load_audio(str(tmp_path / "eq.wav"), TINY_RATE)) >= 40.0


def test_evaluate_scores_convert_against_eq_with_both_judges(conditional_run, demo_corpus,
                                                             tmp_path, capsys):
    import json

    import evaluate

    config, _, _ = conditional_run
    out = tmp_path / "eval.json"
    code = evaluate.main(["--checkpoint_dir", config.checkpoint_dir, "--virtual",
                          demo_corpus.virtual, "--real", demo_corpus.real, "--songs", "1",
                          "--strengths", "0", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    results = json.loads(out.read_text())
    rows = {(row["method"], row["strength"]): row for row in results["migration"]}
    # Every method a conditional checkpoint supports, by default: the latent moves (under the
    # source singer), the no-model baseline and convert.
    assert {m for m, _ in rows} == {"midpoint", "shift", "match", "eq", "convert"}
    for method in ("eq", "convert"):
        assert rows[(method, 0.0)]["snr_db"] >= 40.0
        assert 0.0 <= rows[(method, 1.0)]["frames_ref_migrated"] <= 1.0
        assert 0.0 <= rows[(method, 1.0)]["p_ref_migrated"] <= 1.0
    assert "best P(real) at raw pitch accuracy >= 0.9" in printed
    assert "the flow as a singer classifier: accuracy" in printed
    assert results["flow_classifier"]["songs"] == 3
    assert math.isfinite(results["heldout"]["bits_per_dim"])
    assert results["harmonic_hz"] == {"convert": None, "eq": 0.0}
    code = evaluate.main(["--checkpoint_dir", config.checkpoint_dir, "--virtual",
                          demo_corpus.virtual, "--real", demo_corpus.real, "--eq_harmonic_hz",
                          "-3", "--json", str(tmp_path / "refused.json")])
    assert code == 2 and not (tmp_path / "refused.json").exists()
    assert "--eq_harmonic_hz must be >= 0, got -3" in capsys.readouterr().err
