"""Submission zips: write -> validate -> evaluate, and every kind of broken zip."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from fva.errors import FvaError
from fva.evaluate.eer import compute_eer
from fva.evaluate.submission import (CONDITIONS, evaluate_submission, submission_languages, submission_name,
                                     validate_submission, write_submission)

KEYS = {lang: [f"{lang[:2].lower()}{i:03d}" for i in range(8)] for lang in ("English", "German")}
LABELS = [1, 1, 1, 1, 0, 0, 0, 0]  # per language: the first four keys are same-person trials

# Distances per (language, condition), in KEYS order, with hand-computed EERs:
DISTANCES = {
    ("English", "heard"): [.1, .2, .3, .4, .5, .6, .7, .8],  # perfect separation: 0 %
    # one overlap (.4 different < .5 same): accepting up to .4 -> FAR 1/4, FRR 1/4: 25 %
    ("English", "unheard"): [.1, .2, .3, .5, .4, .6, .7, .8],
    ("German", "heard"): [.5, .6, .7, .8, .1, .2, .3, .4],  # fully reversed: 100 %
    # accepting up to .45 takes .1 .2 (same) and .3 .4 (different): FAR 2/4, FRR 2/4: 50 %
    ("German", "unheard"): [.1, .2, .5, .6, .3, .4, .7, .8],
}
EXPECTED_EER = {("English", "heard"): 0.0, ("English", "unheard"): 25.0, ("German", "heard"): 100.0,
                ("German", "unheard"): 50.0}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Trial lists and their labels side by side, like data/demo."""
    root = tmp_path / "data"
    root.mkdir()
    for lang, keys in KEYS.items():
        (root / f"{lang}_test.txt").write_text("".join(f"{k} voices/{k}.wav faces/{k}.jpg\n" for k in keys))
        (root / f"{lang}_test_labels.txt").write_text("".join(f"{k} {y}\n" for k, y in zip(keys, LABELS)))
    return root


def scores() -> dict:
    return {(lang, cond): dict(zip(KEYS[lang], DISTANCES[(lang, cond)])) for lang, cond in DISTANCES}


def good_texts() -> dict[str, str]:
    """The four files of a valid submission, as text."""
    return {submission_name(lang, cond): "".join(f"{k} {v!r}\n" for k, v in sorted(vals.items()))
            for (lang, cond), vals in scores().items()}


