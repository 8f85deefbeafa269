"""Folder migration: ``migrate.py --source DIR --output OUTDIR`` and utils/migration/folders.py.

The planning, record and loop tests use a stand-in for the per-song work (no model); the
end-to-end tests run ``migrate.main`` in-process on the session's tiny trained run and on a
conditional run trained here, on songs the models never saw.
"""

import hashlib
import json
import os
import re
import shutil
import types

import numpy as np
import pytest
import soundfile as sf

import migrate
from utils.errors import SinGlowError
from utils.migration.folders import (Console, FolderAbort, FolderError, FolderProgress, SongResult,
                                     check_folders, is_complete, migrate_folder, output_stems,
                                     plan_folder, read_record)

RATE = 16000  # the demo corpus's and the tiny configuration's sampling rate (Hz)


def snapshot(folder):
    """Every entry under ``folder`` (hidden ones too) with the SHA-256 of each file's bytes."""
    found = {}
    for root, dirs, names in os.walk(folder):
        for name in dirs:
            found[os.path.relpath(os.path.join(root, name), folder)] = "folder"
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def lines(text, prefix):
    return [line for line in text.splitlines() if line.startswith(prefix)]


# ----------------------------------------------------------------------------- output names
def test_output_names_keep_the_extension_only_where_two_songs_would_collide():
    stems = output_stems(["a/song.mp3", "a/Song.WAV", "a/other.flac", "b/song.ogg", "c.wav"])
    assert stems == {"a/song.mp3": "a/song.mp3", "a/Song.WAV": "a/Song.WAV",
                     "a/other.flac": "a/other", "b/song.ogg": "b/song", "c.wav": "c"}


def test_output_names_that_still_clash_are_refused():
    # song.mp3 keeps its name because of song.wav, and then meets song.mp3.wav's plain stem.
    with pytest.raises(FolderError, match="would both be migrated to song.mp3.wav"):
        output_stems(["song.mp3", "song.wav", "song.mp3.wav"])
    # An output file where another song needs an output folder.
    with pytest.raises(FolderError, match="name of an output folder"):
        output_stems(["x.wav", "x.wav/inner.wav"])


def test_output_folders_that_could_write_into_the_source_are_refused(tmp_path):
    source = tmp_path / "songs"
    (source / "sub").mkdir(parents=True)
    (tmp_path / "file.txt").write_text("not a folder")
    for output, fragment in [(source, "inside --source"), (source / "sub" / "out", "inside"),
                             (tmp_path / "file.txt", "is a file"),
                             (tmp_path / "new.wav", "must be a folder")]:
        with pytest.raises(FolderError, match=fragment):
            check_folders(str(source), str(output))
    os.symlink(source / "sub", tmp_path / "link")  # resolved: still inside the source
    with pytest.raises(FolderError, match="inside --source"):
        check_folders(str(source), str(tmp_path / "link" / "out"))
    with pytest.raises(FolderError, match="inside --reference"):
        check_folders(str(source), str(tmp_path / "ref" / "out"), str(tmp_path))
    check_folders(str(source), str(tmp_path / "out"), str(tmp_path / "ref"))  # fine

    # The source inside the output folder: only a song whose output lands in it is refused.
    outer = tmp_path / "outer"
    inner = outer / "songs"
    (inner / "songs").mkdir(parents=True)
    (inner / "a.wav").write_bytes(b"")
    check_folders(str(inner), str(outer))
    assert [job.wav for job in plan_folder(str(inner), str(outer))] == [str(outer / "a.wav")]
    (inner / "songs" / "b.wav").write_bytes(b"")
    with pytest.raises(FolderError, match="inside --source"):
        plan_folder(str(inner), str(outer))


# ----------------------------------------------------------------------------- the loop
def fake_folder(tmp_path):
    source = tmp_path / "songs"
    (source / "sub").mkdir(parents=True)
    for name in ("a.wav", "b.wav", "sub/c.mp3"):
        (source / name).write_bytes(name.encode())
    (source / ".hidden.wav").write_bytes(b"never listed")
    return source, plan_folder(str(source), str(tmp_path / "out"))


