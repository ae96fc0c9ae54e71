"""`mechgrok import`: turn checkpoints saved by other codebases into a mechgrok trajectory.

Containers, detected from SOURCE (docs/guide/import.md lists them):
- a folder of per-step `.pt`/`.pth` files, each a state_dict or a dict holding one under
  `model`/`state_dict`/`net`; the step from its `epoch`/`step` key, else the number in the
  file name; scalar `train_loss`, `test_loss`, `train_acc`, `test_acc` carried as
  train_loss, val_loss, train_acc, val_acc. Files with no step (train_data.pth) are skipped.
- a folder of `.safetensors` files (step from the file name; `config.json` beside them read
  for the modulus under `p`, `modulus`, `P` or `prime`);
- either folder with a `checkpoints.json` manifest listing files with `step` and `sha256`:
  its steps are used and every checksum verified;
- one file holding a list of state_dicts with their steps (`checkpoints` + `checkpoint_epochs`,
  `state_dicts` + `epochs`, `net` + `net_its`; `train_losses`/`test_losses` lists alongside;
  `train_indices` (pairs a * p + b) carried as the trajectory's train_a, train_b);
- one file that is a dict {step: state_dict}.
Checkpoints are read one at a time (a single file through torch.load's mmap), with
`weights_only=True` unless the caller trusts the pickle. Parameters are mapped by layouts.py.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mechgrok.config import OPERATIONS, check_operation
from mechgrok.errors import (
    CheckpointImportError,
    InputNotFoundError,
    InvalidOptionError,
    MechgrokWarning,
)
from mechgrok.ingest.layouts import LayoutError, as_numpy
from mechgrok.ingest.transformer_layouts import model_shapes_of, snapshot_curves, transformer_attrs
from mechgrok.models.activations import check_activation
from mechgrok.store.outputs import check_readable_input, check_room
from mechgrok.store.writer import TrajectoryWriter, check_step, trajectory_bytes

TORCH_SUFFIXES = (".pt", ".pth")
STATE_KEYS = ("model", "state_dict", "net")
STEP_KEYS = ("step", "epoch", "iter", "iteration", "global_step")
# the names real codebases save their metrics under -> the trajectory's
METRIC_KEYS = {
    **{f"train_{kind}": "train_loss" for kind in ("loss",)},
    **{f"train_{kind}": "train_acc" for kind in ("acc", "accuracy")},
    **{f"{split}_loss": "val_loss" for split in ("test", "val", "valid", "validation")},
    **{
        f"{split}_{kind}": "val_acc"
        for split in ("test", "val", "valid", "validation")
        for kind in ("acc", "accuracy")
    },
}
LIST_KEYS = (("checkpoints", "checkpoint_epochs"), ("state_dicts", "epochs"), ("net", "net_its"))
LIST_METRICS = {
    "train_losses": "train_loss",
    **{f"{split}_losses": "val_loss" for split in ("test", "val")},
    **{f"train_{kind}": "train_acc" for kind in ("accs", "accuracies")},
    **{
        f"{split}_{kind}": "val_acc" for split in ("test", "val") for kind in ("accs", "accuracies")
    },
}
MODULUS_KEYS = ("p", "modulus", "P", "prime", "C", "mod")
UNKNOWN_STEP = -1  # a lone checkpoint that says nothing of its step: stored as step 0, marked
SPLIT_KEY = "train_indices"  # TransformerLens demo: indices a * p + b of the training pairs


def import_checkpoints(
    source: str | os.PathLike,
    out: str | os.PathLike,
    modulus: int | None = None,
    keys: Mapping[str, str] | None = None,
    force: bool = False,
    trust_pickle: bool = False,
    on_snapshot: Callable[[int, int], None] | None = None,
    activation: str = "relu",
    operation: str = "add",
    space_check: bool = True,
) -> Path:
    """Convert the run at `source` into a trajectory at `out` (see module docstring); returns
    `out`. `on_snapshot(done, total)` reports progress (first with done = 0). The file takes
    its name once every checkpoint is in: an import that fails or is interrupted leaves none
    (one killed by SIGKILL leaves a hidden partial file, removed by the next write of `out`). `activation` is the imported
    model's nonlinearity (stored; the analysis scores the real weights with it); `operation`
    the task it was trained on (config.OPERATIONS; the analysis reads its law). `space_check`:
    refuse, before writing, an import whose trajectory would not fit on the disk."""
    check_activation(activation)
    if operation not in OPERATIONS:
        raise InvalidOptionError(
            f"unknown operation {operation!r}; use one of {', '.join(OPERATIONS)}"
        )
    source, out = Path(source), Path(out)
    if not os.path.lexists(source):
        raise InputNotFoundError(f"{source}: no such file or folder")
    if not source.is_dir():
        check_readable_input(source)  # a FIFO or device would block the loader
    entries, container, config_modulus, train_indices, run_config = _entries(source, trust_pickle)
    modulus = modulus if modulus is not None else config_modulus
    step_known = not (len(entries) == 1 and entries[0][0] == UNKNOWN_STEP)
    if not step_known:
        entries = [(0, entries[0][1], entries[0][2])]
    for step, label, _ in entries:
        check_step(step, label)
    entries = _without_copies(entries, source)
    entries.sort(key=lambda entry: entry[0])
    if on_snapshot is not None:
        on_snapshot(0, len(entries))
    writer, shapes = None, None
    mapped = None if source.is_dir() else MappedFile(source)
    nonfinite, repeated, previous = [], [], None
    try:
        for done, (step, label, load) in enumerate(entries):
            parameters, metrics = load()
            try:
                curves, layout = snapshot_curves(
                    parameters, modulus, keys, run_config, operation, activation
                )
            except LayoutError as err:
                raise CheckpointImportError(f"{label}: {err}") from None
            if not all(np.isfinite(value).all() for value in curves.values()):
                nonfinite.append(step)
            if previous is not None and all(
                np.array_equal(value, previous[name]) for name, value in curves.items()
            ):
                repeated.append(step)
            previous = curves
            found = {name: value.shape for name, value in curves.items()}
            if writer is None:
                H, p = curves["W_a"].shape
                modulus, shapes = p, found
                try:
                    check_operation(operation, p)
                except ValueError as err:
                    raise CheckpointImportError(f"{source}: {err}") from None
                model_shapes = model_shapes_of(curves)
                model_floats = sum(
                    value.size * value.itemsize // 4
                    for name, value in curves.items()
                    if name not in MLP_CURVES
                )
                if space_check:
                    size = trajectory_bytes(p, H, len(entries), model_floats=model_floats)
                    check_room(
                        out.parent,
                        size,
                        size,
                        f"{len(entries):,} checkpoints of {H} neurons at p = {p}",
                    )
                writer = TrajectoryWriter.create_external(
                    out,
                    p,
                    H,
                    bias="b_in" in curves and "b_out" in curves,
                    force=force,
                    attrs={
                        "origin": f"mechgrok import of {source}",
                        "source_container": container,
                        "source_steps": len(entries),
                        "activation": activation,
                        "operation": operation,
                        "step_known": int(step_known),
                        **(
                            transformer_attrs(model_shapes, layout)
                            if model_shapes and layout
                            else {}
                        ),
                    },
                    publish_at_finish=True,  # an interrupted import leaves no half file
                    shapes=model_shapes,
                )
                if train_indices is not None:
                    writer.write_split(*_split_pairs(train_indices, p, source))
            elif found != shapes:
                raise CheckpointImportError(
                    f"{label}: shapes {found} differ from the first checkpoint's {shapes}"
                )
            writer.write_snapshot(step, curves, metrics)
            if mapped is not None and done % RELEASE_EVERY == RELEASE_EVERY - 1:
                mapped.release()
            if on_snapshot is not None:
                on_snapshot(done + 1, len(entries))
        assert writer is not None  # made with the first checkpoint, and there is one
        writer.finish(f"imported: last of {len(entries)} checkpoints")
        _warn_of(nonfinite, "hold NaN or infinite weights (a diverged run?)", len(entries))
        _warn_of(
            repeated,
            "equal the checkpoint before them to the bit (saved without copying the tensors?)",
            len(entries),
        )
    finally:
        if writer is not None:
            writer.close()
    return out


Entry = tuple[int, str, Callable[[], Any]]  # step, label, loader of (state dict, metrics)
MLP_CURVES = ("W_a", "W_b", "W_out", "b_in", "b_out")


def _entries(
    source: Path, trust_pickle: bool
) -> tuple[list[Entry], str, int | None, object, Mapping | None]:
    """(step, label, loader) for every checkpoint, the container's name, a modulus from a
    config file, the stored training-pair indices (or None) and the run's saved options (a
    config.json, or a container's `config`; None), loading no checkpoint yet."""
    if source.is_dir():
        files = sorted(
            path for path in source.iterdir() if path.suffix in (*TORCH_SUFFIXES, ".safetensors")
        )
        manifest = source / "checkpoints.json"
        if manifest.exists():
            return (
                _manifest_entries(source, manifest, trust_pickle),
                "folder with checkpoints.json",
                _config_modulus(source),
                None,
                _json_config(source / "config.json"),
            )
        if not files:
            raise CheckpointImportError(
                f"{source}: no .pt, .pth or .safetensors checkpoints in this folder"
            )
        entries = []
        split = None
        for path in files:
            step = _step_from_name(path)
            if path.suffix == ".safetensors":
                if step is None:
                    raise CheckpointImportError(f"{path}: no step number in the file name")
                entries.append((step, str(path), _safetensors_loader(path)))
                continue
            # a memory-mapped load reads only the pickled structure, not the tensors: the scan stays cheap
            content = _load_torch(path, trust_pickle, mmap=True)
            state, metrics, own_step = _unpack(content, path)
            step = own_step if own_step is not None else step
            if path.stem == "init" and step is None:  # Nanda et al.'s weights before training
                step = 0
                split = (
                    _split_pairs_of(content.get("train_data"))
                    if isinstance(content, Mapping)
                    else None
                )
            if state is None or step is None:
                continue  # data files (splits, configs) beside the checkpoints
            entries.append(
                (
                    step,
                    str(path),
                    lambda path=path: _unpack(_load_torch(path, trust_pickle, mmap=True), path)[:2],
                )
            )
        if not entries:
            raise CheckpointImportError(
                f"{source}: no file in this folder holds a state_dict with a step"
            )
        kind = (
            "folder of .safetensors"
            if files[0].suffix == ".safetensors"
            else "folder of per-step files"
        )
        pairs = _pairs_file(source / "train_data.pth")
        return (
            entries,
            kind,
            _config_modulus(source),
            pairs if pairs is not None else split,
            _json_config(source / "config.json"),
        )
    content = _load_torch(source, trust_pickle, mmap=True)
    train_indices = content.get(SPLIT_KEY) if isinstance(content, Mapping) else None
    modulus = _config_modulus(source.parent, source)
    run_config = content.get("config") if isinstance(content, Mapping) else None
    if isinstance(run_config, PickledObject):  # a pickled config object, read as data
        run_config = vars(run_config)
    elif not isinstance(run_config, Mapping):
        run_config = None
    return (
        _single_file_entries(source, content),
        "single file",
        modulus,
        train_indices,
        run_config,
    )


