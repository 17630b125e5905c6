"""Head systems xm-align, contrastive and cross-attention: each loss against a plain loop (values and
gradients), classifier layouts, padding and negatives by hand, eval determinism, checkpoint rebuild, and a
few dozen Adam steps on a synthetic paired problem separating held-out identities."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from fva.errors import FvaError
from fva.evaluate.eer import compute_eer
from fva.heads.config import ModelConfig
from fva.heads.systems import get_system
from fva.heads.systems.base import Batch
from fva.heads.systems.contrastive import cross_infonce
from fva.heads.systems.crossattn import SegmentTokens, negative_partners
from fva.heads.systems.xmalign import alignment_loss

VOICE_DIM, FACE_DIM = 20, 27  # 27 is not a multiple of the segment counts used below
TINY_ATTENTION = {"segments": 4, "d_model": 16, "heads": 2}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster than several (and much faster on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(system: str, params: dict | None = None, n_classes: int = 5, **cfg):
    cfg = ModelConfig(system=system, params=params or {}, **{"embedding_dim": 8, "input_dropout": 0.5, **cfg})
    return get_system(system)(VOICE_DIM, FACE_DIM, n_classes, cfg)


def random_batch(labels: list[int], dtype=torch.float32, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(labels)
    return Batch(torch.randn(len(y), VOICE_DIM, generator=g, dtype=dtype), y,
                 torch.randn(len(y), FACE_DIM, generator=g, dtype=dtype), y.clone())


def grads(loss: torch.Tensor, tensors) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(tensors)))


def assert_same_loss_and_grads(batched: torch.Tensor, loop: torch.Tensor, tensors, atol=1e-8, rtol=1e-6):
    tensors = list(tensors)
    assert batched.item() == pytest.approx(loop.item(), abs=atol, rel=rtol)
    for a, b in zip(grads(batched, tensors), grads(loop, tensors)):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


# ---------------------------------------------------------------------------------------------- losses

@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_alignment_loss_matches_a_loop(kind):
    g = torch.Generator().manual_seed(1)
    v = torch.randn(6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    f = torch.randn(6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    terms = []
    for i in range(6):
        if kind == "mse":
            terms.append(sum((v[i, d] - f[i, d]) ** 2 for d in range(5)))
        else:
            dot = sum(v[i, d] * f[i, d] for d in range(5))
            terms.append(1 - dot / (v[i].pow(2).sum().sqrt() * f[i].pow(2).sum().sqrt()))
    assert_same_loss_and_grads(alignment_loss(v, f, kind), sum(terms) / 6, [v, f])
    with pytest.raises(FvaError, match="alignment loss must be one of mse, cosine"):
        alignment_loss(v, f, "l1")


def supervised_infonce_loop(v, f, labels, tau):
    """Both directions, each row: mean over same-identity partners of -log softmax over all partners."""
    v, f = F.normalize(v, dim=1), F.normalize(f, dim=1)
    n = len(labels)
    total = 0.0
    for queries, keys in ((v, f), (f, v)):
        for i in range(n):
            scores = [torch.dot(queries[i], keys[j]) / tau for j in range(n)]
            log_denominator = torch.log(sum(torch.exp(s) for s in scores))
            positives = [j for j in range(n) if labels[j] == labels[i]]
            total = total + sum(log_denominator - scores[p] for p in positives) / len(positives)
    return total / (2 * n)


def test_cross_infonce_matches_a_loop_with_repeated_identities():
    g = torch.Generator().manual_seed(2)
    labels = torch.tensor([0, 3, 0, 1, 3, 0, 2])
    v = torch.randn(7, 4, dtype=torch.float64, generator=g, requires_grad=True)
    f = torch.randn(7, 4, dtype=torch.float64, generator=g, requires_grad=True)
    assert_same_loss_and_grads(cross_infonce(v, f, labels, 0.1), supervised_infonce_loop(v, f, labels, 0.1), [v, f])


def test_cross_infonce_is_the_published_infonce_when_identities_are_distinct():
    g = torch.Generator().manual_seed(3)
    v = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    f = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    tau = 0.07
    vn, fn = F.normalize(v, dim=1), F.normalize(f, dim=1)

    def infonce(a, b):  # -log exp(a_i·b_i/τ) / Σ_j exp(a_i·b_j/τ), mean over i
        return sum(-torch.log(torch.exp(a[i] @ b[i] / tau) / sum(torch.exp(a[i] @ b[j] / tau) for j in range(5)))
                   for i in range(5)) / 5

    voice_to_face, face_to_voice = infonce(vn, fn), infonce(fn, vn)
    assert_same_loss_and_grads(cross_infonce(v, f, torch.arange(5), tau), (voice_to_face + face_to_voice) / 2, [v, f])


def test_cross_infonce_treats_another_face_of_the_same_identity_as_a_positive():
    """Which face of an identity is paired with which of its voices does not matter (the faces are
    interchangeable positives); an identity-blind InfoNCE would change its value."""
    g = torch.Generator().manual_seed(4)
    labels = torch.tensor([0, 1, 0, 2])
    v, f = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g, dtype=torch.float64)
    swapped = f[[2, 1, 0, 3]]
    torch.testing.assert_close(cross_infonce(v, f, labels, 0.1), cross_infonce(v, swapped, labels, 0.1))
    blind = cross_infonce(v, f, torch.arange(4), 0.1), cross_infonce(v, swapped, torch.arange(4), 0.1)
    assert abs(blind[0].item() - blind[1].item()) > 1e-3
    # pulled together: the loss falls when face 2 moves toward voice 0 (same identity, different row)
    f2 = f.clone().requires_grad_(True)
    (grad,) = grads(cross_infonce(v, f2, labels, 0.1), [f2])
    assert torch.dot(grad[2], F.normalize(v[0], dim=0) - F.normalize(f[2], dim=0)) < 0


def identity_ce_loop(emb, labels, weight):
    """Mean over rows of logsumexp(W e_i) - (W e_i)[y_i]."""
    total = 0.0
    for i in range(len(labels)):
        logits = weight @ emb[i]
        total = total + torch.logsumexp(logits, 0) - logits[labels[i]]
    return total / len(labels)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("align", ["mse", "cosine"])
def test_xm_align_softmax_loss_matches_a_loop(shared, align):
    torch.manual_seed(0)
    model = build("xm-align", {"shared_classifier": shared, "align": align, "lambda_align": 0.3}).double().eval()
    batch = random_batch([0, 4, 2, 0, 1, 4], dtype=torch.float64)
    v = model.voice[2](batch.voice)  # eval: standardisation off, dropout off: only the Linear
    f = model.face[2](batch.face)
    face_weight = model.classifier.weight if shared else model.face_classifier.weight
    pairs = sum(1 - torch.dot(v[i], f[i]) / (v[i].norm() * f[i].norm()) if align == "cosine"
                else (v[i] - f[i]).pow(2).sum() for i in range(6)) / 6
    loop = (identity_ce_loop(v, batch.voice_labels, model.classifier.weight)
            + identity_ce_loop(f, batch.face_labels, face_weight) + 0.3 * pairs)
    assert_same_loss_and_grads(model.loss(batch), loop, model.parameters())


def hand_aam(emb, labels, weight, margin, scale):
    """ArcFace as speechbrain's AdditiveAngularMargin: cos(θ + m) for the target when θ + m < π, else
    cos θ - m sin m; logits scaled; mean cross-entropy."""
    total = 0.0
    for i in range(len(labels)):
        cos = torch.stack([torch.dot(emb[i], w) / (emb[i].norm() * w.norm()) for w in weight])
        theta = torch.acos(cos[labels[i]].clamp(-1 + 1e-7, 1 - 1e-7))
        target = torch.cos(theta + margin) if theta + margin < math.pi else cos[labels[i]] - margin * math.sin(margin)
        logits = scale * torch.cat([cos[:labels[i]], target[None], cos[labels[i] + 1:]])
        total = total + torch.logsumexp(logits, 0) - logits[labels[i]]
    return total / len(labels)


def test_xm_align_aam_variant_matches_hand_arcface_with_the_config_margin_and_scale():
    torch.manual_seed(0)
    model = build("xm-align", {"classifier": "aam", "align": "cosine"}, aam_margin=0.3, aam_scale=20.0).eval()
    batch = random_batch([0, 4, 2, 0, 1, 4])
    v, f = model.voice[2](batch.voice), model.face[2](batch.face)
    w = model.classifier.weight
    loop = (hand_aam(v, batch.voice_labels, w, 0.3, 20.0) + hand_aam(f, batch.face_labels, w, 0.3, 20.0)
            + 0.1 * (1 - F.cosine_similarity(v, f)).mean())
    assert_same_loss_and_grads(model.loss(batch), loop, model.parameters(), atol=1e-4, rtol=1e-4)


def test_cross_attention_loss_matches_a_loop_over_pairs():
    torch.manual_seed(0)
    model = build("cross-attention", TINY_ATTENTION).double().eval()
    batch = random_batch([0, 1, 1, 2, 0, 3], dtype=torch.float64)
    torch.manual_seed(5)
    batched = model.loss(batch)
    torch.manual_seed(5)  # the same negatives
    rows, partners = negative_partners(batch.voice_labels)
    v, f = model.embed("voice", batch.voice), model.embed("face", batch.face)
    positive = sum(torch.log1p(torch.exp(-model.logits(v[i:i + 1], f[i:i + 1])[0])) for i in range(6)) / 6
    negative = sum(torch.log1p(torch.exp(model.logits(v[i:i + 1], f[j:j + 1])[0]))
                   for i, j in zip(rows.tolist(), partners.tolist())) / len(rows)
    assert len(rows) == 6
    assert_same_loss_and_grads(batched, (positive + negative) / 2, model.parameters(), atol=1e-7)


# ------------------------------------------------------------------------------------- structure, params

def test_xm_align_shared_classifier_is_one_matrix_and_separate_is_two():
    shared, separate = build("xm-align"), build("xm-align", {"shared_classifier": False})
    assert [n for n, _ in shared.named_parameters() if "classifier" in n] == ["classifier.weight"]
    assert [n for n, _ in separate.named_parameters() if "classifier" in n] == ["classifier.weight",
                                                                               "face_classifier.weight"]
    for model in (shared, separate):
        assert not any("classifier" in k for k in model.projections_state())
    # the face loss trains the one shared matrix, or only the face classifier when separate
    batch = random_batch([0, 1, 2])
    shared.eval()
    separate.eval()
    face_ce = shared.identity_loss(shared.embed("face", batch.face), batch.face_labels, shared.classifier)
    assert grads(face_ce, [shared.classifier.weight])[0].abs().sum() > 0
    separate.params.lambda_align = 0.0
    g_voice, g_face = grads(separate.loss(batch), [separate.classifier.weight, separate.face_classifier.weight])
    voice_only = separate.identity_loss(separate.embed("voice", batch.voice), batch.voice_labels, separate.classifier)
    face_only = separate.identity_loss(separate.embed("face", batch.face), batch.face_labels, separate.face_classifier)
    torch.testing.assert_close(g_voice, grads(voice_only, [separate.classifier.weight])[0])
    torch.testing.assert_close(g_face, grads(face_only, [separate.face_classifier.weight])[0])
    separate.replace_classifier(9)
    assert separate.classifier.weight.shape == separate.face_classifier.weight.shape == (9, 8)
    assert separate.sizes["n_classes"] == 9


@pytest.mark.parametrize("system, params, message", [
    ("xm-align", {"classifier": "arcface"}, "classifier .*must be one of softmax, aam, got 'arcface'"),
    ("xm-align", {"align": "l2"}, "align .*must be one of mse, cosine, got 'l2'"),
    ("xm-align", {"lambda_align": -1}, "lambda_align .*>= 0"),
    ("contrastive", {"tau": 0}, "tau .*> 0"),
    ("cross-attention", {"d_model": 10, "heads": 4}, "multiple of heads"),
    ("cross-attention", {"segments": 0}, "segments .*>= 1"),
    ("xm-align", {"margin": 0.2}, "unknown config key 'margin'"),
])
def test_bad_params_are_one_line_errors(system, params, message):
    with pytest.raises(FvaError, match=message) as err:
        build(system, params)
    assert "\n" not in str(err.value)


def test_contrastive_has_a_classifier_only_with_an_identity_term():
    plain, with_ce = build("contrastive"), build("contrastive", {"ce_weight": 0.5})
    assert not any("classifier" in k for k in plain.state_dict())
    plain.replace_classifier(7)
    assert plain.sizes["n_classes"] == 7 and plain.classifier is None
    with_ce.replace_classifier(7)
    assert with_ce.classifier.weight.shape == (7, 8)
    assert not any("classifier" in k for k in with_ce.projections_state())
    with_ce.eval()
    batch = random_batch([0, 1, 0, 2])
    v, f = with_ce.embed("voice", batch.voice), with_ce.embed("face", batch.face)
    w, y = with_ce.classifier.weight, batch.voice_labels
    expected = cross_infonce(v, f, y, 0.07) + 0.5 * (hand_aam(v, y, w, 0.2, 30.0) + hand_aam(f, y, w, 0.2, 30.0))
    assert_same_loss_and_grads(with_ce.loss(batch), expected, with_ce.parameters(), atol=1e-4, rtol=1e-4)


def test_segment_tokens_zero_pad_the_last_chunk():
    torch.manual_seed(0)
    tokens = SegmentTokens(27, 4, 6)  # chunks of 7, the last 6 values + one zero
    x = torch.randn(3, 27)
    out = tokens(x)
    assert out.shape == (3, 4, 6)
    last = torch.cat([x[:, 21:], torch.zeros(3, 1)], dim=1)
    torch.testing.assert_close(out[:, 3], tokens.proj(last) + tokens.position[3])
    torch.testing.assert_close(out[:, 0], tokens.proj(x[:, :7]) + tokens.position[0])
    assert SegmentTokens(3, 4, 6)(torch.randn(2, 3)).shape == (2, 4, 6)  # fewer features than segments


def test_cross_attention_shapes_with_dims_not_divisible_by_segments():
    model = build("cross-attention", {"segments": 5, "d_model": 12, "heads": 3}).eval()
    batch = random_batch([0, 1, 2, 3])
    v, f = model.embed("voice", batch.voice), model.embed("face", batch.face)
    assert v.shape == f.shape == (4, 5, 12)
    d = model.pair_distances(v, f)
    assert d.shape == (4,) and ((d > 0) & (d < 1)).all()
    one_at_a_time = torch.cat([model.pair_distances(v[i:i + 1], f[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(d, one_at_a_time)
    torch.testing.assert_close(d, 1 - torch.sigmoid(model.logits(v, f)))


def test_negatives_are_never_the_same_identity():
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 0, 1])
    partners_seen = {i: set() for i in range(8)}
    torch.manual_seed(0)
    for _ in range(200):
        rows, partners = negative_partners(labels)
        assert rows.tolist() == list(range(8))
        assert (labels[rows] != labels[partners]).all()
        for i, j in zip(rows.tolist(), partners.tolist()):
            partners_seen[i].add(j)
    for i in range(8):  # every other-identity row gets drawn
        assert partners_seen[i] == {j for j in range(8) if labels[j] != labels[i]}
    rows, _ = negative_partners(torch.tensor([4, 4, 4, 5]))
    assert rows.tolist() == [0, 1, 2, 3]
    rows, _ = negative_partners(torch.tensor([4, 4, 4]))
    assert rows.numel() == 0
    model = build("cross-attention", TINY_ATTENTION)
    assert torch.isfinite(model.loss(random_batch([4, 4, 4])))  # no negative: positives only


@pytest.mark.parametrize("system, params", [("xm-align", {}), ("contrastive", {}),
                                            ("cross-attention", TINY_ATTENTION)])
def test_eval_is_deterministic_and_training_drops_out(system, params):
    torch.manual_seed(0)
    model = build(system, params)
    batch = random_batch([0, 1, 2, 3])

    def distances():
        return model.pair_distances(model.embed("voice", batch.voice), model.embed("face", batch.face))

    model.eval()
    with torch.no_grad():
        first, second = distances(), distances()
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        model.train()
        assert not torch.allclose(distances(), first)


@pytest.mark.parametrize("system, params", [("xm-align", {"shared_classifier": False}),
                                            ("contrastive", {"ce_weight": 0.2}),
                                            ("cross-attention", TINY_ATTENTION)])
def test_a_checkpoint_rebuilds_the_same_scores(system, params):
    torch.manual_seed(0)
    model = build(system, params, n_classes=4)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = random_batch([0, 1, 2, 3, 0, 1])
    for _ in range(3):
        optimiser.zero_grad()
        model.loss(batch).backward()
        optimiser.step()
    state, cfg = model.state_dict(), asdict(model.cfg)
    rebuilt = get_system(cfg["system"])(VOICE_DIM, FACE_DIM, 4, ModelConfig(**cfg))
    rebuilt.load_state_dict(state)
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        scores = [m.pair_distances(m.embed("voice", batch.voice), m.embed("face", batch.face))
                  for m in (model, rebuilt)]
    torch.testing.assert_close(scores[0], scores[1], rtol=0, atol=0)
    assert get_system(system).pairing == "paired"


@pytest.mark.parametrize("system, params", [("xm-align", {}), ("contrastive", {}), ("cross-attention", TINY_ATTENTION)])
def test_unpaired_batches_are_refused(system, params):
    batch = random_batch([0, 1, 2])
    with pytest.raises(ValueError, match="needs paired rows"):
        build(system, params).loss(Batch(batch.voice, batch.voice_labels, batch.face[:2], batch.face_labels[:2]))
    with pytest.raises(ValueError, match="needs paired rows"):
        build(system, params).loss(Batch(batch.voice, batch.voice_labels, batch.face, batch.face_labels.flip(0)))


# ---------------------------------------------------------------------------------- synthetic training

def paired_problem(n_ids=60, per_id=8, latent=6, noise=0.7, seed=0):
    """Identities with a latent vector mapped linearly to voice and face features, plus noise."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_ids, latent, generator=g)
    to_voice, to_face = torch.randn(latent, VOICE_DIM, generator=g), torch.randn(latent, FACE_DIM, generator=g)
    ids = torch.arange(n_ids).repeat_interleave(per_id)
    voice = z[ids] @ to_voice + noise * to_voice.norm(dim=0) * torch.randn(len(ids), VOICE_DIM, generator=g)
    face = z[ids] @ to_face + noise * to_face.norm(dim=0) * torch.randn(len(ids), FACE_DIM, generator=g)
    return voice, face, ids


