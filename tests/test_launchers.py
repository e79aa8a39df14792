"""Every launcher in launch/ answers bad input with one line on stderr naming the path or value, and exit 2.

In process (``tvts.errors.cli(module.main, argv)``, what ``sys.exit(cli(main))`` runs) for each launcher;
two real subprocesses prove the exit path end to end.
"""
import importlib.util
import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from tvts.errors import cli

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = sorted(p.stem for p in (ROOT / "launch").glob("*.py"))

# a tiny model on shards (no synthetic corpus, no stream): the launcher gets as far as the data
TINY = ["model.video.size=atto", "model.video.patch_size=8", "sample.image_size=32", "model.sort.heads=2",
        "data.resize_short=32", "data.num_workers=0", "train.micro_batch=4", "model.text.kind=clip",
        "model.text.width=32", "model.text.layers=1", "model.text.heads=2", "model.text.output_dim=32",
        "model.text.frozen=false", "model.text.cache=false", "model.sort.transcript_norm=none",
        "data.synthetic=false", "data.synthetic_stream=false", "train.eval_every=0", "train.steps=1"]


@lru_cache(maxsize=None)
def _launcher(name: str):
    spec = importlib.util.spec_from_file_location(f"launch_{name}", ROOT / "launch" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _error_line(stderr: str) -> str:
    """The one non-empty stderr line that is not a log record (INFO lines come from the launcher's logging)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("INFO ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def bad(tmp_path):
    """Bad inputs: a path that does not exist, an empty folder, a text file, a shard set without shards."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("not what was asked for\n")
    no_shards = tmp_path / "no_shards"
    no_shards.mkdir()  # what prepare_data leaves when every input was skipped
    (no_shards / "index.json").write_text(json.dumps({"kind": "transcripts", "shards": [], "samples": 0}))
    raw = tmp_path / "raw"  # one video with its subtitles, for launchers that get as far as writing
    raw.mkdir()
    (raw / "v.mp4").write_bytes(b"")
    (raw / "v.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n")
    shard = tmp_path / "shard-000000.tar"
    import tarfile
    with tarfile.open(shard, "w"):
        pass
    return {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "file": tmp_path / "file.txt",
            "no_shards": no_shards, "tmp": tmp_path, "shard": shard}


# (launcher, argv from the bad paths, the start of the line, the bad path or value the line must name)
CASES = {
    "pretrain_config_dir": ("pretrain", lambda b: ["--config", str(b["empty"])],
                            "config error: ", "{empty}: is a directory; pass a YAML file such as configs/demo.yaml"),
    "pretrain_missing_shards": ("pretrain", lambda b: [*TINY, f"data.train=[{b['missing']}]", f"train.run_dir={b['tmp'] / 'run'}"],
                                "error: ", "{missing}: no such shard set"),
    "pretrain_empty_dir": ("pretrain", lambda b: [*TINY, f"data.train=[{b['empty']}]", f"train.run_dir={b['tmp'] / 'run'}"],
                           "error: ", "{empty}/index.json: missing"),
    "pretrain_no_shards": ("pretrain", lambda b: [*TINY, f"data.train=[{b['no_shards']}]", f"train.run_dir={b['tmp'] / 'run'}"],
                           "error: ", "{no_shards}: no shard with samples"),
    "pretrain_init_missing": ("pretrain", lambda b: [*TINY, f"data.train=[{b['shard']}]", f"model.init={b['missing']}",
                                                     f"train.run_dir={b['tmp'] / 'run'}"],
                              "config error: ", "model.init: {missing}: no such file; make it with python launch/convert.py"),
    "pretrain_run_dir_is_a_file": ("pretrain", lambda b: [*TINY, f"data.train=[{b['shard']}]", f"train.run_dir={b['file']}"],
                                   "error: ", "{file}"),
    "pretrain_not_a_tar": ("pretrain", lambda b: [*TINY, f"data.train=[{b['file']}]", f"train.run_dir={b['tmp'] / 'run'}"],
                           "error: ", "transcripts epoch 0: rank 0 slot 0 read no sample from its 1 shards ({{'corrupt_shard': 1}})"),
    "prepare_data_out_is_a_file": ("prepare_data", lambda b: ["--source", "vtt", "--input", str(b["tmp"] / "raw"),
                                                              "--out", str(b["file"])], "error: ", "{file}"),
    "prepare_data_missing": ("prepare_data", lambda b: ["--source", "vtt", "--input", str(b["missing"]), "--out", str(b["tmp"] / "out")],
                             "error: ", "{missing}: no such folder"),
    "prepare_data_file": ("prepare_data", lambda b: ["--source", "vtt", "--input", str(b["file"]), "--out", str(b["tmp"] / "out")],
                          "error: ", "{file}: not a folder"),
    "prepare_data_config_dir": ("prepare_data", lambda b: ["--source", "vtt", "--input", str(b["empty"]), "--out",
                                                           str(b["tmp"] / "out"), "--config", str(b["empty"])],
                                "config error: ", "{empty}: is a directory"),
    "make_synthetic_size": ("make_synthetic", lambda b: ["--out", str(b["tmp"] / "syn"), "--videos", "1", "--size", "15"],
                            "error: ", "size=15: the canvas side must be an even number of pixels >= 16"),
    "make_synthetic_downstream_size": ("make_synthetic", lambda b: ["--out", str(b["tmp"] / "syn"), "--videos", "0",
                                                                    "--downstream-train", "2", "--size", "32"],
                                       "error: ", "size=32: downstream clips need a canvas of at least 64 px"),
    "convert_missing_input": ("convert", lambda b: ["--from", "tvtsv2", "--input", str(b["missing"]), "--config",
                                                    str(ROOT / "configs" / "demo.yaml"), "--output", str(b["tmp"] / "o.pt")],
                              "convert error: ", "{missing}: no such file"),
    "convert_config_dir": ("convert", lambda b: ["--from", "tvtsv2", "--input", str(b["file"]), "--config", str(b["empty"]),
                                                 "--output", str(b["tmp"] / "o.pt")],
                           "config error: ", "{empty}: is a directory"),
    "export_missing": ("export", lambda b: [str(b["missing"])], "error: ", "{missing}: neither a checkpoint"),
    "export_file": ("export", lambda b: [str(b["file"])], "error: ", "{file}: neither a checkpoint"),
    "evaluate_missing_checkpoint": ("evaluate", lambda b: ["--task", "linear", "--checkpoint", str(b["missing"]),
                                                           "--data", str(b["empty"])],
                                    "error: ", "{missing}: neither a checkpoint"),
    "evaluate_missing_data": ("evaluate", lambda b: ["--task", "linear", "--checkpoint", f"random:{ROOT / 'configs' / 'demo.yaml'}",
                                                     "--data", str(b["missing"])],
                              "error: ", "{missing}: --data must be the dataset's metadata directory"),
    "profile_config_dir": ("profile", lambda b: ["--config", str(b["empty"])], "config error: ", "{empty}: is a directory"),
    "scaling_config_missing": ("scaling", lambda b: ["--config", str(b["missing"])], "config error: ",
                               "{missing}: config file not found"),
    "scaling_collect_not_run": ("scaling", lambda b: ["--sizes", "atto", "--budgets", "8", "--collect", "--out", str(b["tmp"] / "sc")],
                                "error: ", "{tmp}/sc/runs/atto_8/metrics.jsonl: no metrics for run atto_8"),
    "bench_synthetic_no_labels": ("bench_synthetic", lambda b: ["--tvts", str(b["missing"]), "--vtc", str(b["missing"]),
                                                                "--data", str(b["empty"]), "--out", str(b["tmp"] / "bench")],
                                  "error: ", "{empty}: no labels.json"),
    "bench_kernels_device": ("bench_kernels", lambda b: ["--device", "nonsense", "--out", str(b["tmp"] / "k.json")],
                             "error: ", "--device nonsense: not a torch device"),
    "finetune_missing_data": ("finetune", lambda b: [f"finetune.data={b['missing']}", f"train.run_dir={b['tmp'] / 'run'}"],
                              "error: ", "{missing}: finetune.data: no such directory"),
    "gpu_check_budget": ("gpu_check", lambda b: ["--budget-s", "-1", "--out", str(b["tmp"] / "gc")], "error: ",
                         "--budget-s -1: expected a positive number of seconds"),
    "bench_data_workers": ("bench_data", lambda b: ["--workers", "a,b", "--work", str(b["tmp"] / "work")],
                           "error: ", "--workers a,b: expected comma-separated worker counts"),
}


def test_every_launcher_has_a_bad_input_case():
    assert sorted({case[0] for case in CASES.values()}) == LAUNCHERS


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(case, bad, capsys):
    name, argv, label, message = CASES[case]
    assert cli(_launcher(name).main, argv(bad)) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(label + message.format(**bad)), line


def test_each_launcher_exits_through_cli():
    for name in LAUNCHERS:
        source = (ROOT / "launch" / f"{name}.py").read_text()
        assert source.rstrip().endswith("sys.exit(cli(main))"), name


def _run(*argv):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *argv], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_pretrain_process_missing_shards(tmp_path):
    missing = tmp_path / "missing"
    res = _run("launch/pretrain.py", *TINY, f"data.train=[{missing}]", f"train.run_dir={tmp_path / 'run'}")
    assert res.returncode == 2, res.stderr
    assert _error_line(res.stderr) == f"error: {missing}: no such shard set, shard or pattern"


def test_prepare_data_process_config_dir(tmp_path):
    res = _run("launch/prepare_data.py", "--source", "vtt", "--input", str(tmp_path), "--out", str(tmp_path / "out"),
               "--config", str(tmp_path))
    assert res.returncode == 2, res.stderr
    assert _error_line(res.stderr) == f"config error: {tmp_path}: is a directory; pass a YAML file such as configs/demo.yaml"