def fake_work(calls, fail=(), warn=(), interrupt=None):
    """A song's work that writes stand-in outputs (1.5 s each), fails for names in ``fail``,
    warns for those in ``warn`` and raises ``interrupt`` at the song named so."""
    import warnings

    def work(job, console):
        calls.append(job.relative)
        if job.relative in fail:
            raise SinGlowError("cannot decode: not a recognised audio format")
        if job.relative in warn:
            warnings.warn("source is shorter than one patch")
            warnings.warn("source is shorter than one patch")  # printed once
            warnings.warn("the decoder's module is deprecated", DeprecationWarning)
        os.makedirs(os.path.dirname(job.wav), exist_ok=True)
        with open(job.wav, "wb") as handle:
            handle.write(b"wav")
        if job.relative == interrupt:
            raise KeyboardInterrupt
        with open(job.figure, "wb") as handle:
            handle.write(b"png")
        return SongResult(1.5, "SNR vs source 9.0 dB", {"seconds": 1.5})

    return work


def test_a_rerun_skips_complete_outputs_and_redoes_stale_ones(tmp_path, capsys):
    source, jobs = fake_folder(tmp_path)
    assert [job.relative for job in jobs] == ["a.wav", "b.wav", os.path.join("sub", "c.mp3")]
    assert jobs[2].wav == str(tmp_path / "out" / "sub" / "c.wav")
    recipe = {"method": "match", "strength": 1.0, "chunking": (None, None)}
    calls = []
    progress = migrate_folder(jobs, fake_work(calls), recipe, Console("migrate.py"))
    assert (progress.migrated, progress.skipped, progress.seconds) == (3, 0, 4.5)
    assert progress.summary() == "migrated: 3 songs (4.50 s of audio), skipped: 0"
    record = read_record(jobs[2])
    assert record["source_path"] == os.path.join("sub", "c.mp3") and record["seconds"] == 1.5
    assert record["wav"] == "c.wav" and record["figure"] == "c.png"
    out = capsys.readouterr().out
    assert f"sub/c.mp3 -> {jobs[2].wav} (1.50 s, SNR vs source 9.0 dB)" in out

    calls.clear()
    progress = migrate_folder(jobs, fake_work(calls), dict(recipe), Console("migrate.py"))
    assert calls == [] and progress.complete == 3
    assert progress.summary() == ("migrated: 0 songs (0.00 s of audio), skipped: 0, "
                                  "already complete: 3")
    assert "--overwrite redoes them" in capsys.readouterr().err

    # A replaced source, a lost figure and other settings each make an output stale.
    os.utime(source / "a.wav", ns=(1, 1))
    os.remove(jobs[1].figure)
    assert not is_complete(jobs[0], recipe) and not is_complete(jobs[1], recipe)
    assert is_complete(jobs[2], recipe) and not is_complete(jobs[2], dict(recipe, strength=0.5))
    progress = migrate_folder(jobs, fake_work(calls), recipe, Console("migrate.py"))
    assert calls == ["a.wav", "b.wav"] and (progress.complete, progress.redone) == (1, 2)
    calls.clear()
    migrate_folder(jobs, fake_work(calls), recipe, Console("migrate.py"), overwrite=True)
    assert len(calls) == 3


def test_failed_songs_are_skipped_with_one_named_line_and_warnings_name_their_song(
        tmp_path, capsys):
    _, jobs = fake_folder(tmp_path)
    calls = []
    progress = migrate_folder(jobs, fake_work(calls, fail={"b.wav"}, warn={"a.wav"}), {},
                              Console("migrate.py"), show_bar=True)
    assert calls == ["a.wav", "b.wav", os.path.join("sub", "c.mp3")]
    assert (progress.migrated, progress.skipped) == (2, 1)
    err = capsys.readouterr().err
    assert lines(err, "migrate.py: warning: skipping") == [
        "migrate.py: warning: skipping b.wav: cannot decode: not a recognised audio format"]
    assert lines(err, "migrate.py: warning: a.wav:") == [
        "migrate.py: warning: a.wav: source is shorter than one patch"]
    assert "deprecated" not in err
    assert re.search(r"\b[0-3]/3\b", err)  # the progress bar was drawn
    assert read_record(jobs[1]) is None and not os.path.exists(jobs[1].wav)


