"""The voice age-gender ECAPA, trained on CommonVoice with speechbrain's ``Brain``.

Model (the format of ``fva.extract.encoders.voice_age_gender``): ECAPA-TDNN with the speaker model's channels
divided by 4 (256, 256, 256, 256, 768; attention 32), its 1536-d pooled statistics (``asp_bn``) shared by two
two-layer MLP heads (hidden 1536 by default): 6.48 M parameters in all (embedding model 1.75 M, of which the
unused 192-d ``fc`` is 0.3 M and stays frozen; heads 2.36 M each).

Age is a regression in years: CommonVoice gives decades, so the target is the decade's centre
(``AGE_YEARS``: teens 16, twenties 25, ...) and the loss is the L1 distance in decades; a regression keeps the
order of the decades and gives the extractor an age in years (a classifier over nine decades would not).
Gender is male / female cross-entropy; clips labelled other (or unlabelled) are left out of that loss, clips
without an age out of the age loss, and clips with neither out of training. The age head's output bias
starts at the mean training age.

A share of the speakers (``--valid-fraction``, speaker-disjoint) is held out: after every epoch the gender
accuracy and age mean absolute error (years) on whole held-out clips are logged and stored in the model.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from fva.data.commonvoice import AGE_YEARS
from fva.data.records import Manifest, MediaRecord
from fva.environment import require_torchaudio
from fva.errors import FvaError
from fva.train import common
from fva.train.common import TrainOptions
from fva.train.speaker import ecapa_sizes

require_torchaudio()  # the trainer is speechbrain's, and speechbrain imports torchaudio

GENDERS = ("male", "female")  # the gender head's two logits, in this order


@dataclass
class AgeGenderOptions:
    channels: int = 256
    head_hidden: int = 1536
    valid_fraction: float = 0.1
    age_weight: float = 1.0


def targets(record: MediaRecord) -> dict:
    """Training targets: age in years (nan when unknown), gender index (-1 when not male/female).

    >>> targets(MediaRecord("k", "c1", "English", "voice", "k.wav", age="twenties", gender="other"))
    {'age': 25.0, 'gender': -1}
    """
    age = AGE_YEARS.get(record.age, math.nan) if record.age else math.nan
    gender = GENDERS.index(record.gender) if record.gender in GENDERS else -1
    return {"age": age, "gender": gender}


def held_out_speakers(identities: list[str], fraction: float, seed: int) -> set[str]:
    """A seeded, speaker-disjoint held-out set: ``fraction`` of the speakers (at least one when > 0).

    >>> sorted(held_out_speakers([f"s{i}" for i in range(10)], 0.2, 0)) == sorted(
    ...     held_out_speakers([f"s{i}" for i in range(10)][::-1], 0.2, 0))
    True
    """
    if not 0 <= fraction < 1:
        raise FvaError(f"--valid-fraction {fraction}: give a share in [0, 1)")
    if fraction == 0:
        return set()
    shuffled = sorted(identities)
    random.Random(seed).shuffle(shuffled)
    return set(shuffled[:max(1, round(fraction * len(shuffled)))])


def brain_class():
    import speechbrain as sb
    import torch

    class AgeGenderBrain(common.brain_base()):
        """Shared ECAPA trunk, age regression and gender classification heads."""

        has_valid = True

        def compute_forward(self, batch, stage):
            batch = batch.to(self.device)
            wavs, lens = batch.sig
            feats = self.modules.compute_features(wavs)
            feats = self.modules.mean_var_norm(feats, lens)
            self.modules.embedding_model(feats, lens)  # the hook keeps the pooled statistics
            pooled, self.hparams.pooled[0] = self.hparams.pooled[0].squeeze(-1), None
            return self.modules.age_head(pooled)[:, 0], self.modules.gender_head(pooled)

        def compute_objectives(self, predictions, batch, stage):
            age_pred, logits = predictions
            age, gender = batch.age.float(), batch.gender.long()
            has_age, has_gender = ~torch.isnan(age), gender >= 0
            zero = logits.sum() * 0.0  # keeps every head in the graph (DDP expects all gradients)
            age_loss = ((age_pred[has_age] - age[has_age]).abs().mean() / 10.0) if has_age.any() else zero
            gender_loss = (torch.nn.functional.cross_entropy(logits[has_gender], gender[has_gender])
                           if has_gender.any() else zero)
            if stage != sb.Stage.TRAIN:
                acc = self.valid_acc
                acc["age_abs"] += float((age_pred[has_age] - age[has_age]).abs().sum())
                acc["age_n"] += int(has_age.sum())
                acc["correct"] += int((logits[has_gender].argmax(-1) == gender[has_gender]).sum())
                acc["gender_n"] += int(has_gender.sum())
            return gender_loss + self.hparams.options.age_weight * age_loss + zero

        def on_stage_start(self, stage, epoch=None):
            self.valid_acc = {"age_abs": 0.0, "age_n": 0, "correct": 0, "gender_n": 0}

        def on_stage_end(self, stage, stage_loss, epoch=None):
            if stage == sb.Stage.VALID:
                self.valid_loss = float(stage_loss)
            super().on_stage_end(stage, stage_loss, epoch)

        def epoch_metrics(self) -> dict:
            a = self.valid_acc
            return {"valid_loss": None if math.isnan(self.valid_loss) else round(self.valid_loss, 6),
                    "gender_accuracy": round(a["correct"] / a["gender_n"], 4) if a["gender_n"] else None,
                    "age_mae_years": round(a["age_abs"] / a["age_n"], 3) if a["age_n"] else None,
                    "valid_clips": {"age": a["age_n"], "gender": a["gender_n"]}}

        def export(self, folder: Path, metrics: dict) -> None:
            from fva.extract.encoders.voice_age_gender import save_voice_age_gender

            h = self.hparams
            channels, attention = ecapa_sizes(h.options.channels)
            save_voice_age_gender(folder, {n: getattr(h, n) for n in ("embedding_model", "age_head", "gender_head")},
                                  meta={"languages": h.languages, "trained_on": h.trained_on, "metrics": metrics},
                                  channels=tuple(channels), hidden=h.options.head_hidden, attention=attention)

    return AgeGenderBrain


def train_age_gender(manifest: Manifest, root: Path | None, opts: TrainOptions, ag: AgeGenderOptions) -> dict:
    """Train (or resume) the voice age-gender ECAPA on the manifest's clips; returns the last epoch's metrics."""
    import torch
    from speechbrain.lobes.features import Fbank
    from speechbrain.processing.features import InputNormalization
    from speechbrain.utils.checkpoints import Checkpointer

    from fva.extract.encoders.voice_age_gender import init_voice_age_gender

    out = Path(opts.out)
    root = Path(root or manifest.root)
    records = [r for r in common.voice_records(manifest, "the age-gender model")
               if not math.isnan(targets(r)["age"]) or targets(r)["gender"] >= 0]
    if not records:
        raise FvaError(f"{manifest.dataset} split {manifest.split}: no clip has an age or a male/female gender "
                       "label; the age-gender model needs labelled clips")
    valid_ids = held_out_speakers(sorted({r.identity for r in records}), ag.valid_fraction, opts.seed)
    train = [r for r in records if r.identity not in valid_ids]
    valid = [r for r in records if r.identity in valid_ids]
    if not train:
        raise FvaError(f"only {len(valid_ids)} speaker(s) with labels: none left for training after holding "
                       "out the validation speakers; lower --valid-fraction")
    trained_on = f"{manifest.dataset} {manifest.subset} split {manifest.split}"
    languages = manifest.languages()
    channels, attention = ecapa_sizes(ag.channels)
    config = {"trainer": "age-gender", "model": {"channels": channels, "head_hidden": ag.head_hidden},
              "data": trained_on, "languages": languages, "records": {"train": len(train), "valid": len(valid)},
              "valid_speakers": sorted(valid_ids), "options": asdict(opts), "age_gender": asdict(ag)}
    epochs, total = common.plan_epochs(opts, len(train))
    run_opts = common.run_options(opts, opts.steps)
    common.check_config(out, config)  # after run_options: under torchrun only rank 0 may write it
    common.seed_all(opts.seed)

    modules = init_voice_age_gender(tuple(channels), ag.head_hidden, attention, seed=opts.seed)
    modules["embedding_model"].fc.requires_grad_(False)  # the 192-d output is not part of this model
    ages = [targets(r)["age"] for r in train if not math.isnan(targets(r)["age"])]
    with torch.no_grad():
        modules["age_head"].layers[-1].bias.fill_(sum(ages) / len(ages) if ages else 35.0)
    pooled: list = [None]
    modules["embedding_model"].asp_bn.register_forward_hook(lambda m, i, o: pooled.__setitem__(0, o))
    schedule = common.make_schedule(opts, total)
    checkpointer = Checkpointer(out / "checkpoints", recoverables={**modules, "schedule": schedule})
    train_modules = {"compute_features": Fbank(n_mels=80),
                     "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False), **modules}
    hparams = {"schedule": schedule, "pooled": pooled, "options": ag, "languages": languages,
               "trained_on": trained_on, **modules}
    brain = common.make_brain(brain_class(), train_modules, hparams, run_opts, checkpointer, opts, out)
    train_set = common.crop_dataset(train, root, targets, common.crop_samples(opts))
    valid_set = common.crop_dataset(valid, root, targets, None) if valid else None
    if valid_set is None:
        brain.has_valid = False
        brain.valid_loss = math.nan
    common.fit(brain, train_set, valid_set, epochs, opts)
    return common.read_metrics(out)
