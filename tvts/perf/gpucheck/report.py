"""The check's report: ``report.json`` (everything), ``report.md`` (a summary table, then each section's
tables) and the sections' PNGs, at most a handful of files (the device tool brings back 8)."""
from __future__ import annotations

from pathlib import Path

from tvts.errors import one_line


def markdown(report: dict, sections: dict) -> str:
    from tvts.perf.common import markdown_table

    where = report["where"]
    opts = report["options"]
    out = ["# GPU check", "",
           f"Device: {where['device']} ({where['cpu']}, {where['cpu_count']} cores); torch {where['torch']}, "
           f"triton {where['triton']}; {where['date']}, commit {where['commit']}.",
           f"Command: `{where['command']}`; budget {opts['budget_s']:.0f} s, {report['seconds']:.0f} s used"
           f"{'; --dry: CPU, tiny shapes, Triton interpreted' if opts['dry'] else ''}.", "",
           markdown_table([{"section": name, **{k: r.get(k) for k in ("status", "seconds", "allowance_s", "reason")}}
                           for name, r in report["sections"].items()],
                          [("section", "section", ""), ("status", "status", ""), ("seconds", "s", ".1f"),
                           ("allowance_s", "budget s", ".0f"), ("reason", "reason", "")]), ""]
    for name, record in report["sections"].items():
        out += [f"## {sections[name].title}", ""]
        parts = [f"{p}: {v['status']}" + (f" ({v['reason']})" if v["reason"] else "") for p, v in record["parts"].items()]
        out += [f"Parts: {'; '.join(parts)}.", ""] if parts else []
        try:
            out += sections[name].markdown(record["result"])
        except Exception as err:  # noqa: BLE001 - a partial record must not lose the rest of the report
            out += [f"(cannot render this section's record: {type(err).__name__}: {one_line(err)})", ""]
        out += [f"![{name}]({png})" for png in record.get("plots", [])] + ([""] if record.get("plots") else [])
    return "\n".join(out)


def write_report(report: dict, out_dir: Path, sections: dict) -> None:
    """``report.json``, each section's PNGs (names recorded in its record's ``plots``) and ``report.md``."""
    import torch

    from tvts.perf.common import environment, write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    report["where"] = environment(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    for name, record in report["sections"].items():
        plot = sections[name].plot
        try:
            record["plots"] = plot(record["result"], out_dir) if plot and record["result"] else []
        except Exception as err:  # noqa: BLE001
            record["plots"], record["plot_error"] = [], f"{type(err).__name__}: {one_line(err)}"
    write_json(out_dir / "report.json", report)
    (out_dir / "report.md").write_text(markdown(report, sections) + "\n")
