"""The check's machinery: sections, their share of the budget, deadlines, isolation and statuses.

A section is a function ``run(ctx)`` that measures something and records it on its :class:`Context`
(``ctx.put`` / ``ctx.add``; an isolated section's record is saved to disk after every call, so a section
that is killed keeps what it measured). Its status is one of :data:`STATUSES`:

* ``ok``: it ran; ``skipped``: every part it has was skipped (``ctx.skip(reason)``, e.g. no CUDA);
* ``failed``: it, or one of its parts (``with ctx.part(name)``), raised; the one-line reason is recorded
  and the other parts and sections still run;
* ``timeout``: it passed its deadline: ``ctx.check()`` between sub-steps raises :class:`SectionTimeout`, a
  ``SIGALRM`` timer interrupts Python code that never calls it, and an isolated section (a child process)
  is killed a few seconds later when a call never returns to Python (a hung kernel).

Budget: each section gets ``share / (sum of the shares still to run)`` of the time left, so time a
section does not use goes to the ones after it; :data:`RESERVE_S` stays for writing the report.

Isolation: a section runs in a child process (``python -c ... child_main``) when the options ask for it
(default: on CUDA, where a kernel that faults poisons the process's CUDA context for every later section,
and only a process can be killed out of a hung kernel), when the section asks for it (``isolated``), or
when it needs Triton's interpreter and this process already imported Triton compiled (the interpreter is
chosen when triton is first imported).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from tvts.errors import UserError, one_line

SCHEMA = "tvts.gpu_check/1"
STATUSES = ("ok", "skipped", "failed", "timeout")
RESERVE_S = 10.0  # at most this much (and 5 % of the budget) is kept back for the report
KILL_MARGIN_S = 8.0  # an isolated section's own deadline comes this much (at most 20 %) before the kill
ROOT = Path(__file__).resolve().parents[3]  # the checkout: configs/ and the tvts package


class SectionTimeout(BaseException):
    """The section's deadline passed. A BaseException, so that library code catching Exception (or
    RuntimeError, as out-of-memory handlers do) lets it through."""


class Skip(Exception):
    """A section or part that cannot run here (``reason``: one line, e.g. "no CUDA")."""


@dataclass(frozen=True)
class Section:
    """One independent measurement. ``share``: its weight in the budget; ``markdown(record)`` renders its
    record's ``result`` as report lines; ``plot(result, out_dir)`` writes its PNGs and returns their names."""

    name: str
    title: str
    share: float
    run: Callable[["Context"], None]
    markdown: Callable[[dict], list]
    plot: Optional[Callable[[dict, Path], list]] = None
    isolated: bool = False  # always in a child process
    interpreted: bool = False  # runs Triton kernels, interpreted in --dry


@dataclass
class CheckOptions:
    """What to run. ``dry``: every section on the CPU at tiny shapes (Triton interpreted); ``sections``:
    names to run (all when empty); ``isolate``: child process per section (None: on CUDA);
    ``work_dir``: scratch space shared by the sections (benchmark shards), '' for a temporary one."""

    dry: bool = False
    budget_s: float = 480.0
    sections: tuple = ()
    isolate: Optional[bool] = None
    work_dir: str = ""


