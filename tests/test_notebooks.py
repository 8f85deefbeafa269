"""The notebooks run end to end (nbclient) on a tiny model trained here, and are committed clean.

Both notebooks are executed as Jupyter runs them: in ``notebooks/`` with a fresh kernel, their
``parameters`` cell followed by an injected cell (as papermill does) that points every path at
temporary folders, so the test never writes into the repository.
"""

import hashlib
import json
import os
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
NAMES = ("run.ipynb", "experiment.ipynb")
SPECTRUM = os.path.join(ROOT, "design", "the_spectrum.png")

# The tiny configuration of tests/test_pipeline.py: 16 frames x 32 bins patches, K=2, L=2.
TINY = dict(n_fft=62, hop_length=16, window_size=16, k_glow=2, l_glow=2, hidden_channels=8,
            batch_size=8, log_every=3, griffin_lim_iters=2, warmup_steps=2, learning_rate=2e-3,
            epochs=2, steps_per_epoch=6, checkpoint_every=6)


def read(name):
    import nbformat

    return nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)


def inject_parameters(nb, values):
    """Insert a cell that sets ``values`` right after the cell tagged ``parameters``."""
    from nbformat.v4 import new_code_cell

    index = next(i for i, cell in enumerate(nb.cells)
                 if "parameters" in cell.metadata.get("tags", []))
    cell = new_code_cell("\n".join(f"{name} = {value!r}" for name, value in values.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)
    return nb


def execute(name, values):
    from nbclient import NotebookClient

    nb = inject_parameters(read(name), values)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": NOTEBOOKS}}).execute()
    return nb


def outputs(nb):
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def count_images(nb):
    return sum("image/png" in out.get("data", {}) for out in outputs(nb))


def count_players(nb):
    return sum("<audio" in out.get("data", {}).get("text/html", "") for out in outputs(nb))


def digest(path):
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


# ---------------------------------------------------------------------------------- committed form
@pytest.mark.parametrize("name", NAMES)
def test_notebooks_are_committed_without_outputs_and_with_a_parameters_cell(name):
    nb = read(name)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), \
        f"{name} holds outputs: strip them before committing"
    tagged = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0]
    # Every path parameter is relative to the repository (no machine-specific folders).
    assert "/tmp" not in tagged[0].source and "/home" not in tagged[0].source


# ---------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny demo corpus (2 songs x 3 s per singer) and a 12-step checkpoint trained on it."""
    from common_definitions import Config
    from pipeline import Trainer
    from utils.data.demo_data import make_demo_corpus

    root = tmp_path_factory.mktemp("notebooks")
    make_demo_corpus(root=str(root / "audio"), songs_per_singer=2, song_seconds=3.0)
    data_dirs = (str(root / "audio" / "virtual"), str(root / "audio" / "real"))
    config = Config(**TINY, data_dirs=data_dirs, records_dir=str(root / "records"),
                    checkpoint_dir=str(root / "ck"), logdir=str(root / "logs"),
                    output_dir=str(root / "out"))
    result = Trainer(config, log=lambda _: None, progress=False).fit()
    assert result.step == 12
    return types.SimpleNamespace(root=root, config=config, virtual=data_dirs[0], real=data_dirs[1])


def test_run_notebook(run):
    before = digest(SPECTRUM)
    out = run.root / "run_out"
    nb = execute("run.ipynb", {
        "checkpoint_dir": run.config.checkpoint_dir, "source_dir": run.virtual,
        "reference_dir": run.real, "records_dir": str(run.root / "nb_records"),
        "output_dir": str(out), "make_demo_data": False, "sweep_strengths": [0.0, 1.0],
        "batch_size": 64,
    })
    # Patches, z histogram, statistics, 3 methods, sweep envelope and spectrograms.
    assert count_images(nb) >= 8
    # Source, reconstruction, the other singer, 3 methods, 2 sweep strengths.
    assert count_players(nb) >= 8
    written = sorted(os.listdir(out))
    assert {"reference_stats.npz", "midpoint_1.wav", "shift_1.wav", "match_1.wav",
            "eq_1.wav", "match_0.wav"} <= set(written), written
    text = "".join(o.get("text", "") for o in outputs(nb))
    assert "decode(encode(song)) vs song: SNR" in text
    assert digest(SPECTRUM) == before  # nothing written into the repository


def test_experiment_notebook(run):
    before = digest(SPECTRUM)
    spectrum = run.root / "figures" / "the_spectrum.png"
    evaluation = run.root / "evaluation.json"
    nb = execute("experiment.ipynb", {
        "logdir": run.config.logdir, "checkpoint_dir": run.config.checkpoint_dir,
        "virtual_dir": run.virtual, "real_dir": run.real, "evaluation_json": str(evaluation),
        "heldout_dir": None, "make_demo_data": False, "eval_songs": 1,
        "eval_strengths": [0.0, 1.0], "spectrum_path": str(spectrum),
        "spectrum_seconds": None, "batch_size": 64,
    })
    # Training curves, evaluation chart, spectrum comparison, latent space.
    assert count_images(nb) >= 4
    assert count_players(nb) >= 3
    with open(spectrum, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    results = json.loads(evaluation.read_text())
    rows = {(row["method"], row["strength"]) for row in results["migration"]}
    # Every method this (unconditional) checkpoint supports: the latent moves and the baseline.
    assert rows == {(m, s) for m in ("midpoint", "shift", "match", "eq") for s in (0.0, 1.0)}
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs(nb))
    assert "P(real)" in html and "bits/dim" in html
    assert digest(SPECTRUM) == before
