import hashlib
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import xarray as xr
from conftest import GROKKING, assert_one_line_error, run_cli

import mechgrok
from mechgrok.config import RunConfig
from mechgrok.errors import MechgrokWarning

pytestmark = pytest.mark.xdist_group(
    "report"
)  # its tests share expensive fixtures: one worker makes them


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
        if tag in ("link", "iframe") or (tag == "script" and "src" in attrs):  # inline scripts only
            self.external.append(tag)


@pytest.fixture(scope="session")  # made once per worker, kept while other modules run
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    clean = mechgrok.record(
        RunConfig(**GROKKING, steps=1200, stop_val_acc=0.99), out=folder / "clean.h5"
    )
    noisy = mechgrok.record(
        RunConfig(**GROKKING, steps=600, noise=0.05, seed=1, stop_val_acc=0.99),
        out=folder / "noisy.h5",
    )
    return folder, clean, noisy


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")  # made once per worker, kept while other modules run
def single_report(runs, tmp_path_factory):
    """The clean run's report, made once through the CLI: (page, PNG folder, CLI result, digest before)."""
    folder, clean, _ = runs
    before = _digest(clean)
    out_dir = tmp_path_factory.mktemp("single")
    proc = run_cli(
        "report",
        str(clean),
        "--html",
        "--out",
        str(out_dir / "r.html"),
        "--png-dir",
        str(out_dir / "png"),
        check=True,
    )
    return out_dir / "r.html", out_dir / "png", proc, before


def test_single_run_report_is_self_contained_and_matches_the_analysis(runs, single_report):
    folder, clean, _ = runs
    out, png_dir, proc, before = single_report
    assert "wrote" in proc.stderr
    text = out.read_text()
    parser = _Collector()
    parser.feed(text)
    assert parser.external == []  # nothing fetched: no scripts, stylesheets or remote images
    assert len(parser.images) == 6 and all(
        src.startswith("data:image/png;base64,") for src in parser.images
    )
    assert sorted(p.name for p in png_dir.iterdir()) == [
        "activation_tables.png",
        "gallery_W_a.png",
        "gallery_W_b.png",
        "periodicity.png",
        "phase_scatter.png",
        "timeline.png",
    ]
    head = mechgrok.analyze(clean).mechgrok.headline()
    for key, digits in (
        ("ideal_acc_final", 3),
        ("ideal_acc_shuffled_final", 3),
        ("r_structured_final", 4),
        ("val_acc_final", 4),
    ):
        assert f"{head[key]:.{digits}f}" in text, key
    assert f"{head['grok_step']:,}" in text and f"{head['saturation_step']:,}" in text
    assert _digest(clean) == before


@pytest.fixture(scope="session")  # made once per worker, kept while other modules run
def sweep_report(runs, tmp_path_factory):
    folder, clean, noisy = runs
    return mechgrok.report([clean, noisy], out=tmp_path_factory.mktemp("sweep") / "sweep.html")


def test_sweep_report_has_the_table_and_paper_values(sweep_report):
    text = sweep_report.read_text()
    assert "Table 2" in text and text.count('class="paper"') >= 2
    assert "0.9970" in text  # the paper's final Sq->Cos at alpha = 0.05
    assert "0.9991" in text  # ... and its clean model's final accuracy
    assert len(re.findall(r"data:image/png;base64,", text)) >= 3
    assert (
        text.count("<figcaption>Timeline.") == 2 and "are in the explorer above" in text
    )  # each run: cards and timeline


def test_report_refuses_existing_output_and_bad_inputs(runs, tmp_path):
    folder, clean, _ = runs
    out = tmp_path / "exists.html"
    out.write_text("keep me")
    assert_one_line_error(
        run_cli("report", str(clean), "--html", "--out", str(out)),
        "exists",
        "not a mechgrok report",
    )
    assert_one_line_error(
        run_cli("report", str(clean), "--html", "--out", str(out), "--force"),
        "not a mechgrok report",
    )
    assert out.read_text() == "keep me"
    made = (
        tmp_path / "made.html"
    )  # a page mechgrok made (recognised by its generator tag) needs --force
    made.write_text(
        '<!DOCTYPE html><html><head><meta name="generator" content="mechgrok 0.1.0"></head></html>'
    )
    assert_one_line_error(
        run_cli("report", str(clean), "--html", "--out", str(made)), "exists", "--force"
    )
    bad = tmp_path / "bad.h5"
    bad.write_text("nope")
    assert_one_line_error(
        run_cli("report", str(bad), "--html", "--out", str(tmp_path / "x.html")), "not an HDF5 file"
    )
    assert_one_line_error(run_cli("report", str(tmp_path / "missing.h5"), "--html"), "no such file")
    assert not (tmp_path / "x.html").exists()