class Context:
    """What a running section sees: its options, device, deadline and scratch space, and its record."""

    def __init__(self, name: str, options: CheckOptions, deadline: float, save_path: Optional[str] = None):
        import torch

        self.name, self.options, self.deadline = name, options, deadline
        self.dry = options.dry
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.work_dir = Path(options.work_dir)
        self.result: dict = {}
        self.parts: dict = {}
        self._save_path = save_path

    # -- time --------------------------------------------------------------------------------------
    def left(self) -> float:
        """Seconds to the deadline."""
        return self.deadline - time.time()

    def check(self, what: str = "") -> None:
        """Raise :class:`SectionTimeout` once the deadline has passed; call between sub-steps."""
        if time.time() >= self.deadline:
            raise SectionTimeout(f"deadline passed{' before ' + what if what else ''}")

    # -- record ------------------------------------------------------------------------------------
    def put(self, key: str, value) -> None:
        self.result[key] = value
        self._save()

    def add(self, table: str, row: dict) -> None:
        """Append ``row`` to the list ``result[table]``."""
        self.result.setdefault(table, []).append(row)
        self._save()

    def skip(self, reason: str):
        raise Skip(reason)

    def require_cuda(self) -> None:
        if self.device.type != "cuda":
            raise Skip("no CUDA")

    @contextlib.contextmanager
    def part(self, name: str):
        """A sub-measurement whose failure or skip is recorded without stopping the section."""
        try:
            yield
            self.parts[name] = {"status": "ok", "reason": None}
        except Skip as why:
            self.parts[name] = {"status": "skipped", "reason": one_line(why)}
        except SectionTimeout as why:
            self.parts[name] = {"status": "timeout", "reason": one_line(why)}
            raise
        except Exception as err:  # noqa: BLE001 - recorded, and the next part runs
            self.parts[name] = {"status": "failed", "reason": f"{type(err).__name__}: {one_line(err)}"}
        finally:
            self._save()

    def record(self, status: str, reason: Optional[str]) -> dict:
        return {"status": status, "reason": reason, "parts": self.parts, "result": self.result}

    def _save(self) -> None:
        if self._save_path:
            _write_json_atomic(self._save_path, self.record("timeout", "killed before it finished"))


def _write_json_atomic(path, obj) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, default=str)
    os.replace(tmp, path)


def section_status(parts: dict) -> tuple[str, Optional[str]]:
    """A finished section's status from its parts: failed if one failed, skipped if all were, else ok."""
    failed = [f"{n}: {p['reason']}" for n, p in parts.items() if p["status"] == "failed"]
    if failed:
        return "failed", "; ".join(failed)
    if parts and all(p["status"] == "skipped" for p in parts.values()):
        return "skipped", "; ".join(dict.fromkeys(p["reason"] for p in parts.values()))
    return "ok", None


# ----------------------------------------------------------------------------------------------
# Running one section
# ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _alarm(seconds: float):
    """SIGALRM raises SectionTimeout after ``seconds`` (main thread only; elsewhere ctx.check() alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise SectionTimeout("deadline passed (interrupted)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_in_process(section: Section, ctx: Context) -> dict:
    """Run ``section`` here until its deadline; its record with status and one-line reason."""
    try:
        # a little after the deadline, so that a section calling ctx.check() stops itself and says where
        with _alarm(ctx.left() * 1.2 if ctx.left() < 10 else ctx.left() + 2.0):
            if ctx.left() <= 0:
                raise SectionTimeout("no time left in the budget")
            section.run(ctx)
        status, reason = section_status(ctx.parts)
    except SectionTimeout as why:
        status, reason = "timeout", one_line(why)
    except Skip as why:
        status, reason = "skipped", one_line(why)
    except Exception as err:  # noqa: BLE001 - one section's failure never stops the check
        status, reason = "failed", f"{type(err).__name__}: {one_line(err)}"
    return ctx.record(status, reason)


def child_env(options: CheckOptions) -> dict:
    """The environment of an isolated section: this one, the checkout importable, and Triton interpreted and
    the GPUs hidden in --dry (both decided when torch and triton start)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    if options.dry:
        env["TRITON_INTERPRET"] = "1"
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_isolated(section: Section, options: CheckOptions, kill_at: float) -> dict:
    """Run ``section`` in a child process (same interpreter, see :func:`child_main`); the child stops itself
    at its deadline and is killed at ``kill_at`` (epoch seconds) when it does not."""
    allowance = kill_at - time.time()
    deadline = kill_at - min(KILL_MARGIN_S, 0.2 * allowance)
    with tempfile.TemporaryDirectory(prefix="tvts_gpu_check_") as tmp:
        spec, result = Path(tmp) / "spec.json", Path(tmp) / "record.json"
        spec.write_text(json.dumps({"section": section.name, "options": asdict(options), "deadline": deadline,
                                    "record": str(result)}))
        code = "import sys; from tvts.perf.gpucheck.core import child_main; sys.exit(child_main(sys.argv[1]))"
        child = subprocess.Popen([sys.executable, "-c", code, str(spec)], env=child_env(options),
                                 start_new_session=True)  # its own process group: killed with its workers
        try:
            returncode = child.wait(timeout=max(0.0, kill_at - time.time()))
            killed = None
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            returncode = child.returncode
            killed = f"killed at the end of its budget, {kill_at - deadline:.1f} s after its own deadline"
        record = json.loads(result.read_text()) if result.exists() else None
    if killed:
        record = record or {"parts": {}, "result": {}}
        record.update(status="timeout", reason=killed)
    elif record is None:
        how = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        record = {"status": "failed", "reason": f"the section's process died ({how}) before writing its record",
                  "parts": {}, "result": {}}
    return record


