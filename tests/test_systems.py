"""Every head system through the one trainer: paired batches, the system registry and its config,
checkpoints that rebuild each system, and ``fva compare`` training each system on the same fold of the
synthetic stage-1 cache (the one tests/test_heads.py builds) to well below chance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from conftest import assert_user_error
from fva.heads.config import load_config
from fva.heads.features import InMemoryRows
from fva.heads.trainer import paired_faces, train_epoch
from test_heads import CONFIG, run, synth  # noqa: F401  (synth: the module fixture)

SYSTEMS = ["fame2026", "xm-align", "fop", "dual-fop", "contrastive", "cross-attention"]


# ------------------------------------------------------------------------------------------- paired batches


def test_paired_faces_draw_a_face_of_the_same_identity_uniformly():
    face_labels = np.array([2, 0, 1, 2, 0, 2, 1])
    voice_labels = np.repeat(np.array([0, 1, 2, 3]), 3000)
    picks = paired_faces(voice_labels, face_labels, np.random.default_rng(0))
    has_face = voice_labels != 3
    assert (picks[~has_face] == -1).all()  # identity 3 has no face
    assert (face_labels[picks[has_face]] == voice_labels[has_face]).all()
    for label in (0, 1, 2):  # each face of the identity about equally often
        counts = np.bincount(picks[voice_labels == label], minlength=len(face_labels))[face_labels == label]
        assert counts.min() > 0.8 * counts.mean()


class _Recorder(torch.nn.Module):
    """A 'paired' system that records its batches."""

    pairing = "paired"

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.batches = []

    def loss(self, batch):
        self.batches.append(batch)
        return self.w.sum() * 0 + batch.voice.sum() * 0 + self.w.square().sum()


class _Rows(InMemoryRows):
    def __init__(self, data, labels):
        self.data, self.labels = data, labels


def test_paired_epochs_pair_same_identity_rows_and_repeat_with_new_pairs():
    rng = np.random.default_rng(1)
    voice_labels = rng.integers(0, 5, 40)
    face_labels = np.concatenate([np.arange(5), rng.integers(0, 5, 25)])
    voice = _Rows(np.arange(40, dtype=np.float32)[:, None], voice_labels)
    face = _Rows(np.arange(30, dtype=np.float32)[:, None], face_labels)
    model = _Recorder()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    train_epoch(model, optimiser, voice, face, batch_size=8, seed=[0], epoch=0, block_rows=4, buffer_blocks=2,
                pair_repeats=3)
    seen_voices, pairs = [], set()
    for b in model.batches:
        assert torch.equal(b.voice_labels, b.face_labels) and len(b.voice) == len(b.face)
        assert (voice_labels[b.voice[:, 0].long().numpy()] == b.voice_labels.numpy()).all()
        assert (face_labels[b.face[:, 0].long().numpy()] == b.face_labels.numpy()).all()
        seen_voices += b.voice[:, 0].long().tolist()
        pairs |= set(zip(b.voice[:, 0].long().tolist(), b.face[:, 0].long().tolist()))
    assert sorted(seen_voices) == sorted(list(range(40)) * 3)  # every voice once per repeat
    assert len(pairs) > 80  # re-paired: most repeats meet another face


# ------------------------------------------------------------------------------------------------ configs


def test_unknown_system_and_unknown_system_option_are_one_line_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"system": "nope"}}))
    with pytest.raises(Exception, match="unknown head system 'nope'; known systems: .*fame2026"):
        load_config(path)
    path.write_text(yaml.safe_dump({"model": {"system": "fame2026", "params": {"lambda": 1}}}))
    with pytest.raises(Exception, match="unknown config key 'lambda'"):
        load_config(path)
