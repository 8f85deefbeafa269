"""Shared pytest set-up: the repo root on sys.path, quiet TensorFlow, and the fixtures several test
files use - the tiny configuration, a small demo corpus, its records and a trained tiny run.

Session-scoped fixtures are built once per test run and must be treated as read-only: a test that
trains on or damages a run folder copies it first (``tests.conftest.copy_run``).
"""

import os
import shutil
import subprocess
import sys
import textwrap
import types

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The tiny configuration: 16 frames x 32 bins patches (n_fft 62), K=2, L=2; a step costs
# milliseconds. It holds no song out for validation (the default validation_split=0.1 would hold
# out one of the demo corpus's two songs per singer): the runs built on it train on every song,
# as they did before validation existed; tests/test_validation.py turns it on.
TINY = dict(n_fft=62, hop_length=16, window_size=16, k_glow=2, l_glow=2, hidden_channels=8,
            batch_size=8, log_every=3, griffin_lim_iters=2, warmup_steps=2, learning_rate=2e-3,
            validation_split=0.0)


def tiny_config(records_dir: str, folder, **changes):
    """The tiny Config on ``records_dir`` with its checkpoint, log and output folders in
    ``folder``; ``changes`` override any field."""
    from common_definitions import Config

    folder = str(folder)
    fields = dict(TINY, records_dir=records_dir,
                  checkpoint_dir=os.path.join(folder, "ck"), logdir=os.path.join(folder, "logs"),
                  output_dir=os.path.join(folder, "out"))
    fields.update(changes)
    return Config(**fields)


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``code`` (dedented) run by a fresh Python in the repository root, output as text: what a
    test needs to see which modules a fresh interpreter loads."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def copy_run(config, folder, **changes):
    """``config`` with its checkpoint folder copied into ``folder`` (and fresh log and output
    folders there): a run to train on or damage without touching the shared one."""
    checkpoint_dir = os.path.join(str(folder), "ck")
    shutil.copytree(config.checkpoint_dir, checkpoint_dir)
    return config.replace(checkpoint_dir=checkpoint_dir, logdir=os.path.join(str(folder), "logs"),
                          output_dir=os.path.join(str(folder), "out"), **changes)


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """Two 3-second songs per demo singer: ``virtual`` and ``real`` folders, ``data_dirs``."""
    from utils.data.demo_data import make_demo_corpus

    root = tmp_path_factory.mktemp("demo_corpus")
    make_demo_corpus(root=str(root / "audio"), songs_per_singer=2, song_seconds=3.0)
    virtual, real = str(root / "audio" / "virtual"), str(root / "audio" / "real")
    return types.SimpleNamespace(root=root, virtual=virtual, real=real, data_dirs=(virtual, real))


@pytest.fixture(scope="session")
def tiny_records(demo_corpus, tmp_path_factory):
    """The records of :func:`demo_corpus` under the tiny configuration (their folder)."""
    from common_definitions import Config
    from data_loader import SongDataLoader

    records = str(tmp_path_factory.mktemp("tiny_records"))
    config = Config(**TINY, data_dirs=demo_corpus.data_dirs, records_dir=records)
    SongDataLoader(config).make(log=lambda _: None)
    return records


def _mean_bits(model, batch) -> float:
    import tensorflow as tf

    return float(tf.reduce_mean(model.bits_per_dim(batch)))


@pytest.fixture(scope="session")
def tiny_run(tiny_records, tmp_path_factory):
    """A tiny run trained by ``pipeline.Trainer``: 2 epochs x 6 steps, checkpoints every 4 steps,
    on :func:`tiny_records`. Holds its ``config``, ``trainer``, ``result`` and ``messages``, the
    ActNorm initialisation ``batch`` and the mean bits/dim on it ``before`` and ``after``."""
    from pipeline import Trainer

    folder = tmp_path_factory.mktemp("tiny_run")
    config = tiny_config(tiny_records, folder, epochs=2, steps_per_epoch=6, checkpoint_every=4)
    messages = []
    trainer = Trainer(config, log=messages.append, progress=False)
    batch = trainer.init_batch()
    assert trainer.initialize(batch)
    before = _mean_bits(trainer.model, batch)
    result = trainer.fit()
    return types.SimpleNamespace(config=config, trainer=trainer, result=result, messages=messages,
                                 batch=batch, before=before, after=_mean_bits(trainer.model, batch))