def child_main(spec_path: str) -> int:
    """Entry point of an isolated section: run it in process, write its record, exit 0."""
    from tvts.perf.gpucheck import SECTIONS

    spec = json.loads(Path(spec_path).read_text())
    options = CheckOptions(**{**spec["options"], "sections": tuple(spec["options"]["sections"])})
    ctx = Context(spec["section"], options, spec["deadline"], save_path=spec["record"])
    record = run_in_process(SECTIONS[spec["section"]], ctx)
    _write_json_atomic(spec["record"], record)
    return 0


def interpreting_here() -> bool:
    """Whether Triton kernels run interpreted in this process: decided when triton is first imported
    (torch._dynamo imports it, e.g. through an optimizer), so a process that imported it without
    TRITON_INTERPRET=1 cannot interpret."""
    kernels = sys.modules.get("tvts.kernels.triton_attention")
    if kernels is not None:
        return kernels.INTERPRETED
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") and "triton" not in sys.modules


def needs_child(section: Section, options: CheckOptions, cuda: bool) -> bool:
    if section.isolated or (section.interpreted and options.dry and not interpreting_here()):
        return True
    return cuda if options.isolate is None else options.isolate


# ----------------------------------------------------------------------------------------------
# Running the check
# ----------------------------------------------------------------------------------------------
def selected(sections: dict, names: Sequence[str]) -> list[Section]:
    unknown = [n for n in names if n not in sections]
    if unknown:
        raise UserError(f"--sections: unknown section {', '.join(unknown)}; choose from {', '.join(sections)}")
    return [s for n, s in sections.items() if not names or n in names]


def run_sections(sections: dict, options: CheckOptions, log: Callable[[str], None] = print) -> dict:
    """Run the selected sections one after another within ``options.budget_s``; {name: record}, each
    record with ``seconds``, ``allowance_s`` and ``isolated`` added."""
    import torch

    cuda = torch.cuda.is_available()
    if options.dry and cuda:
        raise UserError("--dry is the CPU rehearsal: hide the GPUs (CUDA_VISIBLE_DEVICES=) before torch starts, "
                        "as launch/gpu_check.py --dry does")
    if not options.dry and not cuda:
        raise UserError(f"no CUDA device in this torch ({torch.__version__}); pass --dry for the CPU rehearsal")
    todo = selected(sections, options.sections)
    start = time.time()
    end = start + options.budget_s - min(RESERVE_S, 0.05 * options.budget_s)
    records = {}
    for i, section in enumerate(todo):
        now = time.time()
        allowance = max(0.0, (end - now) * section.share / sum(s.share for s in todo[i:]))
        isolated = needs_child(section, options, cuda)
        log(f"[gpu-check] {section.name}: {allowance:.0f} s{' (own process)' if isolated else ''}")
        if isolated:
            record = run_isolated(section, options, now + allowance)
        else:
            record = run_in_process(section, Context(section.name, options, now + allowance))
        record.update(seconds=time.time() - now, allowance_s=allowance, isolated=isolated)
        records[section.name] = record
        log(f"[gpu-check] {section.name}: {record['status']} in {record['seconds']:.1f} s"
            + (f" ({record['reason']})" if record["reason"] else ""))
    return records