def make_zip(path: Path, files: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def test_languages_from_trial_list_names(data_dir):
    assert submission_languages(data_dir) == ["English", "German"]
    assert submission_name("German", "heard") == "sub_score_German_heard.txt"
    with pytest.raises(FvaError):
        submission_languages(data_dir / "nope")


def test_write_validate_evaluate(tmp_path, data_dir):
    out = write_submission(tmp_path / "out" / "submission.zip", scores())
    assert out == tmp_path / "out" / "submission.zip"
    assert sorted(p.name for p in out.parent.iterdir()) == ["submission.zip"]  # no temp file left behind
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert sorted(names) == sorted(f"sub_score_{lang}_{cond}.txt" for lang in KEYS for cond in CONDITIONS)
        text = zf.read("sub_score_English_unheard.txt").decode()
    assert text == "".join(f"{k} {v!r}\n" for k, v in zip(KEYS["English"], DISTANCES[("English", "unheard")]))

    assert validate_submission(out, data_dir) == []

    result = evaluate_submission(out, data_dir)
    assert [(r.language, r.condition) for r in result.rows] == list(EXPECTED_EER)
    for (lang, cond), eer in EXPECTED_EER.items():
        row = result.get(lang, cond)
        assert row.eer == pytest.approx(eer, abs=1e-9)
        assert row.eer == compute_eer(LABELS, DISTANCES[(lang, cond)])
        assert (row.n_trials, row.n_target, row.n_nontarget) == (8, 4, 4)
    assert result.mean_eer == pytest.approx(43.75, abs=1e-9)

    table = result.table().splitlines()
    assert table[0].split() == ["Language", "Condition", "Trials", "EER", "%"]
    assert table[2].split() == ["English", "unheard", "8", "25.00"]
    assert table[-1].split() == ["Mean", "43.75"]
    assert table[1].rindex("0.00") + 4 == len(table[1]) == len(table[0])  # right-aligned EER column

    d = json.loads(json.dumps(result.to_dict()))
    assert d["mean_eer"] == pytest.approx(43.75, abs=1e-9)
    assert {(c["language"], c["condition"]): c["eer"] for c in d["conditions"]} == pytest.approx(EXPECTED_EER,
                                                                                               abs=1e-9)


def test_write_is_deterministic_and_replaces(tmp_path):
    a = write_submission(tmp_path / "a.zip", scores())
    b = write_submission(tmp_path / "b.zip", scores())
    assert a.read_bytes() == b.read_bytes()
    one = {("English", "heard"): {"x": 0.5}}
    write_submission(a, one)
    with zipfile.ZipFile(a) as zf:
        assert zf.namelist() == ["sub_score_English_heard.txt"]


@pytest.mark.parametrize("bad, needle", [
    ({("English", "seen"): {"a": 0.1}}, "unknown condition 'seen'"),
    ({("English", "heard"): {"a": float("nan")}}, "finite"),
    ({("English", "heard"): {}}, "no scores"),
])
def test_write_rejects_bad_input(tmp_path, bad, needle):
    with pytest.raises(FvaError, match=needle):
        write_submission(tmp_path / "s.zip", bad)
    assert list(tmp_path.iterdir()) == []


def broken(tmp_path: Path, change) -> Path:
    files = good_texts()
    change(files)
    return make_zip(tmp_path / "broken.zip", files)


def test_missing_file(tmp_path, data_dir):
    z = broken(tmp_path, lambda f: f.pop("sub_score_German_unheard.txt"))
    assert validate_submission(z, data_dir) == [
        "sub_score_German_unheard.txt: expected file missing; add the unheard scores of every trial of "
        "German_test.txt"]
    with pytest.raises(FvaError, match="sub_score_German_unheard.txt is missing"):
        evaluate_submission(z, data_dir)


def test_duplicate_key_names_both_lines(tmp_path, data_dir):
    name = "sub_score_English_heard.txt"
    z = broken(tmp_path, lambda f: f.__setitem__(name, f[name] + "en002 0.9\n"))
    assert validate_submission(z, data_dir) == [
        f"{name}:9: key 'en002' also on line 3; keep one score per key"]


def test_tab_instead_of_space(tmp_path, data_dir):
    name = "sub_score_German_heard.txt"
    z = broken(tmp_path, lambda f: f.__setitem__(name, f[name].replace("ge004 ", "ge004\t")))
    assert validate_submission(z, data_dir) == [
        f"{name}:5: tab between fields; separate key and score with exactly one space"]
    with pytest.raises(FvaError, match=f"broken.zip/{name}:5: tab between fields"):
        evaluate_submission(z, data_dir)


def test_extra_file(tmp_path, data_dir):
    z = broken(tmp_path, lambda f: f.__setitem__("README.txt", "hello\n"))
    problems = validate_submission(z, data_dir)
    assert len(problems) == 1
    assert problems[0].startswith("README.txt: unexpected file; remove it (the zip must hold only "
                                  "sub_score_English_heard.txt, ")


def test_wrong_case_file_name_gets_a_hint(tmp_path, data_dir):
    z = broken(tmp_path, lambda f: f.__setitem__("sub_score_english_heard.txt", f.pop("sub_score_English_heard.txt")))
    problems = validate_submission(z, data_dir)
    assert any("did you mean sub_score_English_heard.txt" in p for p in problems)
    assert any(p.startswith("sub_score_English_heard.txt: expected file missing") for p in problems)


def test_nested_path(tmp_path, data_dir):
    name = "sub_score_English_unheard.txt"
    z = broken(tmp_path, lambda f: f.__setitem__(f"submission/{name}", f.pop(name)))
    assert validate_submission(z, data_dir) == [
        f"submission/{name}: file is inside a folder; the zip must be flat, put {name} at the top level"]
    z = broken(tmp_path, lambda f: f.__setitem__("__MACOSX/._x", b"\x00\x05"))
    assert validate_submission(z, data_dir)[0].startswith("__MACOSX/._x: unexpected file inside a folder")


def test_key_not_in_trials(tmp_path, data_dir):
    name = "sub_score_German_unheard.txt"
    z = broken(tmp_path, lambda f: f.__setitem__(name, f[name].replace("ge007 ", "en007 ")))
    assert validate_submission(z, data_dir) == [
        f"{name}:8: key 'en007' is not in German_test.txt; score only the trials of that list",
        f"{name}: 1 of 8 trial(s) of German_test.txt have no score (first: 'ge007'); add a '<key> <score>' "
        "line for every trial of the list"]


def test_nan_score(tmp_path, data_dir):
    name = "sub_score_English_heard.txt"
    z = broken(tmp_path, lambda f: f.__setitem__(name, f[name].replace("en000 0.1", "en000 nan")))
    assert validate_submission(z, data_dir) == [
        f"{name}:1: score 'nan' is NaN or infinite; every score must be a finite distance, check the model "
        "outputs"]


def test_missing_keys_count_and_first_few(tmp_path, data_dir):
    name = "sub_score_German_heard.txt"
    z = broken(tmp_path, lambda f: f.__setitem__(name, f[name].splitlines(keepends=True)[0]))
    assert validate_submission(z, data_dir) == [
        f"{name}: 7 of 8 trial(s) of German_test.txt have no score (first: 'ge001', 'ge002', 'ge003', 'ge004', "
        "'ge005', ...); add a '<key> <score>' line for every trial of the list"]


def test_not_a_zip(tmp_path, data_dir):
    path = tmp_path / "s.zip"
    path.write_text("not a zip")
    problems = validate_submission(path, data_dir)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: not a readable zip file")
    assert validate_submission(tmp_path / "none.zip", data_dir) == [f"{tmp_path / 'none.zip'}: file not found; "
                                                                    "check the path"]
    with pytest.raises(FvaError, match="not a readable zip"):
        evaluate_submission(path, data_dir)


def test_all_problems_in_one_call(tmp_path, data_dir):
    def change(f):
        f.pop("sub_score_German_unheard.txt")                                   # missing file
        f["notes.txt"] = "x"                                                    # extra file
        f["deep/sub_score_German_heard.txt"] = f.pop("sub_score_German_heard.txt")  # nested
        eh = f["sub_score_English_heard.txt"].splitlines(keepends=True)
        eh[1] = eh[1].replace(" ", "\t")                                        # tab
        eh[2] = "en002 NaN\n"                                                   # NaN
        eh[3] = "en000 0.4\n"                                                   # duplicate of line 1
        eh[4] = "zz999 0.5 extra\n"                                             # 3 fields, key not in trials
        f["sub_score_English_heard.txt"] = "".join(eh)
        f["sub_score_English_unheard.txt"] += "en001 oops\r\n"                  # CR, not a number, duplicate
    z = broken(tmp_path, change)
    problems = validate_submission(z, data_dir)
    eh, eu = "sub_score_English_heard.txt", "sub_score_English_unheard.txt"
    expected_starts = [
        "notes.txt: unexpected file;",
        "deep/sub_score_German_heard.txt: file is inside a folder;",
        f"{eh}:2: tab between fields;",
        f"{eh}:3: score 'NaN' is NaN or infinite;",
        f"{eh}:4: key 'en000' also on line 1;",
        f"{eh}:5: expected 2 fields '<key> <score>', found 3;",
        f"{eh}:5: key 'zz999' is not in English_test.txt;",
        f"{eh}: 2 of 8 trial(s) of English_test.txt have no score (first: 'en003', 'en004');",
        f"{eu}:9: line ends with a carriage return (Windows line ending);",
        f"{eu}:9: score 'oops' is not a number;",
        f"{eu}:9: key 'en001' also on line 2;",
        "sub_score_German_unheard.txt: expected file missing;",
    ]
    assert len(problems) == len(expected_starts), problems
    for start in expected_starts:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert all("; " in p for p in problems)  # each says what to do


def test_repeated_problem_is_summarised(tmp_path, data_dir):
    name = "sub_score_English_heard.txt"
    z = broken(tmp_path, lambda f: f.__setitem__(name, f[name] + "".join(f"en{i:03d}\t0.5\n" for i in range(8, 38))))
    # 30 lines with a tab (listed 10, then counted) whose keys are also not in the trial list
    problems = validate_submission(z, data_dir)
    assert sum(p.startswith(f"{name}:") and ": tab between fields;" in p for p in problems) == 10
    assert f"{name}: 20 more line(s) with the same problem (tab between fields); fix them the same way" in problems
    assert f"{name}: 20 more line(s) with the same problem (key not in the trial list); fix them the same way" \
        in problems
    assert len(validate_submission(z, data_dir, max_per_kind=None)) == 60


def test_evaluate_names_missing_labelled_key(tmp_path, data_dir):
    name = "sub_score_English_unheard.txt"
    z = broken(tmp_path, lambda f: f.__setitem__(name, f[name].replace("en005 0.6\n", "")))
    with pytest.raises(FvaError) as err:
        evaluate_submission(z, data_dir)
    assert f"broken.zip/{name}: 1 of 8 labelled trial(s) have no score, first 'en005'" in str(err.value)


def test_evaluate_needs_ground_truth(tmp_path):
    z = write_submission(tmp_path / "s.zip", scores())
    (tmp_path / "gt").mkdir()
    with pytest.raises(FvaError, match="no <Lang>_test_labels.txt"):
        evaluate_submission(z, tmp_path / "gt")