def _open_in_chromium(page_path, width=1300):
    """The page in headless Chromium (Debian's, driven by Playwright): (playwright, browser,
    page, console errors, requests that left the file)."""
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors, requests = [], []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "request",
        lambda request: (
            None if request.url.startswith(("file:", "data:")) else requests.append(request.url)
        ),
    )
    page.goto(page_path.as_uri(), wait_until="load")
    page.wait_for_function("window.mechgrokExplorer !== undefined", timeout=30_000)
    return playwright, browser, page, errors, requests


CHROMIUM = "/usr/bin/chromium"
ISOLATED_POINT = """(() => { const d = document.getElementById('mg-scatter').data[1]; let best = 0, widest = -1;
  for (let i = 0; i < d.x.length; i++) { let gap = Infinity;
    for (let j = 0; j < d.x.length; j++) if (j !== i) gap = Math.min(gap, Math.hypot(d.x[i] - d.x[j], d.y[i] - d.y[j]));
    if (gap > widest) { widest = gap; best = i; } }
  return best; })()"""


def test_the_explorer_scrubs_and_selects_in_a_real_browser(single_report):
    out = single_report[0]
    playwright, browser, page, errors, requests = _open_in_chromium(out)
    try:
        steps = page.evaluate("mechgrokExplorer.currentStep()")
        scatter_at_end = page.evaluate("document.getElementById('mg-scatter').data[1].x.slice()")
        reached = page.evaluate("mechgrokExplorer.setStep(30)")
        assert reached != steps and page.evaluate("mechgrokExplorer.currentStep()") == reached
        assert (
            page.evaluate("document.getElementById('mg-scatter').data[1].x") != scatter_at_end
        )  # redrawn at the new step
        assert page.evaluate("mechgrokExplorer.setStep(10 ** 9)") == steps  # clamped to the run
        assert page.evaluate("document.getElementById('mg-slider').value") == page.evaluate(
            "document.getElementById('mg-slider').max"
        )
        # clicking a point of the scatter selects its neuron (the point farthest from the others, so the click is unambiguous)
        index = page.evaluate(ISOLATED_POINT)
        expected = page.evaluate(
            f"document.getElementById('mg-scatter').data[1].customdata[{index}]"
        )
        page.evaluate(f"mechgrokExplorer.setNeuron({1 if expected == 0 else 0})")
        point = (
            page.locator("#mg-scatter .scatterlayer .trace").nth(1).locator("path.point").nth(index)
        )
        point.scroll_into_view_if_needed()
        box = point.bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_function(f"mechgrokExplorer.currentNeuron() === {expected}", timeout=5000)
        assert f"neuron {expected} at step" in page.inner_text("#mg-neuron-text")
        assert page.evaluate(
            "mechgrokExplorer.setNeuron(2)"
        ) == 2 and "neuron 2 at step" in page.inner_text("#mg-neuron-text")
        # the heatmap runs over steps with neuron ids; step 0 has a place on the log axes
        heat = page.evaluate("document.getElementById('mg-heatmap').data[0]")
        assert heat["y"][0].startswith("n") and min(heat["x"]) >= 1
        for width in (420, 1300):  # a phone and a desktop: no horizontal scroll
            other = browser.new_page(viewport={"width": width, "height": 800})
            other.goto(out.as_uri(), wait_until="load")
            other.wait_for_function("window.mechgrokExplorer !== undefined", timeout=30_000)
            scroll = other.evaluate("document.documentElement.scrollWidth")
            assert scroll <= width, f"{scroll} px wide at {width}"
            other.screenshot(path=str(out.parent / f"report_{width}.png"))
    finally:
        browser.close()
        playwright.stop()
    assert errors == [] and requests == []


