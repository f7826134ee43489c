"""The report page: one self-contained HTML file, figures embedded as data URIs."""

from __future__ import annotations

import base64
import html
import math
import time
from typing import Any

from .compute import Compute, compute_summary
from .data import RunData
from ..stats import format_comparison, format_summary
from .figures import (STATUS_ORDER, fig_compute, fig_importance, fig_learning_curves, fig_parallel,
                      fig_seeds, fig_slice, metric_label, status_counts)
from .study import metric_at, param_importances

CSS = """
body { font-family: -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; margin: 0.4em 0; }
.note { background: #fff8e1; border-left: 4px solid #f2b01e; padding: 0.5em 0.8em; margin: 0.6em 0; }
.meta td { text-align: left; border: none; padding: 0.1em 0.8em 0.1em 0; }
.muted { color: #666; font-size: 0.9em; } code { background: #f5f5f5; padding: 0 0.2em; }
.s-completed { color: #1a9641; } .s-stopped_early { color: #b35f00; }
.s-errored, .s-diverged { color: #c62828; } .s-running { color: #4e79a7; }
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return _e(fmt(v))


def _table(headers: list[str], rows: list[list[str]], left: set[int] | None = None) -> str:
    left = left or set()
    head = "".join(f"<th{' class=l' if i in left else ''}>{h}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td{' class=l' if i in left else ''}>{c}</td>"
                                     for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes, alt: str, fname: str, caption: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = f"{_e(fname)}{': ' + _e(caption) if caption else ''}"
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}" title="{_e(fname)}">'
            f'<figcaption class="muted">{cap}</figcaption></figure>')


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _hours(h: float) -> str:
    if h != h:
        return "-"
    return f"{h:.3g} h" if h >= 0.1 else f"{h:.2g} h ({h * 60:.3g} min)"


def _num(v: Any) -> str:
    return f"{float(v):.4f}" if v is not None and v == v else "-"


def _status(s: Any) -> str:
    return f'<span class="s-{_e(s)}">{_e(s)}</span>'


def _score_head(data: RunData) -> str:
    return f'<span title="{_e(data.ranking.describe())}">score</span>'


def _score_caption(data: RunData) -> str:
    return f'<p class="muted">score: {_e(data.ranking.describe())}.</p>'


def _top_k_section(data: RunData, finalists: bool = False) -> str:
    t = data.trials
    ranked = data.ranked().head(data.top_k)
    if not len(ranked):
        return _note("No trial finished: there is no best configuration and nothing was exported.")
    params = [p for p in data.params if p in t]
    rows = []
    for rank, (_, r) in enumerate(ranked.iterrows(), start=1):
        path = data.run_dir / "best" / f"rank{rank}.yaml"
        link = "not exported"
        if finalists:
            link = "see the finalists above"
        elif path.exists() and not data.in_progress:
            try:
                same = f"# trial {r['trial_id']} " in path.read_text(errors="replace")[:2000]
            except OSError:
                same = False
            link = (f'<a href="../best/rank{rank}.yaml">best/rank{rank}.yaml</a>'
                    + ("" if same else " <span class=muted>(exported from an earlier ranking)</span>"))
        rows.append([str(rank), _e(r["trial_id"]), _status(r["status"]), str(int(r["epochs"])),
                     f"<b>{_num(r['score'])}</b>", _num(r["best_val_acc"]), _num(r["last_val_acc"]),
                     *(_cell(r[p]) for p in params), link])
    out = _table(["rank", "trial", "status", "epochs", _score_head(data), "best val acc",
                  "last val acc", *map(_e, params), "config for the full runs"], rows,
                 left={1, 2, len(params) + 7})
    out += _score_caption(data)
    out += ('<p class="muted">The ranking the export and MLflow use: only finished trials; trials that '
            'trained more epochs first (a trial ASHA stopped was compared only at its rung), then by '
            'score. Run a config with <code>tfkd-search train --config best/rank1.yaml --seeds 3</code>.'
            '</p>')
    if not (data.run_dir / "best").exists() and not data.in_progress:
        out += _note(f"No exported configs in best/: run 'tfkd-search export {data.run_dir}'.")
    return out


def _compute_section(c: Compute) -> str:
    full = c.epochs_full
    rows = [["trials", str(c.trials), str(c.planned)],
            ["trial-epochs", str(c.epochs_used), str(full) if full else "-"],
            [f"{c.unit} ({c.share:g} {c.unit.split('-')[0]} per trial)", _hours(c.hours_used),
             _hours(c.hours_full)]]
    out = _table(["", "this search" + (" so far" if c.in_progress else ""), c.full_label], rows,
                 left={0})
    known = c.seconds_per_epoch == c.seconds_per_epoch
    per = c.unit.split("-")[0]
    out += (f'<p class="muted">Spent: the sum over trials of wall-clock seconds x {c.share:g} {per} '
            f'per trial / 3600 (trial wall time {c.wall_seconds:.0f} s). Without early stopping: '
            f'{c.planned} trials x {c.budget or "?"} epochs'
            + (f', at this search\'s mean {c.seconds_per_epoch:.3g} s per trial-epoch (wall clock, '
               f'start-up included).' if known else '; no trial finished an epoch, so its time cannot '
                                                     'be estimated.')
            + (f' Early stopping saved {c.saved:.0%} of the trial-epochs.' if c.saved == c.saved else '')
            + '</p>')
    return out


def _trials_section(data: RunData) -> str:
    t = data.trials
    if not len(t):
        return _note("No trials recorded.")
    params = [p for p in data.params if p in t]
    order = {s: i for i, s in enumerate(STATUS_ORDER)}
    sign = -1.0 if data.ranking.mode == "max" else 1.0
    t = t.assign(_o=t["status"].map(lambda s: order.get(s, 99)),
                 _s=(t["score"] * sign).fillna(float("inf")))
    t = t.sort_values(["_o", "_s", "trial_index"], kind="mergesort")
    rows = [[_e(r["trial_id"]), _status(r["status"]), str(int(r["epochs"])), _num(r["score"]),
             _num(r["best_val_acc"]), _num(r["last_val_acc"]),
             f"{r['wall_seconds']:.1f}" if r["wall_seconds"] == r["wall_seconds"] else "-",
             *(_cell(r[p]) for p in params),
             _e(r["error"]) if isinstance(r["error"], str) and r["error"] else ""]
            for _, r in t.iterrows()]
    return _table(["trial", "status", "epochs", _score_head(data), "best val acc", "last val acc",
                   "wall s", *map(_e, params), "error"], rows, left={0, 1, len(params) + 7}) \
        + _score_caption(data)


def _summary(data: RunData) -> str:
    t = data.trials
    counts = status_counts(t)
    best = data.best()
    sched, searcher = data.scheduler, data.searcher
    r = data.ranking
    meta = [("run folder", f"<code>{_e(data.run_dir.resolve())}</code>"),
            ("trials", _e(", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items()) or "none")),
            ("budget", f"{data.budget} epochs per trial" if data.budget else "unknown"),
            ("searcher", _e(searcher.get("kind", "?")) + (f" (seed {_e(searcher['seed'])})"
                                                          if "seed" in searcher else "")),
            ("scheduler", _e(sched.get("kind", "?")) + (
                f", grace period {_e(sched.get('grace_period', 1))}, reduction factor "
                f"{_e(fmt(sched.get('reduction_factor', 3)))}"
                if sched.get("kind", "asha") == "asha" and sched else "")),
            ("ranking", _e(f"by {r.metric} ({metric_label(r.metric)}, mode {r.mode}"
                           f"{f', window {r.window}' if r.window > 1 else ''}): {r.describe()}")),
            ("parameters", _e(", ".join(f"{p} ({spec.describe()})" for p, spec in data.params.items())
                              or "none recorded"))]
    if best is not None:
        vals = ", ".join(f"{p}={fmt(best[p])}" for p in data.params if p in t)
        meta.insert(1, ("best trial", f"<b>{_e(best['trial_id'])}</b>: score "
                                      f"<b>{float(best['score']):.4f}</b>, best val acc "
                                      f"{_num(best['best_val_acc'])} ({_e(best['status'])}, "
                                      f"{int(best['epochs'])} epochs); {_e(vals)}"))
    uri = data.state.get("mlflow_uri")
    if uri:
        web = str(uri).startswith(("http://", "https://"))
        where = f'<a href="{_e(uri)}">{_e(uri)}</a>' if web else f"<code>{_e(uri)}</code>"
        browse = "" if web else f"; browse with <code>mlflow ui --backend-store-uri {_e(uri)}</code>"
        meta.append(("MLflow", f"{where}, experiment {_e(data.name)}, parent run "
                               f"<code>{_e(data.state.get('parent_run_id', '?'))}</code> (the figures "
                               f"are its artifacts under report/){browse}"))
    head = "<table class=meta>" + "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in meta) \
        + "</table>"
    head += "".join(_note(n) for n in data.notes)
    errored = t[t["status"] == "errored"] if len(t) else t
    if len(t) and len(errored) == len(t):
        head += _note(f"Every trial failed ({len(t)} errored), so there are no curves or best values; "
                      f"the errors are listed under 'All trials'.")
    return head


def _verdict_words(r: Any, label: str, unit: str) -> str:
    """One finalist's verdict as a sentence."""
    h = r.headline()
    base = r.against.upper() if r.against else ""
    mean = format_summary(r.summary, 100 if unit == "points" else 1)
    if h is None:
        return f"{label}: {mean}."
    if h.low is None:
        return (f"{label}: {mean}; {h.diff * (100 if unit == 'points' else 1):+.2f} {unit} against "
                f"{base}, the stronger baseline, with no interval ({h.note}): no verdict can be given.")
    scale = 100 if unit == "points" else 1
    what = {"better": f"better than {base}", "worse": f"worse than {base}"}.get(
        h.verdict, f"not detectably different from {base}")
    return (f"{label}: {mean}; {h.diff * scale:+.2f} {unit} against {base}, the stronger baseline "
            f"(95% interval {h.low * scale:+.2f} to {h.high * scale:+.2f}, {h.note}): <b>{what}</b>.")


