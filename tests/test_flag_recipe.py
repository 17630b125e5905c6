"""The FLAG 2027 recipe (recipes/flag2027/run.sh) as users run it, offline on a small synthetic MAV-Celeb v4 with
stand-in checkpoints in each source's real format (the shipped conf/demo.yaml, pointed at them), and FLAG's
validation protocol: both dev EERs per fold, selection on the track's own impostors, and the bad inputs."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from fva.synth.testing import run_cli
from conftest import assert_user_error
from test_recipes import REPO, shell, tree_times

CONF = REPO / "recipes" / "flag2027" / "conf"
SCRIPT = REPO / "recipes" / "flag2027" / "run.sh"
ENCODERS = ("ecapa-embedding", "vggface-keras", "speaker-ecapa", "vit-age-gender", "imagebind-face", "imagebind-voice",
            "face-age", "voice-age")


def demo_config(base: Path, root: Path, models: dict[str, Path], **changes) -> Path:
    """The shipped demo config pointed at ``root`` (a v4 download) and ``models``; ``changes`` per section."""
    cfg = yaml.safe_load((CONF / "demo.yaml").read_text())
    cfg["work"] = str(base / "work")
    cfg["data"].update(root=str(root), ground_truth=str(root / "ground_truth"))
    cfg["weights"] = {name: str(path) for name, path in models.items()}
    cfg["heads"]["systems"] = f"{CONF / 'demo-heads.yaml'},{CONF / 'cca-organiser.yaml'},imagebind-zeroshot,age-gap"
    for section, values in changes.items():
        cfg[section].update(values)
    path = base / "flag.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def flag_demo(tmp_path_factory):
    """The demo.yaml's data and models: fva demo-data --variant v4 (16 training identities, 4 test ones) and
    fva demo-checkpoints of its eight encoders."""
    from fva.synth.demo_v4 import generate_demo_v4
    from fva.synth.checkpoints import write_demo_checkpoints

    base = tmp_path_factory.mktemp("flag-demo")
    generate_demo_v4(base / "v4", train_identities=16, test_identities=4)
    models = write_demo_checkpoints(base / "models", names=ENCODERS)
    return base / "v4", models


@pytest.fixture(scope="module")
def recipe_run(flag_demo, tmp_path_factory):
    """The recipe run as a user would: stages 0-2, then the rest (two calls, so the second resumes)."""
    root, models = flag_demo
    base = tmp_path_factory.mktemp("flag-recipe")
    shutil.copytree(root / "dev_set", base / "eval_set")  # an eval set: the same two tracks' lists and media
    config = demo_config(base, root, models, data={"eval": str(base / "eval_set")})
    first = shell(SCRIPT, base, {}, "--config", str(config), "--stop-stage", "2")
    rest = shell(SCRIPT, base, {}, "--config", str(config))
    return base, config, first, rest


def test_flag_recipe_end_to_end_on_the_demo_resumes_without_redoing(flag_demo, recipe_run):
    from fva.evaluate.submission import validate_submission
    from fva.extract.cache import open_cache
    from fva.extract.weights import deepface_identity, files_digest

    root, models = flag_demo
    tmp_path, config, first, rest = recipe_run
    work = tmp_path / "work"
    assert first.returncode == 0, first.stdout + first.stderr
    assert "== stage 3" not in first.stdout
    # stage 1: manifests of train, dev and eval, the folds with both kinds of dev lists
    for name in ("train", "dev", "eval"):
        assert (work / "manifests" / f"{name}.jsonl").is_file()
    assert json.loads((work / "folds" / "folds.json").read_text())["k"] == 4
    assert (work / "folds-same-gender" / "fold0" / "English_dev.txt").is_file()
    # stage 2: the organisers' features, with the weights identities of the files they came from
    want = {"ecapa-embedding": f"ecapa-embedding@{files_digest([models['ecapa-embedding'] / 'embedding_model.ckpt'])}",
            "vggface-keras": deepface_identity(models["vggface-keras"])}
    for subset in ("train", "test"):
        for encoder in ENCODERS:
            with open_cache(work / "cache" / "mavceleb-v4" / f"{subset}-full" / encoder) as table:
                assert table.attrs["encoder"] == encoder and len(table) > 0
                if encoder in want:
                    assert table.attrs["weights_id"] == want[encoder]
                    assert table.dim == (192 if encoder == "ecapa-embedding" else 4096)

    out = rest.stdout + rest.stderr
    assert rest.returncode == 0, out
    assert "Traceback" not in out
    with open_cache(work / "cache-eval" / "mavceleb-v4" / "test-full" / "vggface-keras") as table:
        assert table.attrs["weights_id"] == want["vggface-keras"] and len(table) > 0
    for item in ("manifests", "extract-train", "extract-dev", "extract-eval"):
        assert f"{item}: done before, skipped" in rest.stdout
    # stage 3: the baseline per track, with the baseline's own settings and selected on the track's impostors
    for track, select_on in (("no_gender", "any"), ("gender", "same-gender")):
        exp = work / "exp" / f"baseline-{track}"
        resolved = yaml.safe_load((exp / "config.yaml").read_text())
        assert resolved["model"]["system"] == "fop" and resolved["model"]["params"]["alpha"] == 2.0
        assert resolved["train"]["lr"] == 1e-5 and resolved["train"]["select_on"] == select_on
        assert resolved["features"] == {"voice_encoders": ["ecapa-embedding"], "face_encoders": ["vggface-keras"]}
        metrics = json.loads((exp / "metrics.json").read_text())
        assert set(metrics["mean_heard"]) == {"English"} and set(metrics["mean_same_gender"]["heard"]) == {"English"}
        for fold in range(4):
            assert metrics["folds"][str(fold)]["select_on"] == select_on
            assert (exp / f"fold{fold}" / "dev_scores_English-same-gender.txt").is_file()
    # stage 4: the named systems per track; a recipe config laid over a shipped system (base: cca)
    assert (work / "exp" / "demo-heads-gender" / "metrics.json").is_file()
    for track in ("no_gender", "gender"):
        cca = yaml.safe_load((work / "exp" / f"cca-organiser-{track}" / "config.yaml").read_text())
        assert cca["model"]["system"] == "cca" and cca["model"]["params"]["k"] == [4, 8, 16, 32, 64]
        assert cca["features"] == {"voice_encoders": ["ecapa-embedding"], "face_encoders": ["vggface-keras"]}
        metrics = json.loads((work / "exp" / f"cca-organiser-{track}" / "metrics.json").read_text())
        assert all("setting" in m for m in metrics["folds"].values())
        # nothing-to-train systems over the new encoders' caches: ImageBind's zero-shot score, the age gap
        for system, voice, face in (("imagebind-zeroshot", "imagebind-voice", "imagebind-face"),
                                    ("age-gap", "voice-age", "face-age")):
            resolved = yaml.safe_load((work / "exp" / f"{system}-{track}" / "config.yaml").read_text())
            assert resolved["features"] == {"voice_encoders": [voice], "face_encoders": [face]}
            metrics = json.loads((work / "exp" / f"{system}-{track}" / "metrics.json").read_text())
            assert all(m["setting"] == {"fitted": "nothing"} and m["score_level"] == 0
                       for m in metrics["folds"].values())
    # stage 5: per track the system with the lower dev EER of its impostors, a valid FLAG zip, the tables
    plan = yaml.safe_load((work / "plan-dev.yaml").read_text())
    from fva.recipe import experiment_track_eer

    for track in ("no_gender", "gender"):
        eers = {s: experiment_track_eer(work / "exp" / f"{s}-{track}", track)
                for s in ("baseline", "demo-heads", "cca-organiser", "imagebind-zeroshot", "age-gap")}
        best = min(eers, key=lambda s: (eers[s], s != "baseline"))
        for lang in ("English_heard", "Bangla_unheard"):
            assert plan["files"][f"{track}/{lang}"] == str(work / "exp" / f"{best}-{track}")
    zip_path = work / "submission-dev.zip"
    assert f"{zip_path}: valid" in rest.stdout
    assert validate_submission(zip_path, Path(plan["trials"])) == []
    with zipfile.ZipFile(zip_path) as zf:
        assert sorted(zf.namelist()) == sorted(f"{t}/sub_score_v4_{lang}.txt" for t in ("no_gender", "gender")
                                               for lang in ("English_heard", "Bangla_unheard"))
    assert "Mean" in rest.stdout  # the test EERs against the demo's ground truth
    # the eval set: the same selection, scored with its own features, into its own zip
    plan_eval = yaml.safe_load((work / "plan-eval.yaml").read_text())
    assert plan_eval["cache"] == str(work / "cache-eval") and plan_eval["trials"] == str(tmp_path / "eval_set")
    assert {k: v for k, v in plan_eval["files"].items()} == plan["files"]
    assert validate_submission(work / "submission-eval.zip", tmp_path / "eval_set") == []
    table = (work / "dev_eers.md").read_text().splitlines()
    assert len(table) == 2 + 10 and "| baseline | gender | same-gender impostors |" in table[3]
    # run again: nothing is redone, no file under the work folder changes
    before = tree_times(work)
    again = shell(SCRIPT, tmp_path, {}, "--config", str(config), "--stage", "1")
    assert again.returncode == 0, again.stdout + again.stderr
    assert tree_times(work) == before
    assert again.stdout.count("done before, skipped") == 1 + 3 + 2 + 4 * 2 + 2


def test_selection_reads_the_tracks_impostors_and_dev_lists_are_fva_folds(recipe_run):
    """Each epoch's selection EER is the dev EER of the chosen impostors, the kept epoch is the first with the
    lowest one, and the fold's dev lists are exactly what 'fva folds --negatives' writes."""
    tmp_path, _, _, rest = recipe_run
    assert rest.returncode == 0, rest.stdout + rest.stderr
    work = tmp_path / "work"
    for track, name in (("no_gender", "English"), ("gender", "English-same-gender")):
        exp = work / "exp" / f"baseline-{track}"
        for fold in range(4):
            log = [json.loads(line) for line in (exp / f"fold{fold}" / "train_log.jsonl").read_text().splitlines()]
            assert all(e["selection_eer"] == e["dev_eer"][name] for e in log)
            best = min(range(len(log)), key=lambda i: (log[i]["selection_eer"], i))
            assert json.loads((exp / f"fold{fold}" / "metrics.json").read_text())["epoch"] == log[best]["epoch"]
    for folds, name in (("folds", "English"), ("folds-same-gender", "English-same-gender")):
        for fold in range(4):
            written = (work / folds / f"fold{fold}" / "English_dev.txt").read_text()
            assert (work / "exp" / "baseline-gender" / f"fold{fold}" / f"dev_{name}.txt").read_text() == written


