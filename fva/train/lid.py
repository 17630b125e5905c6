"""Language labels for VoxCeleb2 (which has none in its layout), for its ``<language>-unheard`` splits.

speechbrain's VoxLingua107 language-ID ECAPA (``speechbrain/lang-id-voxlingua107-ecapa``, loaded with
``EncoderClassifier.from_hparams``; fetched by speechbrain into fva's models home, see ``fva weights``;
``--weights`` a local copy) labels every clip, in batches of clips of similar length. Two files:

``OUT.clips.tsv``  (e.g. ``labels.clips.tsv``) one line per clip, ``idNNNNN/<video>/NNNNN<TAB>language<TAB>
                   confidence`` (the model's posterior of its best language). Appended and flushed as it goes:
                   a rerun skips the clips already there, so an interrupted run resumes.
``OUT``            the per-video vote, ``idNNNNN/<video><TAB>language<TAB>confidence``, rewritten (atomically)
                   from the clip file at the end of every run. This is the ``--language-labels`` file.

The vote (the model confuses languages on single clips): every clip votes for its language with its
confidence as the weight; the video's language is the one with the largest sum, and the video's confidence
is that sum divided by the video's number of clips, i.e. the mean over its clips of "confidence if it agrees,
else 0". A video whose confidence is below ``--threshold`` (default 0.5) gets no line, so its clips have no
language and stay out of every unheard split (they could be in the unheard language). A video is never
labelled from a minority: with the default, 3 of 5 clips agreeing at 0.9 (0.54) pass, 2 of 5 cannot.
The two files are kept apart because ``fva manifest`` prefers a clip's own line over its video's.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from fva.atomic import atomic_write
from fva.data.languages import canonical_language
from fva.environment import require_torchaudio
from fva.errors import FvaError, where
from fva.extract.weights import LID_HUB_ID

require_torchaudio()  # the LID model is speechbrain's, and speechbrain imports torchaudio

DEFAULT_WEIGHTS = LID_HUB_ID  # owned by fva.extract.weights
HEADER = "key\tlanguage\tconfidence\n"


@dataclass
class LidSummary:
    out: Path
    clips_file: Path
    labelled: int = 0  # clips labelled in this run
    skipped: int = 0  # clips labelled by an earlier run
    failed: list[str] = field(default_factory=list)  # "path: reason", not labelled (retried next run)
    videos: int = 0
    voted: int = 0  # videos whose vote reached the threshold

    def line(self) -> str:
        failed = f", failed {len(self.failed)} (first: {self.failed[0]})" if self.failed else ""
        return (f"{self.clips_file}: labelled {self.labelled} clips, skipped as already done {self.skipped}"
                f"{failed}; {self.out}: {self.voted} of {self.videos} videos have a language")


def clips_path(out: Path) -> Path:
    """``labels.tsv`` -> ``labels.clips.tsv``.

    >>> clips_path(Path("work/labels.tsv")).as_posix()
    'work/labels.clips.tsv'
    """
    return out.with_name(f"{out.stem}.clips{out.suffix or '.tsv'}")


def read_clip_labels(path: Path) -> dict[str, tuple[str, float]]:
    """The clip labels written so far; a torn last line (a run killed mid-write) is cut off the file."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)
    labels: dict[str, tuple[str, float]] = {}
    with path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh, delimiter="\t"), 1):
            if not row or (lineno == 1 and row[0] == "key"):
                continue
            try:
                key, language, confidence = row
                labels[key] = (language, float(confidence))
            except ValueError:
                raise FvaError(f"{where(path, lineno)}: expected 'key language confidence'; the file is "
                               "damaged: remove that line and run again") from None
    return labels


def vote(clips: dict[str, tuple[str, float]], threshold: float) -> tuple[dict[str, tuple[str, float]], int]:
    """Per-video confidence-weighted vote over clip labels keyed ``idNNNNN/<video>/NNNNN``; returns the
    videos that reach ``threshold`` and the number of videos.

    >>> clips = {"id1/v/1": ("German", .9), "id1/v/2": ("German", .8), "id1/v/3": ("English", .95),
    ...          "id1/w/1": ("English", .4)}
    >>> vote(clips, 0.5)
    ({'id1/v': ('German', 0.5667)}, 2)
    """
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, int] = defaultdict(int)
    for key, (language, confidence) in clips.items():
        video = key.rsplit("/", 1)[0]
        sums[video][language] += confidence
        counts[video] += 1
    voted = {}
    for video in sorted(sums):
        language, total = max(sorted(sums[video].items()), key=lambda kv: kv[1])
        confidence = total / counts[video]
        if confidence >= threshold:
            voted[video] = (language, round(confidence, 4))
    return voted, len(sums)


def write_labels(path: Path, labels: dict[str, tuple[str, float]]) -> None:
    """Write a label TSV atomically (temporary file, then rename)."""
    with atomic_write(path) as fh:
        fh.write(HEADER)
        for key, (language, confidence) in labels.items():
            fh.write(f"{key}\t{language}\t{confidence}\n")


