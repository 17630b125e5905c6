"""Published weights fetched by each library's own download code, offline refusals, and identities.

The network is cut at the lowest sensible level: huggingface_hub's file download (used by speechbrain's fetch
and by snapshot_download) with its repository listing calls, and deepface's downloader (``gdown.download``
after a ``requests.head`` reachability check). The fakes write small checkpoints in each source's real on-disk
format, which the encoders then load through their real loading code.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("DEEPFACE_BACKEND_ENGINE", "pytorch")

from fva.errors import FvaError  # noqa: E402
from fva.extract import weights as W  # noqa: E402
from fva.synth.testing import run_cli  # noqa: E402
from conftest import assert_user_error  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_SPEAKER = SHARED / "models" / "spkrec-ecapa-voxceleb"
SHA = "0123456789abcdef0123456789abcdef01234567"


# ------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Every library's home inside tmp_path, online (HF_HUB_OFFLINE read at import: the constant is set too)."""
    from huggingface_hub import constants

    h = SimpleNamespace(deepface=tmp_path / "deepface", models=tmp_path / "fva-models", hub=tmp_path / "hf" / "hub")
    monkeypatch.setenv("DEEPFACE_HOME", str(h.deepface))
    monkeypatch.setenv("FVA_MODELS", str(h.models))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(h.hub))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(h.hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # restored (removed) after the test, also when fva sets it
    monkeypatch.setenv("FVA_OFFLINE", "0")
    return h


@pytest.fixture(scope="module")
def hub_files(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """What the fake Hub serves: repo id -> {file name in the repository: local file}."""
    from fva.synth.checkpoints import write_organiser_ecapa
    from fva.extract.encoders.vit_age_gender import save_vit_age_gender, tiny_config
    from fva.train.lid import write_lid_model

    base = tmp_path_factory.mktemp("hub-src")
    vit = save_vit_age_gender(base / "vit", tiny_config())
    lid = write_lid_model(base / "lid")
    organiser = write_organiser_ecapa(base / "organiser-ecapa", pretrained_path=W.ORGANISER_VOICE_HUB_ID)
    repos = {W.VIT_HUB_ID: {p.name: p for p in vit.iterdir()},
             W.LID_HUB_ID: {p.name: p for p in lid.iterdir()},
             W.ORGANISER_VOICE_HUB_ID: {p.name: p for p in organiser.iterdir()}}
    if REAL_SPEAKER.is_dir():  # the public folder as speechbrain collected it: label_encoder.txt on the Hub
        repos[W.SPEAKER_HUB_ID] = {("label_encoder.txt" if p.name == "label_encoder.ckpt" else p.name): p
                                   for p in REAL_SPEAKER.glob("*") if p.suffix in (".yaml", ".ckpt")}
    return repos


@pytest.fixture
def fake_hub(homes, hub_files, monkeypatch):
    """huggingface_hub's downloads and repository listing, writing the real cache layout; records each call."""
    import huggingface_hub
    from huggingface_hub import _snapshot_download, constants
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.hf_api import HfApi, ModelInfo, RepoFile

    calls = SimpleNamespace(downloads=[], listings=[])

    def hf_hub_download(repo_id, filename, *, revision=None, cache_dir=None, local_files_only=False, **kw):
        calls.downloads.append(dict(repo_id=repo_id, filename=filename, revision=revision, cache_dir=cache_dir,
                                    local_files_only=local_files_only))
        storage = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
        target = storage / "snapshots" / SHA / filename
        if local_files_only or constants.HF_HUB_OFFLINE:
            if target.is_file():
                return str(target)
            raise LocalEntryNotFoundError(f"{filename} of {repo_id} is not in the cache")
        if filename not in hub_files.get(repo_id, {}):
            raise EntryNotFoundError(f"404 Client Error: {repo_id}/{filename}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(hub_files[repo_id][filename], target)
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / "main").write_text(SHA)
        return str(target)

    def repo_info(self, repo_id, **kw):
        calls.listings.append(repo_id)
        if constants.HF_HUB_OFFLINE:
            raise AssertionError("repo_info called offline")
        return ModelInfo(id=repo_id, sha=SHA)

    def list_repo_tree(self, repo_id, path_in_repo=None, **kw):
        calls.listings.append(repo_id)
        return [RepoFile(path=name, size=p.stat().st_size, oid=f"oid-{name}") for name, p in hub_files[repo_id].items()]

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)  # speechbrain's fetch calls this
    monkeypatch.setattr(_snapshot_download, "hf_hub_download", hf_hub_download)  # snapshot_download calls this
    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    monkeypatch.setattr(HfApi, "list_repo_tree", list_repo_tree)
    calls.network = lambda: [c for c in calls.downloads if not c["local_files_only"]] + calls.listings
    return calls


@pytest.fixture(scope="module")
def vgg_state_file(tmp_path_factory) -> Path:
    """deepface's full VGG-Face architecture (the only size it has), default init, as a state-dict file."""
    from fva.extract.encoders.vggface import use_pytorch_backend

    use_pytorch_backend()
    from deepface.models.facial_recognition.pytorch.VGGFace import base_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg_face_weights.pth"
    torch.save(base_model().state_dict(), path)
    return path


@pytest.fixture
def fake_deepface(homes, vgg_state_file, monkeypatch):
    """deepface's network calls: requests.head (its reachability check) and gdown.download."""
    import gdown
    import requests

    calls = SimpleNamespace(heads=[], downloads=[], fail=None)

    def head(url, **kw):
        calls.heads.append(url)
        if calls.fail:
            raise requests.ConnectionError(calls.fail)
        return SimpleNamespace(status_code=200)

    def download(url, output, quiet=False, **kw):
        calls.downloads.append((url, output))
        os.link(vgg_state_file, output)
        return output

    monkeypatch.setattr(requests, "head", head)
    monkeypatch.setattr(gdown, "download", download)
    return calls


def listed(*flags) -> dict[str, dict]:
    result = run_cli(*flags, "weights", "list", "--json")
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.output)}


