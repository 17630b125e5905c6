"""The shell entry points as users run them: `make submission` (scripts/submission.sh) on a real MAV-Celeb
layout without VoxCeleb2 or CommonVoice (the reduced system), and the FAME 2026 recipe (recipes/fame2026/run.sh)
end to end on a tiny synthetic world in the real layouts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shell(script: Path, cwd: Path, env: dict, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``bash script args`` with the test's interpreter's ``fva`` first on the PATH; output captured."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(["bash", str(script), *args], cwd=cwd, env={**os.environ, "PATH": path, **env},
                          capture_output=True, text=True, timeout=timeout)


def test_make_submission_on_a_real_mavceleb_runs_the_reduced_system(tmp_path):
    """No trained voice age-gender model, no VoxCeleb2, lists in MAV-Celeb's separate splits folder: the chain
    runs to a valid zip and says, per file, which published condition it does not meet."""
    from fva.synth.demo import generate_demo
    from fva.synth.checkpoints import write_demo_speaker_ecapa
    from fva.extract.encoders.vit_age_gender import demo_config, save_vit_age_gender

    root = tmp_path / "mavceleb_v3"
    generate_demo(root, seed=2, train_identities=14, test_identities=4, videos=1, utterances=2, frames=2)
    splits = root / "face_voice_association_splits" / "v3"
    splits.mkdir(parents=True)
    for listed in root.glob("*.txt"):
        listed.rename(splits / listed.name)
    speaker = write_demo_speaker_ecapa(tmp_path / "speaker", seed=0)
    vit = save_vit_age_gender(tmp_path / "vit", demo_config(), seed=1)
    env = {"DATASET": "mavceleb-v3", "ROOT": str(root), "WORK": str(tmp_path / "work"),
           "WEIGHTS": f"--weights speaker-ecapa={speaker} --weights vit-age-gender={vit}",
           "FACE_ENCODERS": "vit-age-gender", "HEAD_WORKERS": "1", "TRAIN_ARGS": "--epochs 2",
           "EXTRACT_ARGS": "--workers 0 --no-progress"}
    run = shell(REPO / "scripts" / "submission.sh", tmp_path, env)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "Traceback" not in out
    assert "voice-age-gender-ecapa: no trained model in WEIGHTS (it is not published" in out
    lacking = "no voice age-gender features; heads not pretrained on VoxCeleb2"
    for line in (f"English heard scored with {lacking}", f"German heard scored with {lacking}",
                 f"English unheard scored with encoders that heard English (weight set full); {lacking}",
                 f"German unheard scored with encoders that heard German (weight set full); {lacking}"):
        assert f"not as published: {line}" in out, out
    assert "mean" in out and (tmp_path / "submission.zip").is_file()  # the EER table: ground truth was found
    check = subprocess.run([str(Path(sys.executable).parent / "fva"), "submission", "validate",
                            str(tmp_path / "submission.zip"), "--trials", str(splits)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


# ------------------------------------------------------------------------------ the FAME 2026 recipe


def world_config(tmp_path: Path) -> Path:
    """The shipped world config (recipes/fame2026/conf/world.yaml) pointed at a world and stand-in models
    written under ``tmp_path``; the real public speaker model stands in for the published one when it is here."""
    import yaml

    from fva.synth.world import write_world
    from fva.synth.checkpoints import write_demo_checkpoints

    world = write_world(tmp_path / "world")
    models = write_demo_checkpoints(tmp_path / "models", names=("speaker-ecapa", "vit-age-gender"))
    public = REPO.parent / "shared" / "models" / "spkrec-ecapa-voxceleb"
    conf = REPO / "recipes" / "fame2026" / "conf"
    cfg = yaml.safe_load((conf / "world.yaml").read_text())
    root = tmp_path / "world"
    cfg["work"] = str(tmp_path / "work")
    cfg["data"].update(mavceleb=str(root / "mavceleb_v3"),
                       mavceleb_lists=str(root / "face_voice_association_splits" / "v3"),
                       voxceleb2=str(root / "voxceleb2"), commonvoice=str(root / "commonvoice"))
    cfg["weights"].update(speaker_ecapa=str(public if public.is_dir() else models["speaker-ecapa"]),
                          vit_age_gender=str(models["vit-age-gender"]), lid=str(world.lid_model))
    cfg["heads"]["config"] = str(conf / "world-heads.yaml")
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert world.voxceleb2 and path.is_file()
    return path


def tree_times(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.lstat().st_mtime_ns for p in folder.rglob("*")}


def test_fame2026_recipe_end_to_end_on_a_synthetic_world_resumes_without_redoing(tmp_path):
    import json

    import yaml

    from fva.extract.cache import open_cache
    from fva.layout import manifest_records

    config = world_config(tmp_path)
    script = REPO / "recipes" / "fame2026" / "run.sh"
    work = tmp_path / "work"
    first = shell(script, tmp_path, {}, "--config", str(config), "--stop-stage", "4")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "== stage 5" not in first.stdout and (work / ".done" / "manifests").is_file()
    rest = shell(script, tmp_path, {}, "--config", str(config))
    out = rest.stdout + rest.stderr
    assert rest.returncode == 0, out
    # stopped after stage 4 and run again: stages 1-4 redo nothing
    for item in ("lid", "speaker-english-unheard", "speaker-german-unheard", "age-gender-full",
                 "age-gender-english-unheard", "age-gender-german-unheard", "manifests"):
        assert f"{item}: done before, skipped" in rest.stdout, item
    # stage 1: a language per voted video
    labels = (work / "lid" / "vox2_lang.tsv").read_text().splitlines()
    assert labels[0] == "key\tlanguage\tconfidence" and len(labels) > 1
    # stages 2-3: the encoders trained per set
    for s in ("english-unheard", "german-unheard"):
        assert (work / "models" / f"speaker-ecapa-{s}" / "hyperparams.yaml").is_file()
    for s in ("full", "english-unheard", "german-unheard"):
        meta = json.loads((work / "models" / f"voice-age-gender-{s}" / "fva_model.json").read_text())
        assert meta["kind"] == "voice-age-gender-ecapa"
    # stage 5: each set's caches side by side, with that set's weights; faces linked to the full set's
    cache = work / "cache"
    ids = {}
    for s in ("full", "english-unheard", "german-unheard"):
        for dataset, subset in (("mavceleb-v3", "train"), ("mavceleb-v3", "test"), ("voxceleb2", "dev")):
            folder = cache / dataset / f"{subset}-{s}"
            for encoder in ("speaker-ecapa", "voice-age-gender-ecapa"):
                with open_cache(folder / encoder) as table:
                    assert table.attrs["weight_set"] == s and len(table) > 0
                    ids.setdefault((s, encoder), set()).add(table.attrs["weights_id"])
            assert (folder / "vit-age-gender").is_symlink() == (s != "full")
        # every training language in every set's MAV-Celeb training cache
        languages = {r.language for r in manifest_records(cache / "mavceleb-v3" / f"train-{s}").values()}
        assert languages == {"English", "German"}
    assert all(len(v) == 1 for v in ids.values())  # one identity per set and encoder across the datasets
    for encoder in ("speaker-ecapa", "voice-age-gender-ecapa"):
        assert len({next(iter(ids[s, encoder])) for s in ("full", "english-unheard", "german-unheard")}) == 3
    # stages 6-7: pretrained heads (not fine-tuned) and fine-tuned ones, per set
    for s in ("full", "english-unheard", "german-unheard"):
        pre = json.loads((work / "exp" / f"pretrain-{s}" / "experiment.json").read_text())
        tuned = json.loads((work / "exp" / f"finetune-{s}" / "experiment.json").read_text())
        assert pre["weight_set"] == tuned["weight_set"] == s
        assert pre["fine_tuned"] is False and pre["pretrain"]["dataset"] == "voxceleb2"
        assert tuned["fine_tuned"] is True and tuned["init"]["exp"].endswith(f"pretrain-{s}")
        assert len(list((work / "exp" / f"finetune-{s}").glob("fold*/checkpoint.pt"))) == 7
    # stage 8: the published selection, a valid zip, the four test EERs and the dev-EER table
    plan = yaml.safe_load((work / "plan.yaml").read_text())
    assert plan["files"] == {"English_heard": str(work / "exp" / "pretrain-full"),
                             "German_heard": str(work / "exp" / "pretrain-english-unheard"),
                             "English_unheard": str(work / "exp" / "finetune-english-unheard"),
                             "German_unheard": str(work / "exp" / "finetune-german-unheard")}
    assert f"{work / 'submission.zip'}: valid" in rest.stdout
    assert "not as published" not in out  # every file meets its published condition
    assert "mean" in rest.stdout and "| finetune-german-unheard | german-unheard | yes |" in rest.stdout
    # run again: nothing is redone, no file under the work folder changes
    before = tree_times(work)
    again = shell(script, tmp_path, {}, "--config", str(config), "--stage", "1")
    assert again.returncode == 0, again.stdout + again.stderr
    assert tree_times(work) == before
    assert again.stdout.count("done before, skipped") == 7 + 9 + 6 + 1
