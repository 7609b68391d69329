"""What a flow run leaves in the Prefect UI: a summary (Markdown) and a table of stages."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.core.catalog import INDEX_CARD, METRICS, PLOTS_DIR
from tasks.core.config import Params
from tasks.core.registry import get_stage
from tasks.evaluation.base_vs_tuned import markdown as base_vs_tuned_markdown
from tasks.evaluation.metrics import BASE_VS_TUNED, HEADLINE
from tasks.query.search import search_summary
from tasks.query.weights import BUCKETS

SUMMARY_KEY = "embedpipe-summary"
PLOTS_KEY = "embedpipe-plots"
STAGES_KEY = "embedpipe-stages"


REASON_CHARS = 60  # the stage table's reason column; the summary has every changed path
COUNTS_CHARS = 60  # its counts column; the summary and the manifests have every count


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def stage_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per stage, sized for a screen: ran or skipped, seconds (two decimals, not
    padded: the UI renders a cell that starts with spaces as code), the reason in short
    before the wide columns, a 12-character fingerprint, then the counts (clipped)."""
    return [{"stage": r["stage"], "status": "ran" if r["ran"] else "fresh",
             "seconds": f"{r['seconds']:.2f}" if r["ran"] else "",
             "reason": _clip(r["reason"], REASON_CHARS),
             "fingerprint": r["fingerprint"][:12],
             "counts": _clip(", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}"
                                       for k, v in r["rows"].items()), COUNTS_CHARS)}
            for r in rows]


def summary_markdown(root: Path, params: Params, summary: dict[str, Any]) -> str:
    """The run's Markdown report: stages, index card, metrics, overrides."""
    lines = ["# embedpipe run", "", f"Workspace `{root}`", "",
             "| stage | status | seconds | counts | fingerprint |", "|---|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['status']} | {r['seconds']} | {r['counts']} | "
              f"`{r['fingerprint']}` |" for r in stage_table(summary["stages"])]
    index_card = get_stage("index").out_dir(params, root) / INDEX_CARD.name
    if index_card.is_file():
        card = json.loads(index_card.read_text(encoding="utf-8"))
        search = (f"{card['search_param']}={card['search_value']}" if card["search_param"]
                  else "exact search")
        lines += ["", "## Index", "", f"{card['factory']} ({card['type']}), {card['n']} x "
                  f"{card['d']}, {search}, {card['size_bytes']:,} bytes"]
        lines += ["", search_summary(index_card.parent) or ""]
    metrics_path = get_stage("evaluate").out_dir(params, root) / METRICS.name
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {metrics[k]:.4f} |" for k in HEADLINE
                  if isinstance(metrics.get(k), float)]
        lines += [f"| quality gate | {'passed' if metrics['gate']['passed'] else 'FAILED'} |"]
        if metrics.get(BASE_VS_TUNED):
            lines += base_vs_tuned_markdown(metrics[BASE_VS_TUNED])
        lines += bucket_markdown(metrics.get("buckets", {}))
    ran = [r for r in summary["stages"] if r["ran"]]
    if ran:
        lines += ["", "## Why each stage ran (DVC)", ""]
        lines += [f"- **{r['stage']}**: {r.get('why', r['reason'])}" for r in ran]
    lines += ["", "## Overrides applied to params.yaml", "",
              "```json", json.dumps(summary["overrides"], indent=2), "```"]
    return "\n".join(lines)


def bucket_markdown(buckets: dict[str, dict[str, dict[str, dict[str, float]]]]
                    ) -> list[str]:
    """recall@10 per search mode and query style (question, keywords, identifier), one table
    per query set (the label-free probe, each BEIR set), the query count in the header."""
    out = []
    for qset, modes in buckets.items():
        first = next(iter(modes.values()), {})
        styles = [b for b in BUCKETS if b in first]
        if not styles:
            continue
        out += ["", f"recall@10 by query style: {qset} queries", "",
                "| mode | " + " | ".join(f"{b} ({first[b]['queries']})" for b in styles)
                + " |", "|---|" + "---|" * len(styles)]
        out += [f"| {mode} | " + " | ".join(f"{m[b]['recall_at_10']:.4f}" for b in styles)
                + " |" for mode, m in modes.items()]
    return out


def plots_markdown(plots_dir: Path) -> str | None:
    """The evaluation's PNG plots inlined as data URIs (the UI has no file access)."""
    pngs = sorted(plots_dir.glob("*.png")) if plots_dir.is_dir() else []
    if not pngs:
        return None
    parts = ["# embedpipe evaluation plots"]
    for png in pngs:
        data = base64.b64encode(png.read_bytes()).decode()
        parts += ["", f"## {png.stem}", "", f"![{png.stem}](data:image/png;base64,{data})"]
    return "\n".join(parts)


def publish_summary(root: Path, params: Params, summary: dict[str, Any]) -> None:
    """Create the summary, stage-table and plot artifacts under stable keys."""
    plots = plots_markdown(get_stage("evaluate").out_dir(params, root) / PLOTS_DIR)
    if plots is not None:
        create_markdown_artifact(plots, key=PLOTS_KEY, description="embedpipe plots")
    create_table_artifact(stage_table(summary["stages"]), key=STAGES_KEY,
                          description="embedpipe stage statistics")
    create_markdown_artifact(summary_markdown(root, params, summary), key=SUMMARY_KEY,
                             description="embedpipe run summary")