def test_flag_recipe_bad_inputs_are_one_line_and_write_nothing_half(flag_demo, tmp_path):
    root, models = flag_demo
    # a v4 root without meta_file_train_set.csv: the gender track cannot be validated
    bare = tmp_path / "bare"
    shutil.copytree(root, bare, ignore=shutil.ignore_patterns("meta_file_train_set.csv", "dev_set"))
    shutil.copytree(root / "dev_set", bare / "dev_set")
    (tmp_path / "a").mkdir()
    config = demo_config(tmp_path / "a", bare, models)
    run = shell(SCRIPT, tmp_path, {}, "--config", str(config), "--stage", "1", "--stop-stage", "1")
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "has no gender in the manifest" in errors[0] and "meta_file_train_set.csv" in errors[0]
    assert "Traceback" not in run.stderr and not (tmp_path / "a" / "work" / ".done" / "manifests").exists()
    # an eval folder with one track: refused before any manifest of it is written
    eval_dir = tmp_path / "eval"
    shutil.copytree(root / "dev_set" / "no_gender", eval_dir / "no_gender")
    (tmp_path / "b").mkdir()
    config = demo_config(tmp_path / "b", root, models, data={"eval": str(eval_dir)})
    run = shell(SCRIPT, tmp_path, {}, "--config", str(config), "--stage", "1", "--stop-stage", "1")
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "has no_gender/ but no gender/" in errors[0], run.stderr
    assert not (tmp_path / "b" / "work" / "manifests" / "eval.jsonl").exists()
    # weights the config names that do not exist
    (tmp_path / "c").mkdir()
    config = demo_config(tmp_path / "c", root, {**models, "vggface-keras": tmp_path / "missing.pth"})
    run = shell(SCRIPT, tmp_path, {}, "--config", str(config), "--stop-stage", "0")
    assert run.returncode == 2 and "names weights" in run.stderr and "vggface-keras" in run.stderr


