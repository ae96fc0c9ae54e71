"""Reading, analysis and reporting must not load torch (every dask worker and every
`mechgrok analyze`/`report` would pay ~2 s for it)."""

import subprocess
import sys

CODE = """
import sys
from click.testing import CliRunner
from mechgrok.cli import main
import mechgrok.store.reader, mechgrok.analysis.pipeline
for command in ("analyze", "report"):  # each command's own imports run before it meets the missing file
    result = CliRunner().invoke(main, [command, "missing.h5", "--html"][:3 if command == "report" else 2])
    assert result.exit_code == 1 and "missing.h5" in result.output, result.output
print(sorted(m for m in ("torch", "mechgrok.recording.train", "mechgrok.recording.runs", "mechgrok.sweep.grid") if m in sys.modules))
"""


def test_reading_analysis_and_reporting_do_not_import_torch(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert proc.stdout.strip().splitlines()[-1] == "[]"
