"""Each metadata parser on a small fixture; errors name the file and the line."""
import json
import pickle

import pytest

from tvts.eval import formats
from tvts.eval.formats import MetadataError


def _write(path, text):
    path.write_text(text)
    return path


def test_ssv2_list_and_labels(tmp_path):
    labels = _write(tmp_path / "labels.json", json.dumps({"Pushing something": "1", "Holding something": "0"}))
    assert formats.read_class_names(labels) == ["Holding something", "Pushing something"]
    lst = _write(tmp_path / "val.txt", "74225.webm 1\n\n116154.webm 0\n")
    items = formats.read_ssv2_list(lst, 2)
    assert [(i.video, i.label) for i in items] == [("74225.webm", 1), ("116154.webm", 0)]
    assert items[1].where == f"{lst}:3"


@pytest.mark.parametrize("text, line, what", [
    ("a.webm 0\nb.webm\n", 2, "got 1 fields"),
    ("a.webm 0\nb.webm x\n", 2, "not an integer"),
    ("a.webm 0\na.webm 0\nc.webm 7\n", 3, "outside [0, 2)"),
])
def test_ssv2_list_errors_name_file_and_line(tmp_path, text, line, what):
    lst = _write(tmp_path / "train.txt", text)
    with pytest.raises(MetadataError, match=rf"train\.txt:{line}: .*{what.replace('[', '.').replace(')', '.')}"):
        formats.read_ssv2_list(lst, 2)


def test_label_file_errors(tmp_path):
    bad = _write(tmp_path / "label2id.json", '{\n "walk": 0,\n "run": "fast"\n}\n')
    with pytest.raises(MetadataError, match=r"label2id\.json:3: class 'run'"):
        formats.read_class_names(bad)
    gap = _write(tmp_path / "gap.json", '{"walk": 0, "run": 2}')
    with pytest.raises(MetadataError, match="ids must be 0..1"):
        formats.read_class_names(gap)
    broken = _write(tmp_path / "broken.json", '{\n "walk": 0,\n "run" 1\n}')
    with pytest.raises(MetadataError, match=r"broken\.json:3: not valid JSON"):
        formats.read_class_names(broken)


def test_kinetics_ucf_hmdb_split_lists(tmp_path):
    ids = {"abseiling": 0, "air drumming": 1}
    lst = _write(tmp_path / "kinetics400_val_list_videos.tsv",
                 "abseiling/abc_000001_000011.mp4\t0\nair drumming/x y.mp4\tair drumming\nabseiling/z.mp4 1\n")
    items = formats.read_split_list(lst, ids)
    assert [(i.video, i.label) for i in items] == [("abseiling/abc_000001_000011.mp4", 0), ("air drumming/x y.mp4", 1),
                                                   ("abseiling/z.mp4", 1)]
    with pytest.raises(MetadataError, match=r"\.tsv:1: label 'jumping'"):
        formats.read_split_list(_write(tmp_path / "bad.tsv", "a/b.mp4\tjumping\n"), ids)


def test_mc_jsonl(tmp_path):
    path = _write(tmp_path / "val.jsonl", json.dumps({"clip_name": "1234", "options": ["a", "b"], "answer": 1}) + "\n"
                  + json.dumps({"clip_name": "9.webm", "options": ["c"], "answer": 0}) + "\n")
    items = formats.read_mc_jsonl(path)
    assert [(i.video, i.options, i.answer) for i in items] == [("1234.webm", ("a", "b"), 1), ("9.webm", ("c",), 0)]
    for line, what in (('{"clip_name": "1", "options": ["a"], "answer": 3}', "answer 3 is not an index"),
                       ('{"clip_name": "1", "answer": 0}', "missing key"), ('{"clip_name": ', "not valid JSON")):
        bad = _write(tmp_path / "bad.jsonl", '{"clip_name": "0", "options": ["a"], "answer": 0}\n' + line + "\n")
        with pytest.raises(MetadataError, match=rf"bad\.jsonl:2: {what}"):
            formats.read_mc_jsonl(bad)


def _msrvtt(tmp_path):
    ann = {"annotations": [{"image_id": "video1", "caption": "a cat"}, {"image_id": "video2", "caption": "a dog"},
                           {"image_id": "video1", "caption": "a kitten"}, {"image_id": "video9", "caption": "train only"}]}
    return (_write(tmp_path / "MSR_VTT.json", json.dumps(ann, indent=1)),
            _write(tmp_path / "val_list_jsfusion.txt", "video1\nvideo2\n"))


def test_msrvtt_with_and_without_caption_index(tmp_path):
    ann, test = _msrvtt(tmp_path)
    index = tmp_path / "jsfusion_val_caption_idx.pkl"
    index.write_bytes(pickle.dumps({"video1": 1, "video2": 0}))
    one = formats.read_msrvtt(ann, test, index)
    assert one.videos == ["video1.mp4", "video2.mp4"] and one.texts == ["a kitten", "a dog"] and one.text_video == [0, 1]
    every = formats.read_msrvtt(ann, test)
    assert every.texts == ["a cat", "a kitten", "a dog"] and every.text_video == [0, 0, 1]
    _write(test, "video1\nvideo3\n")
    with pytest.raises(MetadataError, match=r"val_list_jsfusion\.txt:2: video 'video3' has no caption"):
        formats.read_msrvtt(ann, test)


def test_caption_index_pickle_may_not_run_code(tmp_path):
    ann, test = _msrvtt(tmp_path)
    evil = tmp_path / "idx.pkl"
    evil.write_bytes(pickle.dumps({"video1": print}))
    with pytest.raises(MetadataError, match="refusing to load"):
        formats.read_msrvtt(ann, test, evil)


def test_didemo_and_lsmdc(tmp_path):
    didemo = _write(tmp_path / "DiDeMo_test.tsv", "caption\tpath\na man walks in.\tvideos/1.mp4\nthe dog runs\tvideos/2.mov\n")
    ret = formats.read_didemo(didemo)
    assert ret.videos == ["videos/1.mp4", "videos/2.mov"] and ret.texts == ["a man walks in.", "the dog runs"]
    with pytest.raises(MetadataError, match=r"DiDeMo_test\.tsv:2: 'x' does not look like a video"):
        formats.read_didemo(_write(didemo, "a\tb.mp4\nc\tx\n"))
    lsmdc = _write(tmp_path / "LSMDC16_challenge_1000_publictect.csv",
                   "1010_TITANIC_00.41.32.072-00.41.40.196\t00.41.32.072\t00.41.40.196\tSOMEONE looks up.\n")
    ret = formats.read_lsmdc(lsmdc)
    assert ret.videos == ["1010_TITANIC/1010_TITANIC_00.41.32.072-00.41.40.196.avi"] and ret.texts == ["SOMEONE looks up."]
    with pytest.raises(MetadataError, match=r"publictect\.csv:1: expected tab-separated"):
        formats.read_lsmdc(_write(lsmdc, "no tabs here\n"))


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(MetadataError, match=r"nope\.txt: no such file"):
        formats.read_ssv2_list(tmp_path / "nope.txt")
    raw = tmp_path / "latin.txt"
    raw.write_bytes(b"a.webm 0\nb\xe9.webm 0\n")
    with pytest.raises(MetadataError, match=r"latin\.txt:2: not UTF-8"):
        formats.read_ssv2_list(raw)