def _standings_block(rows: list[Any], metric: str, labels: dict[str, str], figure: Any,
                     fname: str, intro: str) -> str:
    scale = 100 if metric.endswith("acc") else 1
    unit = "points" if scale == 100 else metric
    bases = [r.name for r in rows if r.role == "baseline"]
    body = f"<p>{intro}</p>"
    png = fig_seeds(rows, metric, labels)
    if png is not None:
        body += figure(fname, png, f"{metric} per seed of every finalist and baseline")
    table_rows = []
    for r in rows:
        cells = [_e(labels.get(r.name, r.name)), _e(r.role), _e(format_summary(r.summary, scale))]
        for b in bases:
            c = r.versus.get(b)
            cells.append("-" if c is None else _e(format_comparison(c, scale)))
        table_rows.append(cells)
    body += _table(["config", "role", f"{metric} mean ± std (n)", *(f"vs {b.upper()}" for b in bases)],
                   table_rows, left={0, 1, *range(3, 3 + len(bases))})
    words = [_verdict_words(r, _e(labels.get(r.name, r.name)), unit) for r in rows
             if r.role == "finalist"]
    body += "".join(f"<p>{w}</p>" for w in words)
    return body


def _answer_section(data: RunData, figure: Any) -> str | None:
    """The answer with its confidence: the finalists stage (search budget, fresh seeds) and, once
    `tfkd-search final` ran, the final runs (full schedule); None for a search with neither."""
    from ..final import final_standings, read_results
    from ..finalists import row_labels
    from ..runfolder import RunFolder

    out = ""
    folder = RunFolder(data.run_dir)
    try:
        rows = folder.standings()
    except Exception as exc:  # noqa: BLE001 - the rest of the report still stands
        return _note(f"The finalists' table could not be read: {exc}")
    if rows:
        plan = data.state.get("finalists_plan") or {}
        labels = row_labels(plan)
        out += "<h3>Finalists at the search budget</h3>" + _standings_block(
            rows, data.metric, labels, figure, "finalists.png",
            f"The best configs of the search and the baselines CE and LSR, trained again for "
            f"{data.budget} epochs on the fresh seeds {plan.get('seeds')} (the same seeds for all, so "
            f"every difference is paired); ranked by their mean, which decides best/rank1.yaml.")
    try:
        table = read_results(data.run_dir)
    except Exception as exc:  # noqa: BLE001
        return out + _note(f"final/results.parquet could not be read: {exc}")
    if table is not None and len(table):
        rows, measure = final_standings(table)
        seeds = sorted({int(s) for s in table["seed"]})
        out += "<h3>Final runs (full schedule)</h3>" + _standings_block(
            rows, measure, {}, figure, "final.png",
            f"<code>tfkd-search final</code>: the exported configs and baselines on seeds {seeds} at "
            f"the full schedule, judged on {_e(measure)}.")
    elif rows:
        out += (f'<p class="muted">Next: <code>tfkd-search final {_e(data.run_dir)}</code> trains the '
                f"exported configs and baselines on the same seeds at the full schedule and adds them "
                f"here.</p>")
    return out or None


