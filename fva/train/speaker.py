"""Speaker ECAPA-TDNN trained without a language (the unheard conditions), with speechbrain's ``Brain``.

As speechbrain's VoxCeleb ECAPA recipe: 80-d Fbank with sentence mean normalisation, random 3 s crops,
ECAPA-TDNN (channels C, C, C, C, 3C; attention C / 8; 192-d embedding), AAM-softmax (margin 0.2, scale 30)
over the training identities, Adam (weight decay 2e-6) with a cyclic rate (1e-8 to 1e-3, half cycle 65,000
steps) or an exponential decay, and, when folders are given, augmentation with speechbrain's ``AddNoise``
and ``AddReverb`` (each batch is doubled: clean plus one augmented copy).

The output folder is in the format of the public ``spkrec-ecapa-voxceleb`` model (see
``fva.synth.checkpoints.save_speaker_ecapa``), so ``fva extract --weights speaker-ecapa=OUT`` loads it
through the same code; its pooled output is 6C-d (6144 at C = 1024). Validation: EER on a VoxCeleb1-O style
trial list (``label enrol test`` lines, paths under ``--trials-root``) after every epoch.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fva.atomic import atomic_write
from fva.data.records import Manifest
from fva.environment import require_torchaudio
from fva.errors import FvaError, where
from fva.train import common
from fva.train.common import TrainOptions

require_torchaudio()  # the trainer is speechbrain's, and speechbrain imports torchaudio

AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass
class SpeakerOptions:
    channels: int = 1024  # C: blocks of C, C, C, C, 3C channels
    lin_neurons: int = 192
    margin: float = 0.2
    scale: float = 30.0
    noise: str | None = None  # folder of noise clips (wav/flac, mono)
    reverb: str | None = None  # folder of room impulse responses (wav/flac, mono)
    snr_low: float = 0.0
    snr_high: float = 15.0
    trials: str | None = None  # VoxCeleb1-O style trial list
    trials_root: str | None = None


def ecapa_sizes(channels: int) -> tuple[list[int], int]:
    """Block channels and attention channels for a width C, as the public model (C = 1024 -> attention 128).

    >>> ecapa_sizes(1024)
    ([1024, 1024, 1024, 1024, 3072], 128)
    """
    if channels < 8:
        raise FvaError(f"--channels {channels}: give at least 8")
    return [channels] * 4 + [3 * channels], max(8, channels // 8)


def build_modules(opts: SpeakerOptions, n_classes: int) -> dict[str, torch.nn.Module]:
    from speechbrain.lobes.features import Fbank
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
    from speechbrain.processing.features import InputNormalization

    channels, attention = ecapa_sizes(opts.channels)
    return {
        "compute_features": Fbank(n_mels=80),
        "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False),
        "embedding_model": ECAPA_TDNN(80, channels=channels, kernel_sizes=[5, 3, 3, 3, 1],
                                      dilations=[1, 2, 3, 4, 1], attention_channels=attention,
                                      lin_neurons=opts.lin_neurons),
        "classifier": Classifier(input_size=opts.lin_neurons, out_neurons=n_classes),
    }


def audio_csv(folder: Path, csv_path: Path, what: str) -> Path:
    """speechbrain's augmentation CSV (ID, duration, wav) for every mono wav/flac under ``folder``."""
    import soundfile as sf

    from fva.data.records import iter_files

    if not folder.is_dir():
        raise FvaError(f"{folder}: {what} folder not found; pass a folder of mono 16 kHz wav/flac files")
    rows = []
    for i, path in enumerate(iter_files(folder, AUDIO_SUFFIXES)):
        try:
            info = sf.info(str(path))
        except (RuntimeError, sf.LibsndfileError) as err:
            raise FvaError(f"{path}: unreadable {what} file ({err}); remove it from {folder}") from None
        if info.channels != 1:
            raise FvaError(f"{path}: {info.channels} channels; {what} files must be mono")
        rows.append((f"{what}{i:06d}", f"{info.frames / info.samplerate:.3f}", str(path.resolve()), path.suffix[1:], ""))
    if not rows:
        raise FvaError(f"{folder}: no wav/flac {what} files found")
    # every torchrun process writes the same rows: each through its own temporary file (named by its pid),
    # renamed into place, so that no process reads a file another one is still writing
    with atomic_write(csv_path, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ID", "duration", "wav", "wav_format", "wav_opts"])
        writer.writerows(rows)
    return csv_path


def build_augmenter(opts: SpeakerOptions, workdir: Path):
    """speechbrain ``Augmenter`` with reverberation and/or noise, or None when no folder is given."""
    from speechbrain.augment.augmenter import Augmenter
    from speechbrain.augment.time_domain import AddNoise, AddReverb

    augmentations = []
    if opts.reverb:
        augmentations.append(AddReverb(str(audio_csv(Path(opts.reverb), workdir / "reverb.csv", "reverb"))))
    if opts.noise:
        augmentations.append(AddNoise(str(audio_csv(Path(opts.noise), workdir / "noise.csv", "noise")),
                                      snr_low=opts.snr_low, snr_high=opts.snr_high, pad_noise=True,
                                      normalize=True))
    if not augmentations:
        return None
    return Augmenter(concat_original=True, min_augmentations=1, max_augmentations=len(augmentations),
                     shuffle_augmentations=True, augment_prob=1.0, augmentations=augmentations)


def read_trials(path: Path, root: Path) -> list[tuple[int, Path, Path]]:
    """``label enrol test`` lines (VoxCeleb1-O); every clip must exist under ``root``."""
    if not path.is_file():
        raise FvaError(f"{path}: trial list not found")
    trials = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            raise FvaError(f"{where(path, lineno)}: expected 'label enrol test' with label 0 or 1 "
                           "(VoxCeleb1-O style)")
        for rel in parts[1:]:
            if not (root / rel).is_file():
                raise FvaError(f"{where(path, lineno)}: {root / rel} not found; pass --trials-root the folder "
                               "the trial paths are relative to")
        trials.append((int(parts[0]), root / parts[1], root / parts[2]))
    if len({t[0] for t in trials}) < 2:
        raise FvaError(f"{path}: needs both same-speaker (1) and different-speaker (0) trials for an EER")
    return trials


def brain_class():
    import speechbrain as sb

    class SpeakerBrain(common.brain_base()):
        """AAM-softmax speaker classification over random crops."""

        def compute_forward(self, batch, stage):
            batch = batch.to(self.device)
            wavs, lens = batch.sig
            if stage == sb.Stage.TRAIN and self.hparams.augment is not None:
                wavs, lens = self.hparams.augment(wavs, lens)
            feats = self.modules.compute_features(wavs)
            feats = self.modules.mean_var_norm(feats, lens)
            emb = self.modules.embedding_model(feats, lens)
            if stage == sb.Stage.TRAIN:
                with torch.no_grad():  # statistics the public format keeps beside the model
                    self.hparams.emb_norm(emb.detach(), torch.ones(len(emb), device=emb.device))
            return self.modules.classifier(emb), lens

        def compute_objectives(self, predictions, batch, stage):
            outputs, lens = predictions
            labels = batch.spk
            if stage == sb.Stage.TRAIN and self.hparams.augment is not None:
                labels = self.hparams.augment.replicate_labels(labels)
            return self.hparams.loss(outputs, labels.unsqueeze(1), lens)

        def epoch_metrics(self) -> dict:
            from speechbrain.utils.distributed import if_main_process

            if not self.hparams.trials or not if_main_process():
                return {}
            return {"trials_eer": round(trial_eer(self.hparams, self.device), 4)}

        def export(self, folder: Path, metrics: dict) -> None:
            from fva.synth.checkpoints import save_speaker_ecapa

            h = self.hparams
            channels, attention = ecapa_sizes(h.options.channels)
            save_speaker_ecapa(folder, h.embedding_model, h.classifier, h.emb_norm, h.labels, channels,
                               attention, h.options.lin_neurons, note=f"trained by fva on {h.trained_on}")
            common.write_json(folder / "fva_model.json", {
                "kind": "speaker-ecapa", "trained_on": h.trained_on, "identities": len(h.labels),
                "channels": channels, "metrics": metrics})

    return SpeakerBrain


@torch.no_grad()
def trial_eer(h, device) -> float:
    """EER (%) of 1 - cosine between the 192-d embeddings of whole clips."""
    from fva.evaluate.eer import compute_eer
    from fva.extract.media import MediaError, load_audio

    model = h.embedding_model
    was_training = model.training
    model.eval()
    cache: dict[Path, torch.Tensor] = {}

    def embed(path: Path) -> torch.Tensor:
        if path not in cache:
            try:
                wav = torch.from_numpy(load_audio(path))[None].to(device)
            except MediaError as err:
                raise FvaError(f"{path}: {err}; fix the trial list's clip") from None
            one = torch.ones(1, device=device)
            feats = h.mean_var_norm(h.compute_features(wav), one)
            cache[path] = torch.nn.functional.normalize(model(feats, one).flatten(), dim=0).cpu()
        return cache[path]

    try:
        labels = [t[0] for t in h.trials]
        distances = [1.0 - float(embed(a) @ embed(b)) for _, a, b in h.trials]
    finally:
        model.train(was_training)
    return compute_eer(labels, distances)


def train_speaker(manifest: Manifest, root: Path | None, opts: TrainOptions, spk: SpeakerOptions) -> dict:
    """Train (or resume) a speaker ECAPA on the manifest's voice clips; returns the last epoch's metrics."""
    from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
    from speechbrain.processing.features import InputNormalization
    from speechbrain.utils.checkpoints import Checkpointer

    out = Path(opts.out)
    root = Path(root or manifest.root)
    records = common.voice_records(manifest, "a speaker model")
    labels = sorted({r.identity for r in records})
    if len(labels) < 2:
        raise FvaError(f"{manifest.dataset} split {manifest.split}: {len(labels)} speaker(s); a speaker model "
                       "needs at least two")
    index = {name: i for i, name in enumerate(labels)}
    trials = None
    if spk.trials:
        trials_path = Path(spk.trials)
        trials = read_trials(trials_path, Path(spk.trials_root) if spk.trials_root else trials_path.parent)
    trained_on = f"{manifest.dataset} {manifest.subset} split {manifest.split}"
    config = {"trainer": "speaker", "model": {"channels": spk.channels, "lin_neurons": spk.lin_neurons,
                                              "identities": labels},
              "data": trained_on, "records": len(records), "options": asdict(opts), "speaker": asdict(spk)}
    epochs, total = common.plan_epochs(opts, len(records))
    run_opts = common.run_options(opts, opts.steps)
    common.check_config(out, config)  # after run_options: under torchrun only rank 0 may write it
    common.seed_all(opts.seed)

    modules = build_modules(spk, len(labels))
    emb_norm = InputNormalization(norm_type="global", std_norm=False)
    schedule = common.make_schedule(opts, total)
    checkpointer = Checkpointer(out / "checkpoints", recoverables={
        "embedding_model": modules["embedding_model"], "classifier": modules["classifier"],
        "emb_norm": emb_norm, "schedule": schedule})
    hparams = {"schedule": schedule, "augment": build_augmenter(spk, out / "augment"),
               "loss": LogSoftmaxWrapper(AdditiveAngularMargin(margin=spk.margin, scale=spk.scale)),
               "emb_norm": emb_norm, "labels": labels, "trials": trials, "options": spk,
               "trained_on": trained_on, **modules}
    brain = common.make_brain(brain_class(), modules, hparams, run_opts, checkpointer, opts, out)
    train_set = common.crop_dataset(records, root, lambda r: {"spk": index[r.identity]}, common.crop_samples(opts))
    common.fit(brain, train_set, None, epochs, opts)
    return common.read_metrics(out)