def test_an_abort_stops_the_run_and_ctrl_c_keeps_the_songs_written(tmp_path):
    _, jobs = fake_folder(tmp_path)

    def aborting(job, console):
        raise FolderAbort("no usable song under the reference folder")

    with pytest.raises(FolderAbort):
        migrate_folder(jobs, aborting, {}, Console("migrate.py"))
    progress = FolderProgress()
    with pytest.raises(KeyboardInterrupt):
        migrate_folder(jobs, fake_work([], interrupt="b.wav"), {}, Console("migrate.py"),
                       progress)
    assert (progress.migrated, progress.current) == (1, "b.wav")
    assert is_complete(jobs[0], {}) and read_record(jobs[1]) is None
    # The song cut short has a wav but no record, so a rerun migrates it again.
    calls = []
    migrate_folder(jobs, fake_work(calls), {}, Console("migrate.py"))
    assert calls == ["b.wav", os.path.join("sub", "c.mp3")]


# ----------------------------------------------------------------------------- migrate.py
@pytest.fixture(scope="module")
def unseen(tmp_path_factory):
    """A folder of three songs no model was trained on (``first.wav``, ``second.wav`` and
    ``sub/third.mp3``, 2 s each: demo melodies of another seed) and two broken files
    (``notes.wav``, ``sub/lyrics.mp3``: text). The mp3 is encoded by soundfile (libsndfile 1.1+
    writes MPEG Layer III, as tests/test_audio.py relies on too)."""
    from utils.data.demo_data import make_demo_corpus

    root = tmp_path_factory.mktemp("unseen")
    made = make_demo_corpus(root=str(root / "gen"), songs_per_singer=2, song_seconds=2.0,
                            seed=7)
    songs = root / "songs"
    (songs / "sub").mkdir(parents=True)
    shutil.copy(made["virtual"][0], songs / "first.wav")
    shutil.copy(made["real"][1], songs / "second.wav")
    samples, rate = sf.read(made["virtual"][1], dtype="float32")
    sf.write(str(songs / "sub" / "third.mp3"), samples, rate, format="MP3",
             subtype="MPEG_LAYER_III")
    (songs / "notes.wav").write_text("not audio: the lyrics of the first song")
    (songs / "sub" / "lyrics.mp3").write_text("not audio either")
    return types.SimpleNamespace(root=root, songs=str(songs), made=made)


def run_migrate(capsys, *args):
    status = migrate.main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_folder_of_unseen_songs_is_migrated_without_touching_it(
        tiny_run, demo_corpus, unseen, tmp_path, capsys, monkeypatch):
    from utils.audio.signal import load_audio
    from utils.runs.codec import Codec

    before = snapshot(unseen.songs)
    out = tmp_path / "out"
    reference_passes = []
    original = Codec.folder_latent_stats

    def counting(self, folder, *args, **kwargs):
        reference_passes.append(folder)
        return original(self, folder, *args, **kwargs)

    monkeypatch.setattr(Codec, "folder_latent_stats", counting)
    flags = ["--checkpoint_dir", tiny_run.config.checkpoint_dir, "--source", unseen.songs,
             "--reference", demo_corpus.real, "--method", "match", "--output", out]
    status, stdout, stderr = run_migrate(capsys, *flags)
    assert status == 0, stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in out.rglob("*.wav")) == ["first.wav", "second.wav", "third.wav"]
    assert (out / "sub" / "third.png").is_file() and (out / "sub" / "third.json").is_file()
    seconds = 0.0
    for name in ("first.wav", "second.wav", "sub/third.mp3"):
        source = load_audio(os.path.join(unseen.songs, name), RATE)
        wav = out / (os.path.splitext(name)[0] + ".wav")
        assert load_audio(str(wav), RATE).shape == source.shape  # as long as the source
        seconds += len(source) / RATE
    skipped = lines(stderr, "migrate.py: warning: skipping")
    assert len(skipped) == 2, stderr
    assert "notes.wav: cannot decode" in skipped[0] and "sub/lyrics.mp3" in skipped[1]
    assert stdout.rstrip().splitlines()[-1] == (f"migrated: 3 songs ({seconds:.2f} s of audio),"
                                                " skipped: 2")
    assert reference_passes == [demo_corpus.real]  # the reference's statistics: once
    assert snapshot(unseen.songs) == before

    # A rerun leaves the complete outputs as they are; --overwrite redoes them.
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    status, stdout, stderr = run_migrate(capsys, *flags)
    assert status == 0, stderr
    assert stdout.rstrip().splitlines()[-1] == ("migrated: 0 songs (0.00 s of audio), "
                                                "skipped: 2, already complete: 3")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == written
    status, stdout, _ = run_migrate(capsys, *flags, "--overwrite")
    assert status == 0 and "migrated: 3 songs" in stdout
    assert snapshot(unseen.songs) == before