def source_lines(result) -> list[str]:
    """fva's one line per source, without the libraries' own download messages and progress bars."""
    return [line for line in result.stdout.splitlines() if line.split(" ", 1)[0] in W.SOURCES]


def need_speaker() -> None:
    if not REAL_SPEAKER.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{REAL_SPEAKER} is missing: CI must run beside shared/")
        pytest.skip(f"{REAL_SPEAKER} not present")


def face_manifest(tmp_path: Path) -> Path:
    import numpy as np
    from PIL import Image

    from fva.data.records import Manifest, MediaRecord

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "f.jpg")
    path = tmp_path / "faces.jsonl"
    Manifest("faces", str(tmp_path), "train", "full",
             [MediaRecord(key="f", identity="id1", language="English", modality="face", path="f.jpg")]).write(path)
    return path


# --------------------------------------------------------------------------------------------------- fetching
def test_fetch_all_then_offline_loads(homes, fake_hub, fake_deepface, monkeypatch):
    """'fva weights fetch' fetches every published source with its library's download; offline afterwards each
    encoder loads the fetched copy through its real loading code, with the identity 'fva weights list' shows."""
    need_speaker()
    from deepface.models.facial_recognition.pytorch.VGGFace import WEIGHTS_URL

    result = run_cli("weights", "fetch")
    assert result.exit_code == 0, result.output
    lines = source_lines(result)  # deepface and huggingface_hub report their downloads in between
    assert [line.split()[0] for line in lines] == ["speaker-ecapa", "vggface", "vit-age-gender", "lid"]

    # speechbrain fetched the repositories' own files by hub id; the files link into fva's models home
    got = {(c["repo_id"], c["filename"]) for c in fake_hub.downloads}
    assert {(W.SPEAKER_HUB_ID, f) for f in ("hyperparams.yaml", "embedding_model.ckpt", "classifier.ckpt",
                                            "mean_var_norm_emb.ckpt", "label_encoder.txt")} <= got
    assert {(W.LID_HUB_ID, f) for f in ("hyperparams.yaml", "embedding_model.ckpt", "classifier.ckpt",
                                        "label_encoder.txt")} <= got
    assert {(W.VIT_HUB_ID, f) for f in ("config.json", "model.safetensors", "preprocessor_config.json")} <= got
    assert all(Path(c["cache_dir"]) == homes.hub for c in fake_hub.downloads if c["repo_id"] == W.VIT_HUB_ID)
    speaker_dir = homes.models / "speechbrain_spkrec-ecapa-voxceleb"
    assert (speaker_dir / "embedding_model.ckpt").is_file() and (homes.models / "speechbrain_lang-id-voxlingua107-ecapa"
                                                                  / "classifier.ckpt").is_file()
    # deepface downloaded its own URL into $DEEPFACE_HOME/.deepface/weights
    target = homes.deepface / ".deepface" / "weights" / "vgg_face_weights.pth"
    assert fake_deepface.downloads == [(WEIGHTS_URL[0], str(target))] and target.is_file()

    table = listed()
    assert all(table[n]["present"] for n in ("speaker-ecapa", "vggface", "vit-age-gender", "lid"))
    assert not table["voice-age-gender-ecapa"]["present"] and not table["voice-age-gender-ecapa"]["published"]
    for line, name in zip(lines, ("speaker-ecapa", "vggface", "vit-age-gender", "lid")):
        assert table[name]["path"] in line and table[name]["weights_id"] in line
    assert Path(table["speaker-ecapa"]["path"]) == speaker_dir
    assert table["vggface"]["path"] == str(target)

    # offline: everything loads from the local copies; nothing touches the (fake) network
    before = len(fake_hub.network())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from fva.extract.encoders.speaker_ecapa import SpeakerEcapa
    from fva.extract.encoders.vit_age_gender import ViTAgeGender
    from fva.train.lid import LidModel

    speaker = SpeakerEcapa()
    assert speaker.dim == 6144 and speaker.weights_id == table["speaker-ecapa"]["weights_id"]
    assert speaker.weights_id.startswith(W.SPEAKER_HUB_ID + "@")
    vit = ViTAgeGender()
    assert vit.weights_id == table["vit-age-gender"]["weights_id"]
    assert vit.folder == Path(table["vit-age-gender"]["path"])
    lid = LidModel(W.LID_HUB_ID, "cpu")
    assert list(lid.labels.lab2ind) == ["de: German", "en: English", "fr: French"]
    assert len(fake_hub.network()) == before and len(fake_deepface.downloads) == 1
    assert listed("--offline") == table