def run_lid(dataset: str, root: Path, subset: str, out: Path, *, weights: str | None = None,
            threshold: float = 0.5, batch_size: int = 16, workers: int = 2, device: str = "cpu",
            limit: int | None = None, progress: bool = True) -> LidSummary:
    """Label the clips not yet in ``OUT.clips.tsv``, then rewrite the per-video vote ``OUT``."""
    from fva.data import voxceleb2

    if dataset != "voxceleb2":
        raise FvaError(f"fva lid labels voxceleb2 (the dataset without languages in its layout), not {dataset!r}")
    if not 0 <= threshold <= 1:
        raise FvaError(f"--threshold {threshold}: give a confidence in [0, 1]")
    records = [r for r in voxceleb2.records(Path(root), subset) if r.modality == "voice"]
    if not records:
        raise FvaError(f"{root}: no VoxCeleb2 voice clips under {subset}/aac/; pass --root the VoxCeleb2 folder")
    clips_file = clips_path(out)
    done = read_clip_labels(clips_file)
    summary = LidSummary(out, clips_file)
    pending = [r for r in records if utterance_key(r) not in done]
    summary.skipped = len(records) - len(pending)
    if limit is not None:
        pending = pending[:limit]
    if pending:
        classifier = LidModel(weights or DEFAULT_WEIGHTS, device)
        if not clips_file.is_file():
            clips_file.parent.mkdir(parents=True, exist_ok=True)
            clips_file.write_text(HEADER)
        with clips_file.open("a") as fh:
            for batch in _labelled_batches(classifier, pending, Path(root), batch_size, workers, summary, progress):
                for key, language, confidence in batch:
                    fh.write(f"{key}\t{language}\t{confidence:.4f}\n")
                    done[key] = (language, round(confidence, 4))
                fh.flush()
                os.fsync(fh.fileno())
                summary.labelled += len(batch)
    voted, summary.videos = vote(done, threshold)
    summary.voted = len(voted)
    write_labels(out, voted)
    return summary


def utterance_key(record) -> str:
    """``idNNNNN/<video>/NNNNN``, the key :func:`fva.data.voxceleb2.read_language_labels` looks up."""
    return f"{record.identity}/{record.video}/{Path(record.path).stem}"


class LidModel:
    """The language-ID ``EncoderClassifier`` run on padded batches through fva's length-aware ECAPA runner, so
    that a clip's posteriors in a batch equal those of the clip alone (see ``fva.extract.encoders.ecapa``)."""

    def __init__(self, weights: str, device: str) -> None:
        import torch
        from speechbrain.inference.classifiers import EncoderClassifier

        from fva.extract.encoders.ecapa import LengthAwareEcapa, load_pretrained

        self.model = load_pretrained(EncoderClassifier, weights, torch.device(device), None)
        self.model.mods.eval()
        mods = self.model.mods
        self.runner = LengthAwareEcapa(mods.compute_features, mods.mean_var_norm, mods.embedding_model)
        self.labels = self.model.hparams.label_encoder
        self.labels.expect_len(len(self.labels))  # the file is the model's own label set (no warning)

    def __call__(self, wavs, n_samples) -> tuple[list[str], list[float]]:
        """(B, L) padded audio and (B,) lengths -> each clip's best label and its posterior."""
        import torch

        mods = self.model.mods
        with torch.inference_mode():
            pooled = self.runner(wavs, n_samples).to(self.model.device)
            embeddings = mods.embedding_model.fc(pooled[..., None]).transpose(1, 2)  # as ECAPA_TDNN.forward
            log_posteriors = mods.classifier(embeddings).squeeze(1)
            score, index = log_posteriors.max(dim=-1)
        return list(self.labels.decode_torch(index)), score.exp().tolist()


def _labelled_batches(classifier, records, root: Path, batch_size: int, workers: int, summary: LidSummary,
                      progress: bool):
    """Yield lists of (clip key, language, confidence), decoding in background workers."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from fva.extract.encoders.ecapa import AudioPreprocess, collate_audio
    from fva.extract.runner import WINDOW_BATCHES, DecodedRecords, _first

    dataset = DecodedRecords(records, root, AudioPreprocess(), classifier.runner.min_samples)
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_first,
                        prefetch_factor=4 if workers else None)
    window: list[tuple[int, object]] = []

    def classify(items):
        items.sort(key=lambda t: len(t[1]))
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            labels, confidences = classifier(*collate_audio([x for _, x in chunk]))
            yield [(utterance_key(records[i]), canonical_language(label), confidence)
                   for (i, _), label, confidence in zip(chunk, labels, confidences)]

    with tqdm(total=len(records), desc="lid", unit="clip", disable=not progress, dynamic_ncols=True) as bar:
        for i, items, reason in loader:
            bar.update(1)
            if reason is not None:
                summary.failed.append(f"{root / records[i].path}: {reason}")
                continue
            window.append((i, items[0][1]))
            if len(window) >= batch_size * WINDOW_BATCHES:
                yield from classify(window)
                window = []
        if window:
            yield from classify(window)


LID_HPARAMS = """\
# Language-ID ECAPA in the layout of speechbrain/lang-id-voxlingua107-ecapa ({note})
pretrained_path: speechbrain/lang-id-voxlingua107-ecapa
n_mels: 60