def test_eq_over_a_folder_computes_the_per_bin_statistics_once_and_redoes_stale_outputs(
        tiny_run, demo_corpus, unseen, tmp_path, capsys, monkeypatch):
    import utils.migration.targets as targets

    passes = []
    original = targets.bin_stats
    monkeypatch.setattr(targets, "bin_stats",
                        lambda *args: passes.append(args[0]) or original(*args))
    flags = ["--checkpoint_dir", tiny_run.config.checkpoint_dir, "--source", unseen.songs,
             "--reference", demo_corpus.real, "--method", "eq", "--output", tmp_path / "out"]
    status, stdout, stderr = run_migrate(capsys, *flags, "--strength", "0.5")
    assert status == 0, stderr
    assert passes == [demo_corpus.real] and "migrated: 3 songs" in stdout
    record = json.loads((tmp_path / "out" / "first.json").read_text())
    assert record["recipe"]["method"] == "eq" and record["recipe"]["strength"] == 0.5
    status, stdout, stderr = run_migrate(capsys, *flags, "--strength", "1")
    assert status == 0 and "migrated: 3 songs" in stdout
    assert "3 songs were migrated before with other settings" in stderr


def test_ctrl_c_in_a_folder_keeps_the_songs_written_and_says_how_many(
        tiny_run, demo_corpus, unseen, tmp_path, capsys, monkeypatch):
    figures = []
    original = migrate.spectrogram_figure

    def interrupted_second(*args):
        figures.append(args[3])
        if len(figures) == 2:
            raise KeyboardInterrupt
        original(*args)

    monkeypatch.setattr(migrate, "spectrogram_figure", interrupted_second)
    out = tmp_path / "out"
    status, _, stderr = run_migrate(
        capsys, "--checkpoint_dir", tiny_run.config.checkpoint_dir, "--source", unseen.songs,
        "--reference", demo_corpus.real, "--method", "midpoint", "--output", out)
    assert status == 130, stderr
    assert stderr.rstrip().splitlines()[-1] == (
        f"migrate.py: interrupted; 1 song written to {out}; second.wav (in progress) was not")
    assert sorted(p.name for p in out.rglob("*")) == ["first.json", "first.png", "first.wav",
                                                      "second.wav"]