def build_report(data: RunData) -> tuple[str, dict[str, bytes]]:
    """The HTML page and the PNG figures (file name -> bytes)."""
    pngs: dict[str, bytes] = {}

    def figure(fname: str, png: bytes, alt: str, caption: str = "") -> str:
        pngs[fname] = png
        return _img(png, alt, fname, caption)

    sections = []
    answer = _answer_section(data, figure)
    if answer:
        sections.append("<h2>The answer: better than CE and label smoothing?</h2>" + answer)
    sections.append("<h2>Best configurations</h2>" + _top_k_section(data, bool(answer)))
    c = compute_summary(data)
    body = _compute_section(c)
    png = fig_compute(c)
    if png is not None:
        body += figure("compute.png", png, "compute spent against a full grid")
    sections.append("<h2>Compute</h2>" + body)

    png = fig_learning_curves(data)
    body = (figure("learning_curves.png", png, f"{data.metric} per epoch of every trial",
                   f"{metric_label(data.metric)} per epoch; the black line is the best trial by the "
                   f"ranking")
            if png is not None else _note("No trial finished an epoch, so there are no learning curves."))
    sections.append("<h2>Learning curves</h2>" + body)

    body = ""
    n_ok = len(data.finished())
    png = fig_parallel(data)
    score_note = (f"score = {data.ranking.describe().split(';')[0]}; a trial stopped early scores with "
                  f"the epochs it trained")
    if png is not None:
        body += figure("parallel_coordinates.png", png, "parallel coordinates of the searched values",
                       f"Optuna's parallel-coordinate plot of the {n_ok} finished trials; {score_note}")
        if n_ok == 1:
            body += _note("Only one trial finished: the plots show a single point per parameter.")
    png = fig_slice(data)
    if png is not None:
        body += figure("param_scatter.png", png, "each searched parameter against the score",
                       f"Optuna's slice plot; {score_note}")
    if not body:
        body = _note("No finished trial (completed or stopped early) with recorded parameter values: "
                     "nothing to relate the parameters to.")
    sections.append("<h2>Parameters and score</h2>" + body)

    imp = param_importances(data)
    body = ""
    png = fig_importance(imp, data)
    if png is not None and imp.values is not None:
        body += figure("importance.png", png, "parameter importances",
                       f"{imp.evaluator} importances at one fidelity: "
                       f"{metric_at(data, imp.epoch)}, {imp.trials} trials")
        body += _table(["parameter", "importance"],
                       [[_e(k), f"{v:.3f}"] for k, v in imp.values.items()], left={0})
        body += f'<p class="muted">{_e(imp.note)}</p>'
    else:
        body += _note(imp.note)
    if imp.fixed:
        body += _note("Left out, one value only among the trials compared: " + ", ".join(imp.fixed)
                      + ".")
    sections.append("<h2>Which parameters mattered</h2>" + body)

    sections.append("<h2>All trials</h2>" + _trials_section(data))
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    page = (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>tfkd-search report: {_e(data.name)}</title><style>{CSS}</style></head><body>"
            f"<h1>tfkd-search report: {_e(data.name)}</h1>"
            f"<p class=muted>written {when} from {_e(data.source)}; figures also in this folder as "
            f"PNG files</p>{_summary(data)}{''.join(sections)}</body></html>\n")
    return page, pngs
