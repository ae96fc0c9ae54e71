import hashlib
import re
from html.parser import HTMLParser

import pytest

import mechgrok
from conftest import GROKKING, assert_one_line_error, run_cli
from mechgrok.config import RunConfig


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.external, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        for key in ("src", "href"):
            value = attrs.get(key)
            if value and not value.startswith("data:") and not value.startswith("#"):
                self.external.append(value)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    clean = mechgrok.record(RunConfig(**GROKKING, steps=1200, stop_val_acc=0.99), out=folder / "clean.h5")
    noisy = mechgrok.record(RunConfig(**GROKKING, steps=600, noise=0.05, seed=1, stop_val_acc=0.99), out=folder / "noisy.h5")
    return folder, clean, noisy


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_single_run_report_is_self_contained_and_matches_the_analysis(runs, tmp_path):
    folder, clean, _ = runs
    before = _digest(clean)
    out = tmp_path / "r.html"
    proc = run_cli("report", str(clean), "--html", "--out", str(out), "--png-dir", str(tmp_path / "png"), check=True)
    assert "wrote" in proc.stderr
    text = out.read_text()
    parser = _Collector()
    parser.feed(text)
    assert parser.external == []  # nothing fetched: no scripts, stylesheets or remote images
    assert len(parser.images) == 5 and all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["gallery_W_a.png", "gallery_W_b.png", "periodicity.png",
                                                                   "phase_scatter.png", "timeline.png"]
    head = mechgrok.analyze(clean).mechgrok.headline()
    for key, digits in (("ideal_acc_final", 3), ("ideal_acc_shuffled_final", 3), ("r_structured_final", 4), ("val_acc_final", 4)):
        assert f"{head[key]:.{digits}f}" in text, key
    assert f"{head['grok_step']:,}" in text and f"{head['saturation_step']:,}" in text
    assert _digest(clean) == before


def test_sweep_report_has_the_table_and_paper_values(runs, tmp_path):
    folder, clean, noisy = runs
    out = tmp_path / "sweep.html"
    mechgrok.report([clean, noisy], out=out)
    text = out.read_text()
    assert "Table 2" in text and text.count('class="paper"') >= 2
    assert "0.9970" in text  # the paper's final Sq->Cos at alpha = 0.05
    assert "0.9991" in text  # ... and its clean model's final accuracy
    assert len(re.findall(r"data:image/png;base64,", text)) >= 3


def test_report_refuses_existing_output_and_bad_inputs(runs, tmp_path):
    folder, clean, _ = runs
    out = tmp_path / "exists.html"
    out.write_text("keep me")
    assert_one_line_error(run_cli("report", str(clean), "--html", "--out", str(out)), "exists", "not a mechgrok report")
    assert_one_line_error(run_cli("report", str(clean), "--html", "--out", str(out), "--force"), "not a mechgrok report")
    assert out.read_text() == "keep me"
    made = tmp_path / "made.html"  # a page mechgrok made (recognised by its generator tag) needs --force
    made.write_text('<!DOCTYPE html><html><head><meta name="generator" content="mechgrok 0.1.0"></head></html>')
    assert_one_line_error(run_cli("report", str(clean), "--html", "--out", str(made)), "exists", "--force")
    bad = tmp_path / "bad.h5"
    bad.write_text("nope")
    assert_one_line_error(run_cli("report", str(bad), "--html", "--out", str(tmp_path / "x.html")), "not an HDF5 file")
    assert_one_line_error(run_cli("report", str(tmp_path / "missing.h5"), "--html"), "no such file")
    assert not (tmp_path / "x.html").exists()