def held_out_eer(system: str, params: dict, steps: int, lr: float = 1e-2, train_ids: int = 45,
                 input_dropout: float = 0.1) -> float:
    """Adam steps on paired batches of the first ``train_ids`` identities (row i's face: another sample of
    its identity); EER over all voice-face pairs of the other identities."""
    per_id = 8
    voice, face, ids = paired_problem(per_id=per_id)
    torch.manual_seed(0)
    model = build(system, params, n_classes=train_ids, embedding_dim=16, input_dropout=input_dropout)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        rows = torch.randint(train_ids * per_id, (64,))
        partners = ids[rows] * per_id + (rows % per_id + torch.randint(1, per_id, (64,))) % per_id
        loss = model.loss(Batch(voice[rows], ids[rows], face[partners], ids[partners]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    test = torch.arange(train_ids * per_id, len(ids), 2)  # 4 voices and 4 faces per held-out identity
    with torch.no_grad():
        v, f = model.embed("voice", voice[test]), model.embed("face", face[test + 1])
        i, j = torch.meshgrid(torch.arange(len(test)), torch.arange(len(test)), indexing="ij")
        distances = model.pair_distances(v[i.flatten()], f[j.flatten()])
    labels = (ids[test][i.flatten()] == ids[test + 1][j.flatten()]).long()
    return compute_eer(labels.numpy(), distances.numpy())


@pytest.mark.parametrize("system, params, steps, limit", [
    ("xm-align", {}, 40, 20),
    ("xm-align", {"classifier": "aam"}, 40, 20),
    ("xm-align", {"shared_classifier": False, "align": "mse"}, 40, 25),
    ("contrastive", {}, 40, 20),
    ("cross-attention", TINY_ATTENTION, 120, 38),
])
def test_training_separates_held_out_identities(system, params, steps, limit):
    assert held_out_eer(system, params, steps) < limit  # EER in percent; chance is 50


def test_separate_classifiers_need_the_alignment_term():
    """With one classifier per modality only the alignment term ties the two spaces together."""
    unaligned = held_out_eer("xm-align", {"shared_classifier": False, "lambda_align": 0.0}, 40)
    aligned = held_out_eer("xm-align", {"shared_classifier": False, "lambda_align": 0.1}, 40)
    assert unaligned > 30 and aligned < unaligned - 15

