"""Every notebook in notebooks/ runs top to bottom without error (on its own tiny settings)."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

# What a notebook's printed output must mention (its walkthrough reached the parts that matter); a
# notebook not listed only has to run and print something.
EXPECTED = {"01_wind_tunnels.ipynb": ("kl_bits", "worst KL", "value manifold"),
            "02_continual.ipynb": ("acc_bits", "bwt_bits", "plasticity", "refused before compute"),
            "03_causal.ipynb": ("= 0.571", "= 0.700", "ours 1.0, pgmpy", "CausalInference 0.7", "Answer yes or no.",
                                "accuracy"),
            "04_einstein_test.ipynb": ("theory preference", "anomaly curve of mdl", "new law:")}
NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert text.strip(), "a walkthrough that prints nothing shows nothing"
    for expected in EXPECTED.get(path.name, ()):
        assert expected in text, (path.name, expected)
