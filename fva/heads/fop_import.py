"""The official FAME baseline (FOP) checkpoints as fva experiments: ``fva import-fop CHECKPOINT --out EXP``.

An official checkpoint is a torch file ``{'epoch', 'state_dict'}`` of the gated-fusion FOP (the published
ones take 512-d voice and 4096-d face features, 128-d embeddings). Its state dict loads as it is into the
``fop`` system (:mod:`fva.heads.systems.fop`, same module names); the experiment written holds one fold,
``fold0/checkpoint.pt``, that ``fva score`` reads like a trained one: distance = Euclidean between
tanh(face embedding) and tanh(voice embedding), as the official test code.
"""

from __future__ import annotations

import shutil
from pathlib import Path


from fva import __version__, layout
from fva.errors import FvaError
from fva.heads.systems.fop_checkpoint import read_fop_checkpoint

def features_folder(cache: Path, dataset: str, encoders: list[str]) -> Path:
    """The cache folder (``<cache>/<dataset>/train-full``, else ``test-full``) holding every encoder's cache."""
    for subset in ("train", "test"):
        folder = layout.features_folder(cache, dataset, subset)
        if all((folder / e).is_dir() for e in encoders):
            return folder
    raise FvaError(f"{cache}: no {dataset} train-full or test-full folder holds caches of {', '.join(encoders)}; "
                   "extract them with 'fva extract' or check --cache and --dataset")


def modality_features(checkpoint: Path, modality: str, encoders: list[str], width: int,
                      folder: Path | None) -> dict:
    """``{encoders, dims, weights_ids}`` of one modality: from the caches in ``folder`` (their sizes must add
    up to the checkpoint's input ``width``), or, without caches, one encoder taking the whole width."""
    if not encoders:
        raise FvaError(f"give the {modality} encoder(s) whose features {checkpoint} takes ({width}-d)")
    if folder is None:
        if len(encoders) > 1:
            raise FvaError(f"{checkpoint}: {len(encoders)} {modality} encoders ({', '.join(encoders)}) share its "
                           f"{width}-d {modality} input; give --cache to read their dimensions")
        return {"encoders": list(encoders), "dims": [width], "weights_ids": {encoders[0]: ""}}
    from fva.heads.features import FeatureTable

    table = FeatureTable(folder, encoders)
    try:
        if table.modality != modality:
            raise FvaError(f"{folder}: {', '.join(encoders)} hold {table.modality} features, not {modality}")
        if table.dim != width:
            raise FvaError(f"{folder}: {modality} encoders {', '.join(encoders)} give {table.dim}-d features "
                           f"({' + '.join(map(str, table.dims))}) but {checkpoint} takes {width}-d")
        return {"encoders": list(encoders), "dims": list(table.dims), "weights_ids": dict(table.weights_ids)}
    finally:
        table.close()


def import_fop(checkpoint: Path, out: Path, *, cache: Path | None = None, dataset: str = "mavceleb-v3",
               voice_encoders: list[str], face_encoders: list[str], force: bool = False) -> Path:
    """Write the experiment ``out`` (``config.yaml``, ``experiment.json``, ``fold0/checkpoint.pt``) from an
    official FOP checkpoint. Sizes (voice and face inputs, embedding, gate, identities) come from its
    weights; ``cache`` (optional with one encoder per modality) gives each encoder's dimension and weights
    id. Checks everything before writing; the folder appears whole (written aside, then renamed)."""
    from fva.heads.config import DataConfig, FeaturesConfig, HeadConfig, ModelConfig, TrainConfig
    from fva.experiment import CHECKPOINT_FILE, EXPERIMENT_FORMAT, ExperimentInfo, fold_folder
    from fva.heads.experiment import save_checkpoint, write_experiment
    from fva.heads.systems.fop import FOP, with_own_norms

    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise FvaError(f"{out}: exists; pass --force to overwrite it")
    state, payload = read_fop_checkpoint(checkpoint)
    voice_in = int(state["voice_branch.fc1.0.weight"].shape[1])
    face_in = int(state["face_branch.fc1.0.weight"].shape[1])
    dim = int(state["voice_branch.fc1.0.weight"].shape[0])
    gate_dim = int(state["fusion_layer.attention.0.block.0.weight"].shape[0])
    n_classes = int(state["logits_layer.weight"].shape[0])
    folder = features_folder(Path(cache), dataset, [*voice_encoders, *face_encoders]) if cache else None
    features = {"voice": modality_features(checkpoint, "voice", voice_encoders, voice_in, folder),
                "face": modality_features(checkpoint, "face", face_encoders, face_in, folder)}

    cfg = HeadConfig(features=FeaturesConfig(list(voice_encoders), list(face_encoders)),
                     model=ModelConfig(system="fop", params={"dim": dim, "gate_dim": gate_dim}),
                     data=DataConfig(dataset=dataset),
                     train=TrainConfig(batch_size=32, lr=1e-2, weight_decay=0.01))  # the published training
    model = FOP(voice_in, face_in, n_classes, cfg.model)
    try:
        model.load_state_dict(with_own_norms(state, model), strict=True)  # fva's input norm: the identity
    except RuntimeError as err:  # extra keys (another fusion) or inconsistent shapes
        detail = " ".join(str(err).split())
        raise FvaError(f"{checkpoint}: FOP weights do not load ({detail[:300]})") from None
    model.eval()

    epoch = payload.get("epoch")
    # an imported checkpoint: what its trainer did (fine-tuning, weight set) is not recorded
    info = ExperimentInfo({"format": EXPERIMENT_FORMAT, "fva_version": __version__,
                           "cache": str(Path(cache).resolve()) if cache else "", "dataset": dataset,
                           "train_features": str(folder) if folder else "", "heard": [], "unheard": [], "folds": 1,
                           "features": features})
    tmp = out.with_name(f".{out.name}.importing")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "fold0").mkdir(parents=True)
    write_experiment(tmp, cfg, info)
    save_checkpoint(fold_folder(tmp, 0) / CHECKPOINT_FILE, model,
                    {"classes": [str(i) for i in range(n_classes)], "fold": 0, "split": cfg.data.split,
                     "heard": [], "unheard": [], "epoch": epoch if isinstance(epoch, int) else -1,
                     "source": str(checkpoint.resolve())})
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    tmp.rename(out)
    return out
