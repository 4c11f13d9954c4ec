"""Datasets on the orchestrator's side: where a prepared dataset lives."""

from __future__ import annotations

from pathlib import Path

from orchestrator.cli import UserError

DEFAULT_DATA_ROOT = Path("data")


def resolve(dataset: str, data_dir: Path | None) -> Path:
    """The prepared dataset directory for --dataset/--data-dir."""
    path = data_dir or (DEFAULT_DATA_ROOT / dataset if dataset == "cifar10" else Path(dataset))
    if not (path / "meta.json").exists():
        raise UserError(
            f"{path} holds no prepared dataset (no meta.json): run "
            f"`fwbench data prepare --source SOURCE --out {path}` first"
        )
    return path.resolve()