def test_baseline_refuses_features_of_another_encoder_and_genderless_selection(recipe_run, tmp_path):
    """train-head with the baseline config: a cache folder named ecapa-embedding that holds another encoder's
    features, and same-gender selection on identities without genders, are one line each; no experiment."""
    base, _, _, rest = recipe_run
    assert rest.returncode == 0, rest.stdout + rest.stderr
    cache = tmp_path / "cache"
    folder = cache / "mavceleb-v4" / "train-full"
    source = base / "work" / "cache" / "mavceleb-v4" / "train-full"
    folder.mkdir(parents=True)
    for name in ("speaker-ecapa", "vggface-keras", "manifest.jsonl"):
        (shutil.copytree if (source / name).is_dir() else shutil.copyfile)(source / name, folder / name)
    shutil.copytree(folder / "speaker-ecapa", folder / "ecapa-embedding")
    args = ["train-head", "--config", "flag2027-baseline", "--cache", cache, "--dataset", "mavceleb-v4",
            "--split", "full", "--epochs", "1"]
    result = run_cli(*args, "--exp", tmp_path / "exp")
    assert_user_error(result, "ecapa-embedding: holds features of encoder speaker-ecapa, not ecapa-embedding")
    assert not (tmp_path / "exp").exists()
    shutil.rmtree(folder / "ecapa-embedding")
    result = run_cli(*args, "--exp", tmp_path / "exp")
    assert_user_error(result, "no ecapa-embedding cache")

    # the same features with every gender dropped from the manifest the cache keeps
    lines = (folder / "manifest.jsonl").read_text().splitlines()
    (folder / "manifest.jsonl").write_text("\n".join(
        [lines[0]] + [json.dumps({k: v for k, v in json.loads(x).items() if k != "gender"}) for x in lines[1:]]) + "\n")
    speaker = yaml.safe_load((REPO / "fva" / "configs" / "systems" / "flag2027-baseline.yaml").read_text())
    speaker["features"]["voice_encoders"] = ["speaker-ecapa"]
    cfg = tmp_path / "speaker-baseline.yaml"
    cfg.write_text(yaml.safe_dump(speaker))
    result = run_cli("train-head", "--config", cfg, "--cache", cache, "--dataset", "mavceleb-v4", "--split", "full",
                     "--epochs", "1", "--select-on", "same-gender", "--exp", tmp_path / "exp2")
    assert_user_error(result, "train.select_on same-gender", "has no gender in the manifest",
                      "meta_file_train_set.csv")
    assert not (tmp_path / "exp2").exists()


def test_compare_rows_show_both_dev_eers(recipe_run):
    """fva compare's row and table for an experiment that measured same-gender impostors: the column is the
    mean of its heard same-gender dev EERs; without such experiments the table keeps its old columns."""
    from fva.heads.compare import markdown_table, summary_row

    base, _, _, rest = recipe_run
    assert rest.returncode == 0, rest.stdout + rest.stderr
    metrics = json.loads((base / "work" / "exp" / "baseline-gender" / "metrics.json").read_text())
    row = summary_row("baseline", metrics, 1.0)
    folds = [m["same_gender"]["heard"]["English"] for m in metrics["folds"].values()]
    assert row["same_gender"] == pytest.approx(sum(folds) / len(folds))
    assert row["heard"] == pytest.approx(metrics["mean_heard"]["English"])
    table = markdown_table([row]).splitlines()
    assert "dev EER heard, same-gender impostors %" in table[0]
    assert f"| {row['same_gender']:.2f} |" in table[2]
    plain = {k: v for k, v in metrics.items() if k != "mean_same_gender"}
    assert "same-gender" not in markdown_table([summary_row("x", plain, 1.0)])
