"""Demo checkpoints: seeded, randomly initialised models in each source's real on-disk format.

Model hubs cannot be reached from every machine, and the demo must run offline, so ``fva demo-checkpoints``
writes one checkpoint per encoder in the exact format its real source uses and extraction loads them through
the same code as the published models:

    speaker-ecapa/            speechbrain model folder (hyperparams.yaml as the public spkrec-ecapa-voxceleb,
                              channels reduced) with embedding_model / classifier / mean_var_norm_emb .ckpt
                              and label_encoder.txt
    voice-age-gender-ecapa/   fva's voice age-gender folder (see encoders/voice_age_gender.py)
    deepface/.deepface/weights/vgg_face_weights.pth
                              deepface's VGG-Face weights file (the architecture is fixed: full size)
    vit-age-gender/           save_pretrained folder of the ViT age/gender model (small config)
    ecapa-embedding/          speechbrain model folder in the layout of yangwang825/ecapa-tdnn-vox2 (the FLAG
                              2027 organisers' voice model; channels reduced): embedding_model / classifier
                              .ckpt, label_encoder.txt, config.json
    vggface-keras             the same deepface weights file as vggface (one network, two preprocessings)
    imagebind/imagebind_huge.pth
                              a state_dict in the layout of ImageBind's published file (both towers narrow and
                              shallow, plus a few keys of its other modalities), read by imagebind-face and -voice
    face-age/, voice-age/     save_pretrained folders of the age estimators (tiny configs; see encoders/face_age.py
                              and encoders/voice_age.py)

Random encoders still map the demo's trait-driven voices and faces to features that carry those traits,
which is all the demo needs; real systems use the published weights.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from fva.atomic import atomic_path
from fva.extract.catalogue import default_encoders
from fva.extract.encoders.ecapa import ECAPA_YAML, pretrainer_yaml

SPEAKER_HPARAMS = """\
# ECAPA-TDNN speaker model in the layout of speechbrain/spkrec-ecapa-voxceleb ({note})
n_mels: 80
pretrained_path: .
out_n_neurons: {n_classes}

{ecapa}
classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: {lin_neurons}
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

{pretrainer}"""


def save_label_encoder(folder: Path, labels: list[str]) -> None:
    """speechbrain's ``label_encoder.txt`` of ``labels`` (the file its pretrainer collects)."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    encoder = CategoricalEncoder()
    encoder.update_from_iterable(labels)
    encoder.save(folder / "label_encoder.txt")


def save_speaker_ecapa(folder: str | Path, embedding_model: torch.nn.Module, classifier: torch.nn.Module,
                       mean_var_norm_emb: torch.nn.Module, labels: list[str], channels: list[int],
                       attention: int, lin_neurons: int, note: str = "written by fva") -> Path:
    """Write a speechbrain speaker-model folder that ``EncoderClassifier.from_hparams`` loads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hyperparams.yaml").write_text(SPEAKER_HPARAMS.format(
        note=note, n_classes=len(labels), lin_neurons=lin_neurons,
        ecapa=ECAPA_YAML.format(channels=list(channels), attention=attention, lin_neurons=lin_neurons),
        pretrainer=pretrainer_yaml("embedding_model", "mean_var_norm_emb", "classifier", "label_encoder")))
    torch.save(embedding_model.state_dict(), folder / "embedding_model.ckpt")
    torch.save(classifier.state_dict(), folder / "classifier.ckpt")
    mean_var_norm_emb._save(folder / "mean_var_norm_emb.ckpt")
    save_label_encoder(folder, labels)
    return folder


def write_demo_speaker_ecapa(folder: Path, seed: int = 0, channels: tuple[int, ...] = (128, 128, 128, 128, 384),
                             ) -> Path:
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
    from speechbrain.processing.features import InputNormalization

    torch.manual_seed(seed)
    model = ECAPA_TDNN(80, channels=list(channels), kernel_sizes=[5, 3, 3, 3, 1], dilations=[1, 2, 3, 4, 1],
                       attention_channels=64, lin_neurons=192)
    labels = [f"id{i:05d}" for i in range(16)]
    classifier = Classifier(input_size=192, out_neurons=len(labels))
    norm = InputNormalization(norm_type="global", std_norm=False)
    norm(torch.randn(4, 1, 192), torch.ones(4))  # one update so its statistics are defined
    return save_speaker_ecapa(folder, model, classifier, norm, labels, list(channels), 64, 192,
                              note=f"fva demo checkpoint, random init, seed {seed}")


# The layout of yangwang825/ecapa-tdnn-vox2's hyperparams.yaml: Fbank with deltas off, an ECAPA with explicit groups,
# a classifier over VoxCeleb2's speakers, no embedding normalisation; the pretrainer collects the embedding
# model, the classifier and the label encoder
ORGANISER_HPARAMS = """\
# ECAPA-TDNN speaker model in the layout of yangwang825/ecapa-tdnn-vox2 ({note})
n_mels: 80
deltas: False
pretrained_path: {pretrained_path}
out_n_neurons: {n_classes}

{ecapa}
classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: {lin_neurons}
    out_neurons: !ref <out_n_neurons>

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

