"""Executes colabs/quickstart.ipynb top to bottom in smoke mode; checks both notebooks' form.

Smoke mode (WAVLEJEPA_NOTEBOOK_SMOKE=1) trains the tiny model for 2 steps and installs nothing;
the TPU notebook needs a TPU and a bucket, so it is only validated, never run.
"""

import os

import nbformat
import pytest
import test_train_runner as runner
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLABS = os.path.join(REPO, "colabs")


def _outputs(notebook, output_type):
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
            if o.output_type == output_type]  # fmt: skip


def test_quickstart_runs_in_smoke_mode(tmp_path, monkeypatch):
    notebook = nbformat.read(os.path.join(COLABS, "quickstart.ipynb"), as_version=4)
    monkeypatch.setenv("WAVLEJEPA_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # The sample's TFDS build.
    monkeypatch.setenv("XLA_FLAGS", runner.xla_flags(1))  # One CPU device, as on Colab.
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": REPO}}
    )
    client.execute()  # Raises CellExecutionError, naming the cell, on any error.

    text = "".join(o.get("text", "") for o in _outputs(notebook, "stream"))
    assert "Trained 2 steps" in text
    # 3_theo_0.wav: 1,931 samples at 8 kHz -> 3,862 at 16 kHz -> 23 frames of the tiny model.
    assert "frames (23, 64)" in text
    for name in ("WavLeJEPA (trained)", "random init", "log-mel"):
        assert name in text
    images = [o for o in _outputs(notebook, "display_data") if "image/png" in o.data]
    assert len(images) == 2  # Training curves and the embedding PCA.
    assert os.path.exists(tmp_path / "cache" / "wavlejepa" / "tensorflow_datasets")


@pytest.mark.parametrize("name", ["quickstart", "tpu_training"])
def test_notebooks_are_valid_and_saved_without_outputs(name):
    notebook = nbformat.read(os.path.join(COLABS, f"{name}.ipynb"), as_version=4)
    nbformat.validate(notebook)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    tags = [cell.metadata.get("tags", []) for cell in notebook.cells]
    assert ["parameters"] in tags or name == "tpu_training"


def test_tpu_notebook_trains_tpu_v4_on_gcs_with_tensorboard():
    notebook = nbformat.read(os.path.join(COLABS, "tpu_training.ipynb"), as_version=4)
    source = "\n".join(cell.source for cell in notebook.cells)
    assert "--config=configs/tpu_v4.py" in source
    assert 'BUCKET = "gs://' in source
    assert "%tensorboard --logdir {WORKDIR}" in source
    assert "--workdir={WORKDIR}" in source  # The same workdir every session: it resumes.