def test_a_sweep_explorer_switches_runs(sweep_report):
    playwright, browser, page, errors, requests = _open_in_chromium(sweep_report)
    try:
        assert page.evaluate("mechgrokExplorer.runs()") == ["clean", "noisy"]
        page.select_option("#mg-run", "1")
        assert page.evaluate("mechgrokExplorer.currentRun()") == 1
        names = page.evaluate("document.getElementById('mg-timeline').data.map((t) => t.name)")
        assert "step shown" in names and any(n.startswith("saturation step") for n in names)
        assert (
            page.evaluate("mechgrokExplorer.currentStep()") <= 600
        )  # the noisy run is capped at 600 steps
        page.evaluate("mechgrokExplorer.setRun(0)")  # the API moves the selector too
        assert page.input_value("#mg-run") == "0"
    finally:
        browser.close()
        playwright.stop()
    assert errors == [] and requests == []


def test_a_run_given_twice_counts_once(runs, tmp_path):
    folder, clean, noisy = runs
    copy = tmp_path / "copy.h5"  # the same recording under another name (same run_id)
    copy.write_bytes(clean.read_bytes())
    linked = tmp_path / "linked.h5"
    os.symlink(noisy, linked)
    proc = run_cli(
        "report",
        *(str(clean), str(tmp_path / ".." / tmp_path.name / "copy.h5"), str(noisy), str(linked)),
        *("--html", "--out", str(tmp_path / "r.html")),
    )
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 2, proc.stderr  # the link (same file), then the copy (same run_id)
    assert "same recording as" in notes[1] and "counted once" in notes[1]
    page = (tmp_path / "r.html").read_text()
    assert "mechgrok report: 2 runs" in page
    with pytest.warns(MechgrokWarning, match="counted once"):
        mechgrok.report([clean, clean], out=tmp_path / "one.html")
    assert "mechgrok report: clean" in (tmp_path / "one.html").read_text()


def test_report_out_options_are_never_ignored(runs, tmp_path):
    folder, clean, _ = runs
    assert_one_line_error(
        run_cli("report", str(clean), "--out", str(tmp_path / "r.html")), "add --html"
    )
    proc = run_cli("report", str(clean), "--html", "--out", str(tmp_path) + "/")
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == [
        "clean.html"
    ]  # inside the folder, named by the run


def test_a_report_of_runs_in_a_read_only_folder_computes_their_analyses(
    runs, tmp_path, monkeypatch
):
    folder, clean, _ = runs
    archive = tmp_path / "archive"
    archive.mkdir()
    run = archive / "run.h5"
    run.write_bytes(clean.read_bytes())
    real_access = os.access
    # root ignores permission bits, so the read-only folder is the OS's answer, faked
    monkeypatch.setattr(
        "mechgrok.reporting.os.access",
        lambda p, mode: (
            False
            if mode == os.W_OK and archive in (Path(p), *Path(p).parents)
            else real_access(p, mode)
        ),
    )
    with pytest.warns(MechgrokWarning, match="read-only"):
        mechgrok.report([run], out=tmp_path / "r.html")
    assert (tmp_path / "r.html").exists() and sorted(p.name for p in archive.iterdir()) == [
        "run.h5"
    ]


@pytest.mark.parametrize("operation", ["sub", "div"])
def test_sub_and_div_reports_name_their_own_law(tmp_path, operation):
    path = mechgrok.record(
        RunConfig(modulus=13, width=32, train_frac=0.5, steps=200, every=20, operation=operation),
        out=tmp_path / f"{operation}.h5",
    )
    mechgrok.report([path], out=tmp_path / "r.html")
    from mechgrok.reporting.static import static_text

    # the explorer's code picks the law by the run's sign; its data and the page's words must
    page = (tmp_path / "r.html").read_text().replace(static_text("explorer.js"), "")
    analysis = xr.open_dataset(tmp_path / f"{operation}.analysis.h5", engine="h5netcdf")
    long_names = " ".join(str(v.attrs.get("long_name", "")) for v in analysis.variables.values())
    summary = run_cli("analyze", str(path)).stderr
    for text in (page, long_names, summary):
        for wrong in (
            "phi_a + phi_b",
            "&phi;_a + &phi;_b",
            "&phi;<sub>a</sub> + &phi;<sub>b</sub>",
            "phase_a + phase_b",
        ):
            assert wrong not in text, (wrong, text[text.find(wrong) - 200 : text.find(wrong) + 50])
    assert (
        "phi_a - phi_b" in summary
        and "&phi;_a - &phi;_b" in page
        and "phase_a - phase_b" in long_names
    )