{pretrainer}"""


def organiser_ecapa_yaml(channels: list[int], attention: int, lin_neurons: int) -> str:
    """fva's ECAPA front end and model (:data:`~fva.extract.encoders.ecapa.ECAPA_YAML`) as the organisers' model
    spells them: the Fbank's ``deltas`` and the ECAPA's ``groups`` written out."""
    text = ECAPA_YAML.format(channels=list(channels), attention=attention, lin_neurons=lin_neurons)
    text = text.replace("    n_mels: !ref <n_mels>\n", "    n_mels: !ref <n_mels>\n    deltas: !ref <deltas>\n", 1)
    return text.replace("    dilations: [1, 2, 3, 4, 1]\n", "    dilations: [1, 2, 3, 4, 1]\n    groups: [1, 1, 1, 1, 1]\n", 1)


def write_organiser_ecapa(folder: str | Path, seed: int = 0, channels: tuple[int, ...] = (64, 64, 64, 64, 192),
                          attention: int = 32, lin_neurons: int = 192, n_classes: int = 16,
                          pretrained_path: str = ".") -> Path:
    """A seeded random ECAPA in the on-disk layout of ``yangwang825/ecapa-tdnn-vox2`` (``from_hparams`` loads it
    as it loads the hub model): hyperparams.yaml, embedding_model.ckpt, classifier.ckpt, label_encoder.txt and
    speechbrain's config.json. ``pretrained_path``: where the hyperparams say the files are (the hub's copy
    names its hub id; a local folder is loaded with it pointed at the folder)."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = ECAPA_TDNN(80, channels=list(channels), kernel_sizes=[5, 3, 3, 3, 1], dilations=[1, 2, 3, 4, 1],
                       groups=[1, 1, 1, 1, 1], attention_channels=attention, lin_neurons=lin_neurons)
    classifier = Classifier(input_size=lin_neurons, out_neurons=n_classes)
    (folder / "hyperparams.yaml").write_text(ORGANISER_HPARAMS.format(
        note=f"fva demo checkpoint, random init, seed {seed}", pretrained_path=pretrained_path,
        n_classes=n_classes, lin_neurons=lin_neurons, ecapa=organiser_ecapa_yaml(list(channels), attention, lin_neurons),
        pretrainer=pretrainer_yaml("embedding_model", "classifier", "label_encoder")))
    (folder / "config.json").write_text('{\n    "speechbrain_interface": "EncoderClassifier"\n}\n')
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    torch.save(classifier.state_dict(), folder / "classifier.ckpt")
    save_label_encoder(folder, [f"id{i:05d}" for i in range(n_classes)])
    return folder


def write_demo_vggface(deepface_home: Path, seed: int = 0) -> Path:
    """deepface's VGG-Face architecture, seeded random weights, saved where deepface looks for them."""
    from fva.extract.encoders.vggface import use_pytorch_backend

    use_pytorch_backend()
    from deepface.models.facial_recognition.pytorch.VGGFace import base_model

    torch.manual_seed(seed)
    model = base_model()
    # PyTorch's default init lets the biases swamp the input through 16 layers (every image then gets the
    # same embedding); He init keeps the demo features image-dependent
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.normal_(module.bias, std=0.01)
    path = Path(deepface_home) / ".deepface" / "weights" / "vgg_face_weights.pth"
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return path


DEMO_ENCODERS = tuple(default_encoders())  # the catalogue's default four


def write_demo_checkpoints(out: str | Path, seed: int = 0, names: tuple[str, ...] = DEMO_ENCODERS) -> dict[str, Path]:
    """Write the demo checkpoints of the encoders ``names`` (default: the four of FAME 2026; also the FLAG 2027
    organisers' ``ecapa-embedding`` and ``vggface-keras``) under ``out``; returns name -> ``--weights`` value. Both VGG-Face encoders read one file."""
    from fva.errors import FvaError
    from fva.extract.encoders.face_age import save_face_age
    from fva.extract.encoders.face_age import tiny_config as face_age_config
    from fva.extract.encoders.imagebind import save_imagebind
    from fva.extract.encoders.vit_age_gender import demo_config, save_vit_age_gender
    from fva.extract.encoders.voice_age import save_voice_age
    from fva.extract.encoders.voice_age import tiny_config as voice_age_config
    from fva.extract.encoders.voice_age_gender import init_voice_age_gender, save_voice_age_gender
    from fva.extract.weights import IMAGEBIND_FILE

    out = Path(out)
    writers = {
        "speaker-ecapa": lambda: write_demo_speaker_ecapa(out / "speaker-ecapa", seed),
        "voice-age-gender-ecapa": lambda: save_voice_age_gender(
            out / "voice-age-gender-ecapa", init_voice_age_gender(seed=seed + 1),
            meta={"trained_on": f"nothing: fva demo checkpoint, random init, seed {seed + 1}"}),
        "vit-age-gender": lambda: save_vit_age_gender(out / "vit-age-gender", demo_config(), seed=seed + 3),
        "ecapa-embedding": lambda: write_organiser_ecapa(out / "ecapa-embedding", seed + 4),
        "face-age": lambda: save_face_age(out / "face-age", face_age_config(), seed=seed + 5),
        "voice-age": lambda: save_voice_age(out / "voice-age", voice_age_config(), seed=seed + 6),
    }
    # one deepface weights file for vggface and vggface-keras, written once
    writers["vggface"] = writers["vggface-keras"] = functools.cache(lambda: write_demo_vggface(out / "deepface",
                                                                                               seed + 2))
    # one ImageBind checkpoint for both of its towers, as the published imagebind_huge.pth
    writers["imagebind-face"] = writers["imagebind-voice"] = functools.cache(
        lambda: save_imagebind(out / "imagebind" / IMAGEBIND_FILE, seed=seed + 7))
    unknown = [n for n in names if n not in writers]
    if unknown:
        raise FvaError(f"no demo checkpoint {unknown[0]!r}; choose from {', '.join(writers)}")
    return {name: writers[name]() for name in names}
