"""FOP (the official FAME baseline) and the dual-branch FOP: losses against plain loops (values and
gradients), the official-checkpoint import against a reference forward written from the published
architecture with raw tensor ops, the frozen branch of the dual FOP, and short trainings on a separable
synthetic problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fva.errors import FvaError
from fva.heads.config import ModelConfig
from fva.heads.fop_import import import_fop
from fva.heads.experiment import read_experiment, save_checkpoint
from fva.heads.systems import get_system
from fva.heads.systems.base import Batch
from fva.heads.systems.fop import DualFOP, FOP, multi_similarity_loss, opl_loss
from fva.synth.testing import (FOP_CLASSES, FOP_DIM, FOP_FACE_IN, FOP_GATE, FOP_VOICE_IN, official_state,
                         reference_forward, write_feature_cache, write_official)

VOICE_IN, FACE_IN, DIM, GATE, CLASSES = FOP_VOICE_IN, FOP_FACE_IN, FOP_DIM, FOP_GATE, FOP_CLASSES


# ------------------------------------------------------------------------------------------------ losses


def loop_opl(features: torch.Tensor, labels: list[int], gamma: float) -> torch.Tensor:
    z = [f / torch.sqrt((f * f).sum()) for f in features]
    pos, neg = [], []
    for i in range(len(z)):
        for j in range(len(z)):
            c = (z[i] * z[j]).sum()
            if labels[i] == labels[j] and i != j:
                pos.append(c)
            elif labels[i] != labels[j]:
                neg.append(torch.abs(c))
    pos_mean = sum(pos) / len(pos) if pos else 0.0
    neg_mean = sum(neg) / len(neg) if neg else 0.0
    return 1.0 - pos_mean + gamma * neg_mean


def loop_ms(sim: torch.Tensor, mask: list[list[bool]], alpha, beta, theta, gamma) -> torch.Tensor:
    total = 0.0
    for i in range(sim.shape[0]):
        pos = [sim[i, j] for j in range(sim.shape[1]) if mask[i][j]]
        neg = [sim[i, j] for j in range(sim.shape[1]) if not mask[i][j]]
        term = torch.log(1.0 + sum(torch.exp(-alpha * (s - theta)) for s in pos) + sim.new_zeros(())) / alpha
        term = term + torch.log(1.0 + sum(torch.exp(beta * (s - theta)) for s in neg) + sim.new_zeros(())) / beta
        term = term + 2.0 - (sum(pos) / len(pos) if pos else 0.0)
        term = term + gamma * (sum(torch.abs(s) for s in neg) / len(neg) if neg else 0.0)
        total = total + term
    return total / sim.shape[0]


@pytest.mark.parametrize("labels", [[0, 1, 0, 2, 1, 0, 3], [4, 4, 4], [0, 1, 2]])
def test_opl_matches_loop(labels):
    torch.manual_seed(0)
    x = torch.randn(len(labels), 6, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(labels)
    got, want = opl_loss(x, y, 0.7), loop_opl(x, labels, 0.7)
    assert torch.allclose(got, torch.as_tensor(want, dtype=torch.float64), atol=1e-10)
    g_got, = torch.autograd.grad(got, x)
    g_want, = torch.autograd.grad(want, x)
    assert torch.allclose(g_got, g_want, atol=1e-10)


def test_opl_hand_case():
    """Two identical same-identity rows and an orthogonal other identity: the loss is 0."""
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    assert opl_loss(x, torch.tensor([0, 0, 1])).item() == pytest.approx(0.0, abs=1e-7)
    # opposite same-identity rows, parallel different identities: 1 - (-1) + 0.7 * 1
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    assert opl_loss(x, torch.tensor([0, 0, 1])).item() == pytest.approx(2.0 + 0.7 * 1.0, abs=1e-6)


def test_multi_similarity_matches_loop():
    torch.manual_seed(1)
    sim = torch.tanh(torch.randn(6, 5, dtype=torch.float64)).requires_grad_(True)
    mask = torch.rand(6, 5) < 0.4
    mask[0] = True  # a row without negatives
    mask[1] = False  # a row without positives
    args = (2.0, 50.0, 0.6, 0.3)
    got = multi_similarity_loss(sim, mask, *args)
    want = loop_ms(sim, mask.tolist(), *args)
    assert torch.allclose(got, want, atol=1e-10)
    g_got, = torch.autograd.grad(got, sim)
    g_want, = torch.autograd.grad(want, sim)
    assert torch.allclose(g_got, g_want, atol=1e-10)
    assert torch.isfinite(multi_similarity_loss(torch.ones(3, 3) * 0.99, ~torch.eye(3, dtype=torch.bool))).all()


# --------------------------------------------------------------------------------------- official checkpoint


def rebuild(path: Path):
    """A model from its checkpoint file alone, through the system registry (as the trainer's loader does)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    sizes = payload["sizes"]
    model = get_system(payload["model_config"]["system"])(sizes["voice_dim"], sizes["face_dim"], sizes["n_classes"],
                                                          ModelConfig(**payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload


@pytest.mark.parametrize("prefix", ["", "module."])
def test_import_matches_reference_forward(tmp_path, prefix):
    sd = official_state()
    ckpt = write_official(tmp_path / "checkpoint.pth.tar", sd, prefix)
    exp = import_fop(ckpt, tmp_path / "exp", cache=None, dataset="mavceleb-v3", voice_encoders=["spk"],
                     face_encoders=["vggface"], force=False)
    cfg, info = read_experiment(exp)
    assert cfg.model.system == "fop" and cfg.model.params == {"dim": DIM, "gate_dim": GATE}
    assert (cfg.features.voice_encoders, cfg.features.face_encoders) == (["spk"], ["vggface"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.batch_size) == (1e-2, 0.01, 32)
    assert set(info) == {"format", "fva_version", "cache", "dataset", "train_features", "heard", "unheard",
                         "folds", "features"}
    assert info["features"]["voice"]["dims"] == [VOICE_IN] and info["features"]["face"]["dims"] == [FACE_IN]
    model, payload = rebuild(exp / "fold0" / "checkpoint.pt")
    assert isinstance(model, FOP) and payload["epoch"] == 3
    assert model.sizes == {"voice_dim": VOICE_IN, "face_dim": FACE_IN, "n_classes": CLASSES}

    torch.manual_seed(5)
    voice, face = torch.randn(9, VOICE_IN), torch.randn(9, FACE_IN)
    ref = reference_forward(sd, voice, face)
    with torch.no_grad():
        ev, ef = model.embed("voice", voice), model.embed("face", face)
        fused, logits = model(voice, face)
        dist = model.pair_distances(ev, ef)
    for name, got in (("voice", ev), ("face", ef), ("fused", fused), ("logits", logits), ("distance", dist)):
        assert torch.allclose(got.double(), ref[name], atol=1e-5), name
    # batched embedding equals one row at a time (eval mode: running statistics)
    with torch.no_grad():
        single = torch.cat([model.embed("voice", voice[i:i + 1]) for i in range(len(voice))])
    assert torch.allclose(single, ev, atol=1e-6)


def write_cache(folder: Path, encoder: str, modality: str, dim: int) -> None:
    record = ("k0", np.array([-1 if modality == "voice" else 0]), np.zeros((1, dim), dtype=np.float16), {})
    write_feature_cache(folder, encoder, modality, dim, [[record]], weights_id=f"{encoder}@w1")


def test_import_reads_dims_from_cache(tmp_path):
    folder = tmp_path / "cache" / "mavceleb-v3" / "test-full"
    for encoder, modality, dim in (("va", "voice", 5), ("vb", "voice", 7), ("fa", "face", FACE_IN)):
        write_cache(folder, encoder, modality, dim)
    ckpt = write_official(tmp_path / "c.pt", official_state())
    exp = import_fop(ckpt, tmp_path / "exp", cache=tmp_path / "cache", dataset="mavceleb-v3",
                     voice_encoders=["va", "vb"], face_encoders=["fa"], force=False)
    _, info = read_experiment(exp)
    assert info["features"]["voice"] == {"encoders": ["va", "vb"], "dims": [5, 7],
                                         "weights_ids": {"va": "va@w1", "vb": "vb@w1"}}
    assert info["train_features"] == str(folder) and info["cache"] == str((tmp_path / "cache").resolve())
    with pytest.raises(FvaError, match="give 5-d features .* takes 12-d"):
        import_fop(ckpt, tmp_path / "exp2", cache=tmp_path / "cache", dataset="mavceleb-v3",
                   voice_encoders=["va"], face_encoders=["fa"], force=False)
    with pytest.raises(FvaError, match="--cache"):
        import_fop(ckpt, tmp_path / "exp3", cache=None, dataset="mavceleb-v3",
                   voice_encoders=["va", "vb"], face_encoders=["fa"], force=False)
    assert not (tmp_path / "exp2").exists() and not (tmp_path / "exp3").exists()


def test_import_bad_input(tmp_path):
    sd = official_state()
    kw = {"cache": None, "dataset": "mavceleb-v3", "voice_encoders": ["v"], "face_encoders": ["f"], "force": False}
    with pytest.raises(FvaError, match="not found"):
        import_fop(tmp_path / "none.pt", tmp_path / "a", **kw)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(FvaError, match="not a torch checkpoint"):
        import_fop(tmp_path / "text.pt", tmp_path / "a", **kw)
    torch.save({"epoch": 1, "model": {}}, tmp_path / "other.pt")
    with pytest.raises(FvaError, match="no 'state_dict'"):
        import_fop(tmp_path / "other.pt", tmp_path / "a", **kw)
    partial = {k: v for k, v in sd.items() if k != "fusion_layer.attention.1.bias"}
    with pytest.raises(FvaError, match=r"no key 'fusion_layer.attention.1.bias' \(1 of the 25"):
        import_fop(write_official(tmp_path / "partial.pt", partial), tmp_path / "a", **kw)
    with pytest.raises(FvaError, match="do not load.*fusion_layer.weight1"):
        import_fop(write_official(tmp_path / "extra.pt", {**sd, "fusion_layer.weight1": torch.ones(1)}),
                   tmp_path / "a", **kw)
    assert not (tmp_path / "a").exists()
    good = write_official(tmp_path / "good.pt", sd)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "old.txt").write_text("x")
    with pytest.raises(FvaError, match="exists; pass --force"):
        import_fop(good, tmp_path / "a", **kw)
    import_fop(good, tmp_path / "a", **{**kw, "force": True})
    assert not (tmp_path / "a" / "old.txt").exists() and (tmp_path / "a" / "fold0" / "checkpoint.pt").is_file()
    with pytest.raises(FvaError, match="give the voice encoder"):
        import_fop(good, tmp_path / "b", **{**kw, "voice_encoders": []})


# ----------------------------------------------------------------------------------------------- dual FOP


def make(system: str, params: dict | None = None, voice_in=VOICE_IN, face_in=FACE_IN, classes=CLASSES):
    return get_system(system)(voice_in, face_in, classes, ModelConfig(system=system, params=params or {}))


def imported_fop(tmp_path: Path) -> tuple[Path, dict]:
    sd = official_state(seed=3)
    exp = import_fop(write_official(tmp_path / "fop.pt", sd), tmp_path / "fop_exp", cache=None,
                     dataset="mavceleb-v3", voice_encoders=["v"], face_encoders=["f"], force=False)
    return exp, sd


def test_dual_frozen_branch_stays_fixed(tmp_path, one_thread):
    exp, sd = imported_fop(tmp_path)
    torch.manual_seed(0)
    model = make("dual-fop", {"frozen": str(exp), "dim": DIM, "gate_dim": GATE})
    assert isinstance(model, DualFOP) and not bool(model.pretrained_loaded)
    assert all(not p.requires_grad for p in model.pretrained.parameters())
    # all parameters, as the trainer passes them: the frozen ones get no gradient, so no update (weight decay
    # included)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.01, fused=True)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 4])
    model.train()
    before_trainable = {k: v.clone() for k, v in model.voice_branch.state_dict().items()}
    for step in range(3):
        loss = model.loss(Batch(torch.randn(8, VOICE_IN), y, torch.randn(8, FACE_IN), y))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step == 0:
            frozen = {k: v.clone() for k, v in model.pretrained.state_dict().items()}
            for key, value in frozen.items():  # the imported FOP's weights, batch-norm statistics included
                if ".norm." in key:  # fva's input standardisation, absent from official files: the identity
                    assert torch.equal(value, torch.zeros_like(value) if key.endswith("mean") else torch.ones_like(value))
                else:
                    assert torch.equal(value, sd[key]), key
    assert bool(model.pretrained_loaded) and not model.pretrained.training
    for key, value in model.pretrained.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    assert not torch.equal(model.voice_branch.fc1[0].weight, before_trainable["fc1.0.weight"])
    assert not torch.equal(model.voice_branch.fc1[1].running_mean, before_trainable["fc1.1.running_mean"])
    assert model.mix_logits.grad is not None and model.mix_logits.grad.abs().sum() > 0

    # the checkpoint rebuilds without the frozen file (its weights are in the state dict)
    fresh = make("dual-fop", {"frozen": str(exp), "dim": DIM, "gate_dim": GATE}).eval()
    with torch.inference_mode():  # scoring before any training step also reads the frozen FOP
        fresh.embed("face", torch.randn(3, FACE_IN))
    assert bool(fresh.pretrained_loaded) and torch.equal(fresh.pretrained.face_branch.fc1[0].weight,
                                                         sd["face_branch.fc1.0.weight"])
    save_checkpoint(tmp_path / "dual.pt", model, {"epoch": 0})
    (exp / "fold0" / "checkpoint.pt").unlink()
    rebuilt, _ = rebuild(tmp_path / "dual.pt")
    model.eval()
    x = torch.randn(4, VOICE_IN)
    with torch.no_grad():
        assert torch.allclose(rebuilt.embed("voice", x), model.embed("voice", x), atol=1e-7)
    fresh = make("dual-fop", {"frozen": str(exp), "dim": DIM, "gate_dim": GATE})
    with pytest.raises(FvaError, match="FOP checkpoint not found"):
        fresh.embed("voice", x)


def test_dual_frozen_mismatch_and_default(tmp_path):
    exp, _ = imported_fop(tmp_path)
    model = make("dual-fop", {"frozen": str(exp), "dim": DIM, "gate_dim": GATE}, voice_in=VOICE_IN + 1)
    with pytest.raises(FvaError, match=r"voice_branch\.\S+ is \((16, )?12,?\) but this dual-fop needs \((16, )?13,?\)"):
        model.embed("voice", torch.randn(2, VOICE_IN + 1))
    torch.save({"epoch": 1, "state_dict": {"x": torch.ones(1)}}, tmp_path / "bad.pt")
    with pytest.raises(FvaError, match="no key 'voice_branch.fc1.0.weight'"):
        make("dual-fop", {"frozen": str(tmp_path / "bad.pt")}).embed("voice", torch.randn(2, VOICE_IN))
    with pytest.raises(FvaError, match="kernel must be a positive odd"):
        make("dual-fop", {"kernel": 4})
    plain = make("dual-fop", {"dim": DIM})  # no frozen FOP given: a frozen copy of the initial branches
    assert torch.equal(plain.pretrained.voice_branch.fc1[0].weight, plain.voice_branch.fc1[0].weight)
    assert plain.pretrained.voice_branch.fc1[0].weight.data_ptr() != plain.voice_branch.fc1[0].weight.data_ptr()


# ------------------------------------------------------------------------------------------------ training


def separable_problem(seed: int, identities: int = 6, latent: int = 4):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(identities, latent))
    maps = rng.normal(size=(latent, VOICE_IN)), rng.normal(size=(latent, FACE_IN))

    def draw(labels, noise=0.5):
        labels = np.asarray(labels)
        v = z[labels] @ maps[0] + rng.normal(0, noise, (len(labels), VOICE_IN))
        f = z[labels] @ maps[1] + rng.normal(0, noise, (len(labels), FACE_IN))
        return torch.tensor(v, dtype=torch.float32), torch.tensor(f, dtype=torch.float32)

    return rng, draw


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread (and do not contend with parallel test sessions)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("system,params", [("fop", {"dim": 32, "gate_dim": 32}),
                                           ("dual-fop", {"dim": 32, "gate_dim": 32})])
def test_training_separates_identities(system, params, one_thread):
    torch.manual_seed(0)
    rng, draw = separable_problem(7)
    model = make(system, params, classes=6)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=1e-3)
    fixed_y = torch.tensor(rng.integers(0, 6, 32))
    fixed = Batch(*_pair(draw(fixed_y), fixed_y))

    def fixed_loss():
        torch.manual_seed(1)  # the same dropout masks each time
        with torch.no_grad():
            return model.loss(fixed).item()

    model.train()
    start = fixed_loss()
    for _ in range(60):
        y = torch.tensor(rng.integers(0, 6, 32))
        loss = model.loss(Batch(*_pair(draw(y), y)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert fixed_loss() < start - 0.3

    model.eval()
    y = np.repeat(np.arange(6), 3)
    voice, face = draw(y)
    with torch.no_grad():
        ev, ef = model.embed("voice", voice), model.embed("face", face)
        assert torch.equal(ev, model.embed("voice", voice))  # eval: no dropout
        i, j = np.meshgrid(np.arange(len(y)), np.arange(len(y)), indexing="ij")
        dist = model.pair_distances(ev[torch.tensor(i.ravel())], ef[torch.tensor(j.ravel())]).numpy()
    same = (y[i] == y[j]).ravel()
    auc = (dist[same][:, None] < dist[~same][None, :]).mean()
    assert dist[same].mean() < dist[~same].mean() and auc > 0.9, auc


def _pair(rows, y):
    voice, face = rows
    return voice, y, face, y


def test_fop_modes_and_classifier():
    torch.manual_seed(0)
    model = make("fop")
    assert model.params.dim == 128 and model.params.dropout == 0.5 and model.params.alpha == 1.0
    x = torch.randn(6, VOICE_IN)
    model.train()
    assert not torch.equal(model.embed("voice", x), model.embed("voice", x))  # dropout in training
    model.eval()
    e = model.embed("voice", x)
    assert e.shape == (6, 128) and torch.allclose(e.norm(dim=1), torch.ones(6))
    f = model.embed("face", torch.randn(6, FACE_IN))
    assert torch.allclose(model.pair_distances(e, f), (torch.tanh(f) - torch.tanh(e)).norm(dim=1))
    model.replace_classifier(9)
    assert model.logits_layer.out_features == 9 and model.sizes["n_classes"] == 9
    assert not any(k.startswith("logits_layer") for k in model.projections_state())
    with pytest.raises(ValueError, match="at least 2 pairs"):
        model.loss(Batch(torch.randn(1, VOICE_IN), torch.tensor([0]), torch.randn(1, FACE_IN), torch.tensor([0])))
    y = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="paired"):
        model.loss(Batch(torch.randn(3, VOICE_IN), y, torch.randn(4, FACE_IN), torch.tensor([0, 1, 2, 3])))
