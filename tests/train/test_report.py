"""``mmalign report``: one self-contained HTML file that renders with its images."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from mmalign.report import report
from mmalign.train.run import train


@pytest.fixture
def run_dir(make_recipe):
    session = train(make_recipe(train={"max_steps": 3}))
    # a summary as `mmalign demo` writes it, to see the table rendered
    (session.run_dir / "summary.json").write_text(json.dumps({"tasks": [
        {"task": "t", "metric": "rate", "before": 0.25, "after": 0.5, "higher_is_better": True}]}))
    return session.run_dir


def test_report_is_self_contained(run_dir):
    page = report(run_dir).read_text()
    assert "src=\"data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page  # nothing fetched on open
    assert "<td>rate</td><td>0.25</td><td class='up'>0.5</td>" in page
    assert "objective:" in page  # the resolved recipe
    assert (run_dir / "curves.png").is_file()


def test_report_renders_with_its_images_in_chromium(run_dir):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (the README's test command installs Debian's "
                    "chromium when run as root)")
    page = report(run_dir)
    images = page.read_text().count("<img ")
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={run_dir / 'chromium-profile'}", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert images >= 1
    assert f'data-images-loaded="{images}"' in proc.stdout


def test_video_samples_show_as_animations_with_the_frame_strip_as_fallback(tmp_path):
    """A PNG with a GIF of the same name beside it (a video plugin's samples) is shown as the
    GIF, the PNG strip loaded in its place only if the animation cannot play; a PNG alone
    stays a PNG."""
    import base64

    import numpy as np
    from PIL import Image

    samples = tmp_path / "samples"
    samples.mkdir()
    frames = [Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save(samples / "before.gif", save_all=True, append_images=frames[1:], duration=125)
    Image.fromarray(np.zeros((8, 24, 3), np.uint8)).save(samples / "before.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(samples / "after.png")
    page = report(tmp_path).read_text()
    gif = base64.b64encode((samples / "before.gif").read_bytes()).decode()
    strip = base64.b64encode((samples / "before.png").read_bytes()).decode()
    assert f'src="data:image/gif;base64,{gif}" onerror="this.onerror=null;this.src=\'data:image/png;base64,{strip}\'"' in page
    assert page.count('alt="samples/before.png" src="data:image/gif;') == page.count('alt="samples/before.png"') >= 1
    assert page.count('alt="samples/after.png" src="data:image/png;') == page.count('alt="samples/after.png"') >= 1
    assert "samples/before.gif (frame strip: samples/before.png)" in page
