"""`fwbench suite FILE`: an experiment written down as data (suites/seed.yaml), run by the same
code as `fwbench run`.

A suite file is a YAML mapping:

    name: seed                       results go to results/<name> unless --out says otherwise
    description: free text
    frameworks: [pytorch, tensorflow]
    models: [resnet50, vgg19, mobilenet, mobilenet_v2]
    repeats: 5
    spec:                            the options of `fwbench run` that make the TrainSpec, named
      dataset: cifar10               as the options are, without dashes and with underscores:
      batch_size: 32                 batch_size for --batch-size, lr for --lr
    debug_probe:                     optional: after the runs, `fwbench debug-probe` on the
      probes: [channel_order]        suite's frameworks with these of its options (lists for
      executions: [graph]            probes and executions; the small job's own spec options, not
                                     the runs': {} takes every default); debug.csv joins the
                                     results. `modes`, the earlier name of executions, is accepted

Spec values are checked by `options.option_value`, with the very types and choices of
`fwbench run`'s options (orchestrator/inputs/options.py), so a file accepts what the command line
accepts and nothing else; an error names the file and the bad key. The spec is then made by
`options.spec_from_values`, as the command line's is. Options given on the command line (--epochs,
--train-limit, --models, ...) override the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
from pathlib import Path

import yaml

from orchestrator.errors import UserError
from orchestrator.inputs import options
from services.common import frameworks
from services.common import spec as specs

KEYS = ("name", "description", "frameworks", "models", "repeats", "spec", "debug_probe")
REQUIRED = ("name", "frameworks", "models")


class SuiteError(UserError):
    """The suite file is unreadable or invalid; the message names the file and the key."""


@dataclasses.dataclass
class Suite:
    name: str
    description: str
    frameworks: list[str]
    models: list[str]
    repeats: int
    spec: dict  # option dest -> value, checked and converted as `fwbench run`'s options are
    # The arguments of `fwbench debug-probe` (frameworks, out and launch options aside), or None.
    debug_probe: argparse.Namespace | None = None


def load(path: Path) -> Suite:
    """Reads and validates a suite file; raises SuiteError naming the bad key."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SuiteError(f"cannot read suite file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise SuiteError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: expected a mapping of {', '.join(KEYS)}")
    for key in data:
        if key not in KEYS:
            raise SuiteError(f"{path}: {key}: unknown key{_did_you_mean(key, KEYS)}")
    for key in REQUIRED:
        if key not in data:
            raise SuiteError(f"{path}: {key}: required")
    name = data["name"]
    if not isinstance(name, str) or not name or "/" in name:
        raise SuiteError(f"{path}: name: expected a non-empty string without '/', got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SuiteError(f"{path}: description: expected a string, got {description!r}")
    repeats = data.get("repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise SuiteError(f"{path}: repeats: expected an integer >= 1, got {repeats!r}")
    spec = data.get("spec") or {}
    if not isinstance(spec, dict):
        raise SuiteError(f"{path}: spec: expected a mapping of `fwbench run` options")
    debug_probe = None
    if "debug_probe" in data:
        debug_probe = _debug_probe(path, data["debug_probe"] or {})
    return Suite(
        name=name,
        description=description,
        frameworks=_names(path, "frameworks", data["frameworks"], frameworks.NAMES),
        models=_names(path, "models", data["models"], specs.MODELS),
        repeats=repeats,
        spec=_spec(path, spec),
        debug_probe=debug_probe,
    )


def _names(path: Path, key: str, value, allowed: tuple[str, ...]) -> list[str]:
    if not isinstance(value, list) or not value:
        raise SuiteError(f"{path}: {key}: expected a non-empty list, e.g. [{', '.join(allowed)}]")
    for item in value:
        if item not in allowed:
            raise SuiteError(
                f"{path}: {key}: {item!r} is not one of {', '.join(allowed)}"
                f"{_did_you_mean(str(item), allowed)}"
            )
    if len(set(value)) != len(value):
        raise SuiteError(f"{path}: {key}: lists {value} with a repeat; use `repeats` instead")
    return list(value)


def _spec(path: Path, spec: dict) -> dict:
    dests = options.spec_dests()
    values = {}
    for key, value in spec.items():
        where = f"{path}: spec.{key}"
        if key not in dests:
            hint = _did_you_mean(key, dests)
            raise SuiteError(f"{where}: not an option of `fwbench run`{hint}")
        try:
            values[key] = options.option_value(key, value)
        except options.OptionError as e:
            raise SuiteError(f"{where}: {e}") from e
    return values


def _debug_probe(path: Path, values) -> argparse.Namespace:
    """The debug_probe mapping, checked as the options of `fwbench debug-probe` are; the rest
    their defaults (the small job's)."""
    if not isinstance(values, dict):
        raise SuiteError(
            f"{path}: debug_probe: expected a mapping of `fwbench debug-probe` options"
        )
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    options.add_debug_probe_arguments(parser)
    parsed = parser.parse_args([])  # the defaults; the file's values are set below
    # The suite's frameworks are probed: one list of them per file.
    del parsed.frameworks
    allowed = list(vars(parsed))
    for written, value in values.items():
        where = f"{path}: debug_probe.{written}"
        key = options.DEBUG_PROBE_ALIASES.get(written, written)
        if key not in allowed:
            raise SuiteError(
                f"{where}: not an option of `fwbench debug-probe`{_did_you_mean(written, allowed)}"
            )
        try:
            setattr(parsed, key, options.debug_probe_value(key, value))
        except options.OptionError as e:
            raise SuiteError(f"{where}: {e}") from e
    return parsed


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def run_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """The arguments of `fwbench run` for `fwbench suite` args: the file's values, then every
    option given on the command line over them (options default to None: not given)."""
    loaded = load(args.file)
    run = argparse.Namespace(**vars(args))
    for key, value in loaded.spec.items():
        if getattr(args, key) is None:
            setattr(run, key, value)
    run.frameworks = args.frameworks or loaded.frameworks
    run.models = args.models or loaded.models
    run.repeats = args.repeats or loaded.repeats
    run.debug_probe = loaded.debug_probe
    if not args.resume:
        run.out = args.out or Path("results") / loaded.name
    return run
