"""Results: one JSON document per task run, and the same as a markdown table."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional


def make_result(task: str, model, opts, files: dict, metrics: dict, columns: list[str], rows: list[list],
                protocol: Optional[dict] = None, **extra) -> dict:
    """``metrics``: the headline numbers; ``columns`` / ``rows``: the table printed for people."""
    full_protocol = {**opts.protocol(model.cfg), "feature": extra.pop("feature", None), **(protocol or {})}
    return {"task": task, "model": model.describe(), "data": files, "protocol": full_protocol,
            "metrics": metrics, "table": {"columns": columns, "rows": rows}, **extra}


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def markdown_table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(result: dict) -> str:
    """Title, the table, then the protocol and data as a bullet list."""
    model = result["model"]
    out = [f"### {result['task']}: {model['source']}", "", markdown_table(result["table"]["columns"], result["table"]["rows"]), ""]
    for key, value in {**result["protocol"], **{f"data.{k}": v for k, v in result["data"].items()}}.items():
        if value is not None:
            out.append(f"- {key}: {value}")
    return "\n".join(out) + "\n"


def write_result(result: dict, out_dir) -> tuple[Path, Path]:
    """``<out>/<task>.json`` and ``<out>/<task>.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{result['task']}.json", out / f"{result['task']}.md"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    md_path.write_text(markdown(result))
    return json_path, md_path