def test_a_folder_where_no_song_can_be_migrated_fails_and_bad_folders_are_refused(
        tiny_run, demo_corpus, unseen, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(os.path.join(unseen.songs, "notes.wav"), broken / "notes.wav")
    (broken / "silent.wav").write_bytes(b"")
    sf.write(str(broken / "quiet.wav"), np.zeros(RATE, np.float32), RATE)
    common = ["--checkpoint_dir", tiny_run.config.checkpoint_dir, "--reference",
              demo_corpus.real]
    status, stdout, stderr = run_migrate(capsys, *common, "--source", broken, "--output",
                                         tmp_path / "out")
    assert status == 1
    assert len(lines(stderr, "migrate.py: warning: skipping")) == 3
    assert "quiet.wav: silent" in stderr and "silent.wav: empty file" in stderr
    assert stdout.rstrip().splitlines()[-1] == "migrated: 0 songs (0.00 s of audio), skipped: 3"
    assert lines(stderr, "migrate.py: error:") == [
        f"migrate.py: error: no song under {broken} could be migrated"]

    # A reference without one usable song stops the run at its first song: not the song's fault.
    status, stdout, stderr = run_migrate(
        capsys, "--checkpoint_dir", tiny_run.config.checkpoint_dir, "--reference", broken,
        "--source", unseen.songs, "--output", tmp_path / "out2")
    assert status == 1 and "Traceback" not in stderr
    assert stderr.rstrip().splitlines()[-1] == f"migrate.py: error: no usable song under {broken}"
    assert stdout.rstrip().splitlines()[-1] == "migrated: 0 songs (0.00 s of audio), skipped: 0"

    for extra, fragment in [
            (["--source", unseen.songs, "--output", os.path.join(unseen.songs, "out")],
             "inside --source"),
            (["--source", unseen.songs, "--output", tmp_path / "out.wav"], "must be a folder"),
            (["--source", unseen.songs, "--output", tmp_path / "o", "--save_reference_stats",
              os.path.join(unseen.songs, "ref.npz")], "never written to"),
            (["--source", tmp_path / "empty", "--output", tmp_path / "o"], "no audio files")]:
        (tmp_path / "empty").mkdir(exist_ok=True)
        status, _, stderr = run_migrate(capsys, *common, *extra)
        assert status == 2 and len(stderr.splitlines()) == 1 and fragment in stderr, stderr
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def conditional_checkpoint(tiny_records, tmp_path_factory):
    """A singer-conditional tiny run (singers real and virtual), as tests/test_conditional.py
    trains it."""
    from pipeline import Trainer
    from tests.conftest import tiny_config

    folder = tmp_path_factory.mktemp("conditional_folder")
    config = tiny_config(tiny_records, folder, conditional=True, singer_dims=4, epochs=1,
                         steps_per_epoch=6, checkpoint_every=6)
    Trainer(config, log=lambda _: None, progress=False).fit()
    return config.checkpoint_dir


def test_a_conditional_checkpoint_picks_each_songs_singer_and_keeps_statistics_per_singer(
        conditional_checkpoint, demo_corpus, unseen, tmp_path, capsys, monkeypatch):
    from utils.runs.codec import Codec

    songs = tmp_path / "songs"
    songs.mkdir()
    for name in ("first.wav", "second.wav"):
        shutil.copy(os.path.join(unseen.songs, name), songs / name)
    passes = []
    original = Codec.folder_latent_stats

    def counting(self, folder, *args, **kwargs):
        passes.append(self.singer)
        return original(self, folder, *args, **kwargs)

    monkeypatch.setattr(Codec, "folder_latent_stats", counting)
    common = ["--checkpoint_dir", conditional_checkpoint, "--source", songs]
    status, stdout, stderr = run_migrate(capsys, *common, "--reference", demo_corpus.real,
                                         "--method", "shift", "--output", tmp_path / "shift")
    assert status == 0, stderr
    singers = [json.loads((tmp_path / "shift" / f"{name}.json").read_text())["source_singer"]
               for name in ("first", "second")]
    assert set(singers) <= {"real", "virtual"}
    assert sorted(passes) == sorted(set(singers))  # once per source singer met
    assert f"source singer {singers[0]}" in stdout

    status, stdout, stderr = run_migrate(capsys, *common, "--method", "convert",
                                         "--target_singer", "real", "--source_singer",
                                         "virtual", "--output", tmp_path / "convert")
    assert status == 0, stderr
    assert "migrated: 2 songs (4.00 s of audio), skipped: 0" in stdout
    record = json.loads((tmp_path / "convert" / "second.json").read_text())
    assert record["source_singer"] == "virtual" and record["recipe"]["target_singer"] == "real"

    # Saving the reference statistics of a folder needs one source singer.
    status, _, stderr = run_migrate(capsys, *common, "--reference", demo_corpus.real,
                                    "--output", tmp_path / "o", "--save_reference_stats",
                                    tmp_path / "ref.npz")
    assert status == 2 and "needs --source_singer" in stderr