def _split_pairs_of(train_data) -> np.ndarray | None:
    """Nanda et al.'s training data, a list of (a, b, =) token triples, as rows (a, b), or
    None when it is not that."""
    try:
        rows = np.asarray(train_data, dtype=np.int64)
    except (TypeError, ValueError):
        return None
    return rows[:, :2] if rows.ndim == 2 and rows.shape[1] == 3 and rows.size else None


def _json_config(path: Path) -> Mapping | None:
    """A run folder's config.json as a mapping (None when absent or not an object)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        raise CheckpointImportError(f"{path}: not valid JSON") from None
    return data if isinstance(data, Mapping) else None


def _single_file_entries(path: Path, content) -> list[Entry]:
    if isinstance(content, Mapping):
        for states_key, steps_key in LIST_KEYS:
            if (
                states_key in content
                and steps_key in content
                and isinstance(content[states_key], (list, tuple))
            ):
                states, steps = list(content[states_key]), [int(s) for s in content[steps_key]]
                if len(states) != len(steps):
                    raise CheckpointImportError(
                        f"{path}: {len(states)} {states_key} but {len(steps)} {steps_key}"
                    )
                series = {
                    name: list(content[key])
                    for key, name in LIST_METRICS.items()
                    if isinstance(content.get(key), (list, tuple))
                }

                def metrics_at(step: int, series: dict = series) -> dict:
                    # loss lists are per step (index = step) where long enough, as these codebases log every step
                    return {
                        name: _scalar(values[step])
                        for name, values in series.items()
                        if step < len(values)
                    }

                return [
                    (
                        step,
                        f"{path}[{states_key}][{i}]",
                        lambda i=i, step=step, states=states: (states[i], metrics_at(step)),  # type: ignore[misc]
                    )
                    for i, step in enumerate(steps)
                ]
        if (
            content
            and all(_is_int(key) for key in content)
            and all(isinstance(v, Mapping) for v in content.values())
        ):
            return [
                (int(key), f"{path}[{key}]", lambda key=key: (content[key], {}))  # type: ignore[misc]
                for key in content
            ]
        if content and all(_is_int(key) for key in content):
            kinds = sorted(
                {type(v).__name__ for v in content.values() if not isinstance(v, Mapping)}
            )
            raise CheckpointImportError(
                f"{path}: a {{step: ...}} dict whose values are not state dicts ({', '.join(kinds)})"
            )
        state, metrics, step = _unpack(content, path)
        if state is not None:
            if step is None and not _config_for(path).is_file():  # model_<id>.pt: an id, not a step
                step = _step_from_name(path)
            unknown = UNKNOWN_STEP if step is None else step  # a final-only checkpoint, say
            return [(unknown, str(path), lambda: (state, metrics))]
    raise CheckpointImportError(
        f"{path}: not a checkpoint container mechgrok knows (a state_dict, a list of state_dicts "
        "with their steps, or {step: state_dict})"
    )


MADV_DONTNEED = 4
RELEASE_EVERY = 32  # checkpoints between releases of a mapped file's pages: memory ~ 32 checkpoints


class MappedFile:
    """This process's private read-only mappings of one file (torch.load's mmap), whose
    resident pages `release` drops (Linux madvise MADV_DONTNEED; the data stays reachable
    and is read from the file again when touched). Keeps an import of one large file from
    holding the whole file in memory; elsewhere a no-op."""

    def __init__(self, path: Path):
        self.path = str(path.resolve())
        self._ranges: list[tuple[int, int]] | None = None

    def _find(self) -> list[tuple[int, int]]:
        try:
            maps = Path("/proc/self/maps").read_text().splitlines()
        except OSError:
            return []
        ranges = []
        for line in maps:
            fields = line.split(maxsplit=5)
            if (
                len(fields) == 6
                and fields[5] == self.path
                and fields[1].startswith("r")
                and fields[1][3] == "p"
            ):
                start, end = (int(value, 16) for value in fields[0].split("-"))
                ranges.append((start, end - start))
        return ranges

    def release(self) -> None:
        if self._ranges is None:
            self._ranges = self._find()  # mapped by torch.load before the first checkpoint is read
        if not self._ranges:
            return
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        for start, length in self._ranges:
            libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), MADV_DONTNEED)


def _pairs_file(path: Path):
    """The training pairs a run folder keeps beside its checkpoints (`train_data.pth`: rows
    (a, b[, label]) of integers), or None; a file in another form is named in a note."""
    if not path.is_file():
        return None
    content = _load_torch(path, trust_pickle=False)
    shape = tuple(getattr(content, "shape", ()))
    if (
        len(shape) == 2
        and shape[1] in (2, 3)
        and not getattr(content, "is_floating_point", lambda: True)()
    ):
        return content
    warnings.warn(
        f"{path}: not rows of (a, b) pairs; the import does not carry the training split",
        MechgrokWarning,
        stacklevel=4,
    )
    return None


def _split_pairs(train_indices, p: int, source: Path):
    """(train_a, train_b) from a stored training split: pair indices a * p + b (the
    TransformerLens convention), or rows (a, b[, label]) as a train_data.pth holds them."""
    try:
        array = np.asarray(
            train_indices.detach().cpu().numpy()
            if hasattr(train_indices, "detach")
            else train_indices,
            dtype=np.int64,
        )
    except (TypeError, ValueError):
        raise CheckpointImportError(
            f"{source}: its training split is not a list of pairs"
        ) from None
    if array.ndim == 2 and array.shape[1] in (2, 3):  # rows (a, b) or (a, b, label)
        if array.size == 0 or array[:, :2].min() < 0 or array[:, :2].max() >= p:
            raise CheckpointImportError(
                f"{source}: its training pairs hold tokens outside 0..{p - 1}"
            )
        return array[:, 0], array[:, 1]
    indices = array.reshape(-1)
    if indices.size == 0 or indices.min() < 0 or indices.max() >= p * p:
        raise CheckpointImportError(
            f"{source}: its training split holds values outside the {p * p} pairs of modulus {p}"
        )
    return indices // p, indices % p


def _manifest_entries(folder: Path, manifest: Path, trust_pickle: bool) -> list[Entry]:
    try:
        listed = json.loads(manifest.read_text())
        listed = listed.get("checkpoints", listed) if isinstance(listed, dict) else listed
        rows = [
            (int(row["step"]), folder / str(row.get("file") or row["path"]), row.get("sha256"))
            for row in listed
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointImportError(f"{manifest}: not a checkpoint manifest ({err})") from None
    entries = []
    for step, path, checksum in rows:
        if path.resolve().parent != folder.resolve() or not path.exists():
            raise CheckpointImportError(
                f"{manifest}: lists {path.name}, which is not a file in {folder}"
            )
        if checksum is not None and _sha256(path) != str(checksum).lower():
            raise CheckpointImportError(
                f"{path}: sha256 differs from {manifest.name}'s; the file is damaged or not the one listed"
            )
        loader = (
            _safetensors_loader(path)
            if path.suffix == ".safetensors"
            else (lambda path=path: _unpack(_load_torch(path, trust_pickle), path)[:2])
        )
        entries.append((step, str(path), loader))
    return entries


def _without_copies(entries: list[Entry], source: Path) -> list[Entry]:
    """Entries with one checkpoint per step: a step saved twice with the same weights (a
    `final.pth` beside the last epoch's file) is kept once; with other weights it is an error."""
    by_step: dict[int, list[Entry]] = {}
    for entry in entries:
        by_step.setdefault(entry[0], []).append(entry)
    kept = []
    for step, same in by_step.items():
        if len(same) > 1:
            first = same[0][2]()[0]
            for _, label, load in same[1:]:
                other = load()[0]
                if set(other) != set(first) or not all(
                    np.array_equal(as_numpy(other[k]), as_numpy(first[k])) for k in first
                ):
                    raise CheckpointImportError(
                        f"{source}: step {step} appears more than once with different weights "
                        f"({same[0][1]}, {label})"
                    )
        kept.append(same[0])
    return kept


def _warn_of(steps: list[int], what: str, total: int) -> None:
    """One MechgrokWarning for the imported checkpoints at `steps` that `what`."""
    if steps:
        warnings.warn(
            f"{len(steps)} of {total} imported checkpoints {what}; first at step {steps[0]}",
            MechgrokWarning,
            stacklevel=3,
        )


class PickledObject:
    """Stands in for a class a checkpoint pickles (a config object, say) so that its data can be
    read without importing or running any of its code: the instance keeps the attributes the
    pickle sets (and the arguments it is built with, as `args`)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


def _load_as_data(path: Path, mmap: bool):
    """A checkpoint whose pickle names classes (TransformerLens's demo saves its config object),
    read with torch's weights-only unpickler and each named class replaced by PickledObject:
    nothing of theirs is imported or run. None when that cannot read it either; a note names
    the classes read as plain data."""
    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        stand_ins: list = [
            (_numpy_global(name), name) for name in names if name.startswith("numpy.")
        ]
        if not all(obj is not None for obj, _ in stand_ins):
            return None  # a numpy name that is not plain data
        stand_ins += [
            (type(name.rsplit(".", 1)[-1], (PickledObject,), {}), name)
            for name in names
            if not name.startswith("numpy.")
        ]
        with torch.serialization.safe_globals(stand_ins):
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception:  # noqa: BLE001 - any failure here means: not readable as data
        return None
    warnings.warn(
        f"{path}: read {', '.join(names)} as plain data (its code was not run)",
        MechgrokWarning,
        stacklevel=4,
    )
    return content


# numpy's own names for pickled arrays and dtypes: rebuilt for real (they run no user code)
NUMPY_DATA_GLOBALS = ("_reconstruct", "ndarray", "dtype", "scalar", "Float32DType",
                      "Float64DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType")  # fmt: skip


def _numpy_global(name: str):
    """The numpy object a pickle names when it is one of numpy's array/dtype builders, else None."""
    module, _, attribute = name.rpartition(".")
    if attribute not in NUMPY_DATA_GLOBALS:
        return None
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError):
        return None


def _load_torch(path: Path, trust_pickle: bool, mmap: bool = False):
    import torch

    foreign = _foreign_format(path)
    if foreign:
        raise CheckpointImportError(f"{path}: {foreign}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle, mmap=mmap)
    except pickle.UnpicklingError as err:
        if not trust_pickle and "unsupported global" in str(err).lower():  # code to import
            content = _load_as_data(path, mmap)
            if content is not None:
                return content
            raise CheckpointImportError(
                f"{path}: holds Python objects that loading would have to run as code; nothing was loaded",
                remedy="pass {trust_pickle} if you trust its source",
            ) from None
        detail = next(
            (line.strip() for line in str(err).splitlines() if "Unsupported" in line),
            str(err).splitlines()[0],
        )
        raise CheckpointImportError(f"{path}: not a readable torch checkpoint ({detail})") from None
    except RuntimeError as err:
        if mmap and "mmap" in str(err):  # legacy (non-zip) files cannot be memory-mapped
            return _load_torch(path, trust_pickle, mmap=False)
        reason = str(err).splitlines()[0]
        raise CheckpointImportError(
            f"{path}: unreadable or truncated checkpoint ({reason})"
        ) from None
    except Exception as err:  # noqa: BLE001 - torch.load fails on damaged bytes with any type
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointImportError(
            f"{path}: unreadable or truncated checkpoint ({reason})"
        ) from None


# torch.save's legacy (pre-zip) files open with a pickled magic number
_TORCH_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[2:]
_FOREIGN_SIGNATURES = {
    b"\x89HDF": "an HDF5 file, not a torch checkpoint (a mechgrok trajectory is read by analyze)",
    b"\x93NUMPY": "a numpy .npy array, not a torch checkpoint",
}


def _foreign_format(path: Path) -> str | None:
    """What a file torch.load could not read is, when its first bytes say: a plain Python
    pickle (pickle.dump rather than torch.save), HDF5, numpy. None when they do not say."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError:
        return None
    for signature, what in _FOREIGN_SIGNATURES.items():
        if head.startswith(signature):
            return what
    if head[:1] == b"\x80" and _TORCH_LEGACY_MAGIC not in head:
        return "a plain Python pickle (pickle.dump), not a torch.save checkpoint: torch.save its state_dicts to import them"
    return None


def _safetensors_loader(path: Path):
    def load():
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise CheckpointImportError(
                f"{path}: reading .safetensors needs the safetensors package"
            ) from None
        try:
            return load_file(str(path)), {}
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointImportError(
                f"{path}: unreadable safetensors file ({str(err).splitlines()[0]})"
            ) from None

    return load


def _unpack(content, path: Path) -> tuple[Mapping | None, dict, int | None]:
    """(state_dict or None, metrics, step or None) of one checkpoint file's content."""
    if not isinstance(content, Mapping):
        return None, {}, None
    state = next(
        (content[key] for key in STATE_KEYS if isinstance(content.get(key), Mapping)), None
    )
    if state is None and content and all(hasattr(v, "shape") for v in content.values()):
        state = content  # a bare state_dict
    step = next((int(content[key]) for key in STEP_KEYS if _is_int(content.get(key))), None)
    metrics = {
        name: _scalar(content[key])
        for key, name in METRIC_KEYS.items()
        if _is_number(content.get(key))
    }
    return state, metrics, step


def _scalar(value) -> float:
    """A metric stored as a number, a numpy scalar or a one-element tensor (detached: a
    tensor with requires_grad would make torch warn)."""
    if hasattr(value, "detach"):
        value = value.detach()
    return float(value)


def _step_from_name(path: Path) -> int | None:
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


def _config_for(source: Path) -> Path:
    """The JSON config saved beside `model_<id>.pt` as `config_<id>.json`."""
    return source.with_name(f"config_{source.stem.split('_', 1)[-1]}.json")


def _config_modulus(folder: Path, source: Path | None = None) -> int | None:
    """The modulus in a JSON config beside the checkpoints: `config.json`, or for a file
    `model_<id>.pt` also `config_<id>.json` (keys MODULUS_KEYS)."""
    for config in ([_config_for(source)] if source is not None else []) + [folder / "config.json"]:
        if not config.is_file():
            continue
        try:
            data = json.loads(config.read_text())
        except ValueError:
            raise CheckpointImportError(f"{config}: not valid JSON") from None
        if isinstance(data, Mapping):
            found = next((int(data[key]) for key in MODULUS_KEYS if _is_int(data.get(key))), None)
            if found is not None:
                return found
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_int(value) -> bool:
    try:
        return value is not None and not isinstance(value, bool) and int(value) == float(value)
    except (TypeError, ValueError):
        return False


def _is_number(value) -> bool:
    if hasattr(value, "detach"):
        value = value.detach()
    try:
        return (
            value is not None
            and not isinstance(value, (bool, str))
            and float(value) == float(value)
        )
    except (TypeError, ValueError):
        return False
