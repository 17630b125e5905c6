"""Shared fixtures: tiny dataset trees in the real folder layouts (file contents do not matter here), and the
synthetic stage-1 cache of the head tests (``synth``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """An inconsistent stack (torch and torchaudio of two releases, deepface without its PyTorch backend)
    stops the run with fva's one line, before any test module imports torchaudio into a ctypes traceback."""
    from fva.environment import EnvironmentMismatch, require_deepface_pytorch, require_torchaudio

    try:
        require_torchaudio()
        require_deepface_pytorch()
    except EnvironmentMismatch as err:
        pytest.exit(f"Error: {err}", returncode=2)
    no_network()


LOOPBACK = ("localhost", "127.0.0.1", "::1", "0.0.0.0", "")


def no_network() -> None:
    """No test reaches the network: name lookups and connections to anything but this machine fail at once
    with a clear error (tests patch the libraries' download functions instead; servers and process groups on
    the loopback interface still work)."""
    import socket

    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOOPBACK and not str(host).startswith("127."):
            raise OSError(f"the tests do not reach the network (looked up {host!r}); patch the download instead")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and self.family in (socket.AF_INET, socket.AF_INET6) and host not in LOOPBACK \
                and not host.startswith("127."):
            raise OSError(f"the tests do not reach the network (connect to {host!r}); patch the download instead")
        return real_connect(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_mavceleb(root: Path, languages=("English", "German"), identities=("id0001", "id0002", "id0003"),
                  frame_digits: int = 9, test_on_disk: str = "voice", lists_prefix: str | None = None) -> Path:
    """A MAV-Celeb tree: 2 videos x 2 clips and 2 frames per identity and language, train lists, and per
    language a 4-trial test list whose media sit under <Lang>_test/<test_on_disk>/."""
    for identity in identities:
        for lang in languages:
            lines = []
            for v in range(2):
                for u in range(2):
                    voice = f"{identity}/{lang}/vid{lang[:2]}{v}/{u:05d}.wav"
                    face = f"{identity}/{lang}/vid{lang[:2]}{v}/{(u * 25 + 7):0{frame_digits}d}.jpg"
                    touch(root / "voices" / voice)
                    touch(root / "faces" / face)
                    lines.append(f"{voice} {face}\n")
            with (root / f"{lang}_train.txt").open("a") as fh:
                fh.writelines(lines)
    face_dir = "face" if test_on_disk == "voice" else "faces"
    for lang in languages:
        rows = []
        for i in range(4):
            touch(root / f"{lang}_test" / test_on_disk / lang / f"{i:05d}.wav")
            touch(root / f"{lang}_test" / face_dir / lang / f"{i:05d}.jpg")
            prefix = lists_prefix if lists_prefix is not None else f"{lang}_test/"
            rows.append(f"k{lang[:2].lower()}{i:05d} {prefix}voices/{lang}/{i:05d}.wav "
                        f"{prefix}faces/{lang}/{i:05d}.jpg\n")
        (root / f"{lang}_test.txt").write_text("".join(rows))
    return root


@pytest.fixture
def mav_root(tmp_path: Path) -> Path:
    return make_mavceleb(tmp_path / "mav")


@pytest.fixture
def vox_root(tmp_path: Path) -> Path:
    root = tmp_path / "vox2"
    for identity in ("id00012", "id00015"):
        for video in ("21Uxsk56VDQ", "ZZZyyy00001"):
            for u in (1, 2):
                touch(root / "dev" / "aac" / identity / video / f"{u:05d}.m4a")
                touch(root / "dev" / "mp4" / identity / video / f"{u:05d}.mp4")
    return root


CV_HEADER = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment\n"


@pytest.fixture
def cv_root(tmp_path: Path) -> Path:
    """Two locales: de in the newer gender vocabulary, en in the older one."""
    root = tmp_path / "cv"
    rows = {
        "de": [("c1", "twenties", "male_masculine"), ("c1", "twenties", "male_masculine"),
               ("c2", "fourties", "female_feminine"), ("c3", "", "do_not_wish_to_say"),
               ("c4", "sixties", "non-binary")],
        "en": [("e1", "thirties", "male"), ("e2", "teens", "female"), ("e3", "nineties", "other"),
               ("e4", "bogus", "")],
    }
    for locale, items in rows.items():
        lines = [CV_HEADER]
        for i, (client, age, gender) in enumerate(items):
            name = f"common_voice_{locale}_{i}.mp3"
            touch(root / locale / "clips" / name)
            lines.append(f"{client}\t{name}\ts{i}\tEin \"Satz\".\t\t2\t0\t{age}\t{gender}\t\t\t{locale}\t\n")
        (root / locale / "validated.tsv").write_text("".join(lines))
    return root


def assert_user_error(result, *fragments: str) -> None:
    """Exit 2, one 'Error:' line that names what is wrong, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """The synthetic cache root with train-full and test-full, a FAME test list, and the stored features
    (:func:`fva.synth.testing.synthetic_heads_cache`), once per test module that asks for it."""
    from fva.synth.testing import synthetic_heads_cache

    return synthetic_heads_cache(tmp_path_factory.mktemp("heads"))


def replayable_seed(default: int) -> int:
    """The seed of a randomised test: ``FVA_TEST_SEED`` when set (to replay a failure), else ``default``;
    printed, so a failing test's captured output names it."""
    seed = int(os.environ.get("FVA_TEST_SEED", default))
    print(f"seed {seed} (replay with FVA_TEST_SEED={seed})")
    return seed
