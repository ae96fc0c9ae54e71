"""The explorer inside Jupyter: a real notebook, executed by a real kernel (nbclient), shows
the offline explorer as one self-contained HTML output that loads nothing from a network."""

import re

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # starts a kernel (a few seconds)


def test_explore_shows_the_explorer_inline_in_a_notebook(tmp_path):
    cells = [
        "import mechgrok\n"
        "path = mechgrok.record(modulus=23, width=64, train_frac=0.5, steps=300, every=20,\n"
        "                       out='run.h5')\n"
        "ds = mechgrok.open_trajectory(path)",
        "ds.mechgrok.explore()",
        "mechgrok.analyze(path).mechgrok.explore()",  # from the analysis as well
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    for cell in notebook.cells[1:]:
        (output,) = [o for o in cell.outputs if o.output_type == "execute_result"]
        shown = output["data"]["text/html"]
        assert shown.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in shown
        page = (
            shown.replace("&quot;", '"')
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
        )
        assert 'id="mg-data"' in page and "mechgrokExplorer" in page and "Plotly" in page
        markup = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)  # plotly.js names URLs
        assert not re.search(r'(src|href)="https?://', markup)  # offline: no element fetches