def test_vggface_encoder_downloads_when_missing(homes, fake_deepface):
    """The encoder itself (fva extract without --weights) lets deepface download; then the file is kept."""
    from deepface.models.facial_recognition.pytorch.VGGFace import WEIGHTS_URL

    from fva.extract.encoders.vggface import VggFace

    vgg = VggFace()
    target = homes.deepface / ".deepface" / "weights" / "vgg_face_weights.pth"
    assert fake_deepface.heads == [WEIGHTS_URL[0]] and fake_deepface.downloads == [(WEIGHTS_URL[0], str(target))]
    assert vgg.path == target and vgg.dim == 4096
    assert vgg.weights_id == listed()["vggface"]["weights_id"] == W.deepface_identity(target)
    result = run_cli("weights", "fetch", "--encoders", "vggface")
    assert result.exit_code == 0 and vgg.weights_id in result.output
    assert len(fake_deepface.downloads) == 1  # already there: not downloaded again


def test_flag_organiser_sources_fetched_by_their_libraries_then_offline(homes, fake_hub, fake_deepface, monkeypatch):
    """'fva weights fetch --encoders ecapa-embedding,vggface-keras': speechbrain's fetch of the organisers' hub
    model (its own files, into fva's models home) and deepface's download of the one VGG-Face file; offline
    afterwards both encoders load those copies with the identities 'fva weights list' shows."""
    from deepface.models.facial_recognition.pytorch.VGGFace import WEIGHTS_URL

    result = run_cli("weights", "fetch", "--encoders", "ecapa-embedding,vggface-keras")
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in source_lines(result)] == ["ecapa-embedding", "vggface-keras"]
    got = {(c["repo_id"], c["filename"]) for c in fake_hub.downloads}
    assert {(W.ORGANISER_VOICE_HUB_ID, f) for f in ("hyperparams.yaml", "embedding_model.ckpt", "classifier.ckpt",
                                                    "label_encoder.txt")} <= got
    assert {c["repo_id"] for c in fake_hub.downloads} == {W.ORGANISER_VOICE_HUB_ID}
    folder = homes.models / "yangwang825_ecapa-tdnn-vox2"
    target = homes.deepface / ".deepface" / "weights" / "vgg_face_weights.pth"
    assert (folder / "embedding_model.ckpt").is_file()
    assert fake_deepface.downloads == [(WEIGHTS_URL[0], str(target))]
    table = listed()
    assert table["ecapa-embedding"]["source"] == f"speechbrain {W.ORGANISER_VOICE_HUB_ID}"
    assert table["ecapa-embedding"]["path"] == str(folder)
    assert table["vggface-keras"]["path"] == table["vggface"]["path"] == str(target)  # one file, two encoders

    before = len(fake_hub.network())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline now: the encoders load the copies 'weights list' shows
    from fva.extract.encoders.base import get_encoder_class

    loaded = {name: get_encoder_class(name)() for name in ("ecapa-embedding", "vggface-keras")}
    assert {n: e.weights_id for n, e in loaded.items()} == {n: table[n]["weights_id"] for n in loaded}
    assert loaded["ecapa-embedding"].dim == 192 and loaded["vggface-keras"].path == target
    assert loaded["ecapa-embedding"].weights_id.startswith(W.ORGANISER_VOICE_HUB_ID + "@")
    assert len(fake_hub.network()) == before and len(fake_deepface.downloads) == 1