{ecapa}
classifier: !new:speechbrain.lobes.models.Xvector.Classifier
    input_shape: [null, null, 256]
    activation: !name:torch.nn.LeakyReLU
    lin_blocks: 1
    lin_neurons: 512
    out_neurons: {n_languages}

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    classifier: !ref <classifier>

{pretrainer}"""


def write_lid_model(folder: Path, languages: tuple[str, ...] = ("de: German", "en: English", "fr: French"),
                    channels: int = 32, seed: int = 0, sharpen: float = 30.0) -> Path:
    """A small, seeded, randomly initialised model folder in the VoxLingua107 ECAPA's format (tests, demo)."""
    import torch
    from speechbrain.dataio.encoder import CategoricalEncoder
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    from speechbrain.lobes.models.Xvector import Classifier

    from fva.extract.encoders.ecapa import ECAPA_YAML, pretrainer_yaml
    from fva.train.speaker import ecapa_sizes

    sizes, attention = ecapa_sizes(channels)
    torch.manual_seed(seed)
    model = ECAPA_TDNN(60, channels=sizes, kernel_sizes=[5, 3, 3, 3, 1], dilations=[1, 2, 3, 4, 1],
                       attention_channels=attention, lin_neurons=256)
    classifier = Classifier(input_shape=[None, None, 256], activation=torch.nn.LeakyReLU, lin_blocks=1,
                            lin_neurons=512, out_neurons=len(languages))
    with torch.no_grad():  # sharpen the random posteriors, so that clips get confident, differing labels
        classifier.out.w.weight.mul_(sharpen)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hyperparams.yaml").write_text(LID_HPARAMS.format(
        note=f"fva test model, random init, seed {seed}", n_languages=len(languages),
        ecapa=ECAPA_YAML.format(channels=sizes, attention=attention, lin_neurons=256),
        pretrainer=pretrainer_yaml("embedding_model", "classifier", "label_encoder")))
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    torch.save(classifier.state_dict(), folder / "classifier.ckpt")
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(languages)
    encoder.save(folder / "label_encoder.txt")
    return folder


def fit_output_layer(folder: Path, clips: list[tuple[Path, str]], device: str = "cpu") -> Path:
    """Fit the output layer of a language-ID model folder (as :func:`write_lid_model` writes) to labelled clips
    (``(audio path, language)``): a logistic regression (scikit-learn) on the classifier's last hidden layer,
    written into ``classifier.ckpt``. For stand-in models of synthetic data, which a random LID labels all alike."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from fva.extract.media import load_audio

    model = LidModel(str(folder), device)
    labels = {canonical_language(label): model.labels.encode_label(label) for label in model.labels.lab2ind}
    unknown = sorted({lang for _, lang in clips} - set(labels))
    if unknown:
        raise FvaError(f"{folder}: the model has no label for {unknown[0]} (labels: {', '.join(sorted(labels))})")
    hidden: list[np.ndarray] = []
    out = model.model.mods.classifier.out
    handle = out.register_forward_pre_hook(lambda _module, args: hidden.append(args[0].reshape(-1, args[0].shape[-1])
                                                                                 .detach().cpu().numpy()))
    try:
        for path, _ in clips:
            audio = torch.from_numpy(load_audio(path))[None]
            model(audio, torch.tensor([audio.shape[1]]))
    finally:
        handle.remove()
    x, y = np.concatenate(hidden), np.array([labels[lang] for _, lang in clips])
    if len(set(y.tolist())) < 2:
        raise FvaError(f"{folder}: fitting the output layer needs clips of at least two languages")
    fit = LogisticRegression(C=1e4, max_iter=5000).fit(x, y)  # hardly regularised: confident posteriors
    weight = torch.zeros_like(out.w.weight)
    bias = torch.zeros_like(out.w.bias)
    if len(fit.classes_) == 2:  # one decision function: split it over the two classes' logits
        coef, intercept = torch.from_numpy(fit.coef_[0]).float(), float(fit.intercept_[0])
        weight[fit.classes_[1]], bias[fit.classes_[1]] = coef / 2, intercept / 2
        weight[fit.classes_[0]], bias[fit.classes_[0]] = -coef / 2, -intercept / 2
    else:
        for row, cls in enumerate(fit.classes_):
            weight[cls], bias[cls] = torch.from_numpy(fit.coef_[row]).float(), float(fit.intercept_[row])
    state = model.model.mods.classifier.state_dict()
    state["out.w.weight"], state["out.w.bias"] = weight, bias
    torch.save(state, Path(folder) / "classifier.ckpt")
    return Path(folder)
