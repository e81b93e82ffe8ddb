"""``mmalign report RUN_DIR``: one self-contained HTML file of a run.

Curves, before / after sample grids and any other PNG in the run dir are embedded as data
URIs; a PNG with a GIF of the same name beside it (a video model's samples: the GIF an
animation, the PNG a strip of its frames) is shown as the animation, with the strip in its
place if the animation cannot play. The metrics table comes from ``summary.json`` (the demo)
and the last logged metrics; the resolved recipe is printed as it was saved. Nothing is fetched when the page opens.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from mmalign.errors import DataError

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.5rem}figcaption{font-size:.85rem;color:#555}
img{max-width:100%;image-rendering:pixelated;border:1px solid #eee}
pre{background:#f7f7f7;padding:1rem;overflow:auto;font-size:.8rem}
.up{color:#0a7d28}.down{color:#b00020}
"""

# Records on <body> how many images decoded, so a headless browser's DOM dump can tell that
# the page renders with its images.
CHECK = ("<script>window.addEventListener('load',function(){var n=0;"
         "document.querySelectorAll('img').forEach(function(i){if(i.naturalWidth>0)n++;});"
         "document.body.setAttribute('data-images-loaded',n);});</script>")


def _img(path: Path, run_dir: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    caption = html.escape(str(path.relative_to(run_dir)))
    animation = path.with_suffix(".gif")
    if animation.is_file():  # video samples: play the GIF, fall back to the PNG frame strip
        gif = base64.b64encode(animation.read_bytes()).decode()
        fallback = f"this.onerror=null;this.src='data:image/png;base64,{data}'"
        return (f'<figure><img alt="{caption}" src="data:image/gif;base64,{gif}" onerror="{fallback}">'
                f"<figcaption>{html.escape(str(animation.relative_to(run_dir)))} (frame strip: {caption})"
                "</figcaption></figure>")
    return (f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _summary_table(summary: dict) -> str:
    rows = []
    for t in summary.get("tasks", []):
        better = (t["after"] > t["before"]) == bool(t["higher_is_better"]) and t["after"] != t["before"]
        cls = "up" if better else "down"
        rows.append(f"<tr><td>{html.escape(t['task'])}</td><td>{html.escape(t['metric'])}</td>"
                    f"<td>{t['before']:.4g}</td><td class='{cls}'>{t['after']:.4g}</td>"
                    f"<td>{'higher' if t['higher_is_better'] else 'lower'}</td></tr>")
    head = "<tr><th>task</th><th>metric</th><th>before</th><th>after</th><th>better</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _last_metrics(run_dir: Path) -> str:
    from mmalign.plot import read_metrics

    try:
        rows = read_metrics(run_dir)
    except DataError:
        return ""
    last: dict = {}
    for row in rows:
        last.update({k: v for k, v in row.items() if k != "split"})
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>"
                   for k, v in sorted(last.items()) if isinstance(v, (int, float)))
    return f"<h2>Last logged metrics</h2><table><tr><th>metric</th><th>value</th></tr>{body}</table>"


def _figures(run_dir: Path) -> list[tuple[str, list[Path]]]:
    """Curves of every training run under ``run_dir`` (drawn if missing), before / after grids
    and validation samples; not the data images a demo keeps beside them."""
    from mmalign.plot import plot

    groups = []
    for metrics in sorted(run_dir.rglob("metrics.jsonl")):
        if not (metrics.parent / "curves.png").is_file():
            plot(metrics.parent)
        groups.append((f"Training curves: {metrics.parent.relative_to(run_dir)}",
                       [metrics.parent / "curves.png"]))
    for folder in sorted({p.parent for p in run_dir.rglob("before.png")} |
                         {p.parent for p in run_dir.rglob("after.png")}):
        found = [folder / n for n in ("before.png", "after.png") if (folder / n).is_file()]
        groups.append((f"Before and after: {folder.relative_to(run_dir)}", found))
    for folder in sorted({p.parent for p in run_dir.rglob("samples/*.png")}):
        groups.append((f"Validation samples: {folder.relative_to(run_dir)}", sorted(folder.glob("*.png"))))
    return groups


def report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError("no such run dir", file=str(run_dir))
    parts = [f"<h1>mmalign run: {html.escape(run_dir.name)}</h1>"]
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        parts.append("<h2>Before and after</h2>" + _summary_table(json.loads(summary_path.read_text())))
    for group, pngs in _figures(run_dir):
        parts.append(f"<h2>{html.escape(group)}</h2>" + "".join(_img(p, run_dir) for p in pngs))
    parts.append(_last_metrics(run_dir))
    configs = sorted(run_dir.rglob("config.yaml"))
    for cfg in configs:
        parts.append(f"<h2>Recipe: {html.escape(str(cfg.relative_to(run_dir)))}</h2>"
                     f"<pre>{html.escape(cfg.read_text())}</pre>")
    if len(parts) == 1:
        raise DataError("holds nothing to report (no summary.json, metrics.jsonl, PNG or config.yaml)",
                        file=str(run_dir))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>mmalign {html.escape(run_dir.name)}"
            f"</title><style>{STYLE}</style></head><body>{''.join(parts)}{CHECK}</body></html>")
    out = Path(out) if out else run_dir / "report.html"
    out.write_text(page)
    return out