def test_flag_organiser_voice_offline_without_copy_is_one_line(homes, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("extract", "--manifest", face_manifest(tmp_path), "--cache", tmp_path / "c",
                     "--encoders", "ecapa-embedding")
    assert_user_error(result, "ecapa-embedding: speechbrain's yangwang825/ecapa-tdnn-vox2 is not in")
    assert "fva weights fetch --encoders ecapa-embedding" in result.output


def test_fetch_reports_unpublished_without_failing(homes, fake_hub):
    result = run_cli("weights", "fetch", "--encoders", "voice-age-gender-ecapa,vit-age-gender")
    assert result.exit_code == 0, result.output
    first, second = source_lines(result)
    assert first.startswith("voice-age-gender-ecapa") and "not published" in first
    assert "fva train-encoder age-gender" in first
    assert second.startswith("vit-age-gender") and str(homes.hub) in second
    assert not any(c["repo_id"] == W.LID_HUB_ID for c in fake_hub.downloads)  # --encoders given: no LID


def test_voice_age_gender_not_published(homes, tmp_path):
    from fva.extract.encoders.voice_age_gender import VoiceAgeGenderEcapa

    with pytest.raises(FvaError, match="no published weights; train them with 'fva train-encoder age-gender'"):
        VoiceAgeGenderEcapa()
    result = run_cli("extract", "--manifest", face_manifest(tmp_path), "--cache", tmp_path / "c",
                     "--encoders", "voice-age-gender-ecapa", "--no-progress")
    assert_user_error(result, "voice-age-gender-ecapa: no published weights", "fva train-encoder age-gender")


def test_unknown_source(homes):
    assert_user_error(run_cli("weights", "fetch", "--encoders", "wav2face"), "'wav2face'", "choose from")


# ---------------------------------------------------------------------------------------------------- offline
OFFLINE_LINES = {
    "vggface": "vggface: deepface's vgg_face_weights.pth is not in {deepface}/.deepface/weights and fva is offline; "
               "run 'fva weights fetch --encoders vggface' where the internet is reachable, or pass --weights FILE",
    "vit-age-gender": "vit-age-gender: abhilash88/age-gender-prediction is not in the Hugging Face cache ({hub}) "
                      "and fva is offline; run 'fva weights fetch --encoders vit-age-gender' where the internet "
                      "is reachable, or pass --weights DIR",
    "speaker-ecapa": "speaker-ecapa: speechbrain's speechbrain/spkrec-ecapa-voxceleb is not in "
                     "{models}/speechbrain_spkrec-ecapa-voxceleb and fva is offline; run 'fva weights fetch "
                     "--encoders speaker-ecapa' where the internet is reachable, or pass --weights DIR",
    "lid": "lid: speechbrain's speechbrain/lang-id-voxlingua107-ecapa is not in "
           "{models}/speechbrain_lang-id-voxlingua107-ecapa and fva is offline; run 'fva weights fetch "
           "--encoders lid' where the internet is reachable, or pass --weights DIR",
}


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "--offline"])
def test_offline_refuses_with_one_line(homes, fake_hub, fake_deepface, monkeypatch, tmp_path, how):
    """Offline without a local copy: one line naming the source and the fetch command, exit 2, no download."""
    flags = ["--offline"] if how == "--offline" else []
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = {n: line.format(deepface=homes.deepface, hub=homes.hub, models=homes.models)
                for n, line in OFFLINE_LINES.items()}
    for name, line in expected.items():
        result = run_cli(*flags, "weights", "fetch", "--encoders", name)
        assert_user_error(result, line)
        assert result.output.strip() == f"Error: {line}"
    manifest = face_manifest(tmp_path)
    for name in ("vggface", "vit-age-gender"):  # fva extract without --weights
        result = run_cli(*flags, "extract", "--manifest", manifest, "--cache", tmp_path / "c", "--encoders", name,
                         "--no-progress")
        assert_user_error(result, expected[name])
    assert fake_hub.network() == [] and fake_deepface.heads == [] and fake_deepface.downloads == []
    assert not (homes.deepface / ".deepface" / "weights" / "vgg_face_weights.pth").exists()
    table = listed(*flags)
    assert not any(row["present"] for row in table.values())
    if how == "--offline":  # the switch is in the environment, for child processes
        assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["FVA_OFFLINE"] == "1"


def test_offline_switch_sets_environment(homes, monkeypatch):
    from huggingface_hub import constants

    assert not W.is_offline()
    W.go_offline()
    assert W.is_offline() and constants.HF_HUB_OFFLINE is True
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["FVA_OFFLINE"] == "1"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert W.is_offline()  # FVA_OFFLINE alone
    monkeypatch.setenv("FVA_OFFLINE", "no")
    assert not W.is_offline()


# ------------------------------------------------------------------------------------------------ online failures
def test_online_failures_are_one_line(homes, fake_hub, fake_deepface, monkeypatch):
    import httpx2
    import huggingface_hub
    from huggingface_hub.hf_api import HfApi

    fake_deepface.fail = "Name or service not known"
    result = run_cli("weights", "fetch", "--encoders", "vggface")
    assert_user_error(result, "vggface: could not download deepface's vgg_face_weights.pth",
                      "check the connection and run 'fva weights fetch --encoders vggface' again",
                      "--weights FILE")
    assert not (homes.deepface / ".deepface" / "weights" / "vgg_face_weights.pth").exists()

    def unreachable(*args, **kwargs):
        raise httpx2.ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(HfApi, "repo_info", unreachable)
    assert_user_error(run_cli("weights", "fetch", "--encoders", "vit-age-gender"),
                      "vit-age-gender: could not download abhilash88/age-gender-prediction", "--weights DIR")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    assert_user_error(run_cli("weights", "fetch", "--encoders", "speaker-ecapa"),
                      "speaker-ecapa: could not download speechbrain's speechbrain/spkrec-ecapa-voxceleb",
                      "'fva weights fetch --encoders speaker-ecapa' again")
    with pytest.raises(FvaError, match="could not download speechbrain's speechbrain/lang-id-voxlingua107-ecapa"):
        W.fetch("lid")


def test_identity_functions_match_encoders_on_local_folders(tmp_path):
    """Local --weights folders: the identity from the files equals the loaded encoder's (one function)."""
    from fva.extract.encoders.vit_age_gender import ViTAgeGender, save_vit_age_gender, tiny_config

    folder = save_vit_age_gender(tmp_path / "vit", tiny_config())
    assert ViTAgeGender(str(folder)).weights_id == W.vit_identity(str(folder), folder)
    assert W.vit_identity(str(folder), folder).startswith("vit@")
