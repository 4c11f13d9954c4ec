"""One source of defaults: services/common/spec.py. Any client, the CLI included, gets the same
spec from the same unset fields, and what a person sets is never replaced."""

from __future__ import annotations

import re

import pytest

from fwbench.v1 import trainer_pb2 as pb
from orchestrator import cli
from orchestrator.inputs import options
from services.common import spec as specs
from tests.conftest import ROOT


@pytest.mark.parametrize(
    ("architecture", "init"), [("canonical", "shared"), ("library", "framework")]
)
def test_init_follows_the_architecture_when_unset(architecture, init):
    spec = specs.with_defaults(
        pb.TrainSpec(model=pb.ModelSpec(name="vgg19", architecture=architecture))
    )
    assert spec.model.init == init
    specs.validate(spec)  # a library model without init is valid, from any client


def test_a_set_init_is_kept():
    spec = pb.TrainSpec(model=pb.ModelSpec(name="vgg19", init="framework"))
    assert specs.with_defaults(spec).model.init == "framework"


def test_the_command_line_sets_only_what_was_given():
    args = cli.parser().parse_args(
        ["run", "--out", "x", "--lr", "0.1", "--architecture", "library"]
    )
    spec = options.build_spec(args)
    assert spec.optimizer.learning_rate == 0.1
    assert spec.model.init == "framework"
    assert spec.epochs == specs.DEFAULTS["epochs"]
    assert spec.optimizer.momentum == specs.DEFAULTS["optimizer"]["momentum"]


def test_every_spec_option_shows_its_default():
    for option in options.SPEC_OPTIONS:
        if not option.is_flag and option.field not in options.UNSET_MEANS:
            specs.effective_default(option.field)  # a KeyError names a field without a default


def test_building_a_spec_for_each_model_leaves_the_base_alone():
    base = options.build_spec(cli.parser().parse_args(["run", "--out", "x"]))
    copies = [options.for_model(base, model) for model in specs.MODELS]
    assert [c.model.name for c in copies] == list(specs.MODELS)
    assert base.model.name == ""


# ---- the contract's comments state the same defaults ---------------------------------------

PROTO = ROOT / "proto" / "fwbench" / "v1" / "trainer.proto"
# The one way the proto states a default: "Unset means VALUE." / "Empty means VALUE." (its header).
STATED_DEFAULT = re.compile(r"\b(?:Unset|Empty) means ([^\s,;]+)")
# Other ways of stating one, which would escape the check: "Unset: 32", "unset means 0.9", "0, the
# default", "(default 5)".
OTHER_WAYS = re.compile(
    r"\b(?:[Uu]nset|[Ee]mpty)\s*:|\b(?:unset|empty) means|\bthe default\b|\(default\b"
)


def proto_messages(text: str) -> dict[str, dict[str, tuple[str, str]]]:
    """{message: {field: (type, the comment above it, joined)}} of the top-level messages."""
    messages: dict[str, dict[str, tuple[str, str]]] = {}
    fields: dict[str, tuple[str, str]] | None = None
    comment: list[str] = []
    depth = 0
    for line in text.splitlines():
        line = line.strip()
        if match := re.fullmatch(r"message (\w+) \{(\})?", line):
            fields = messages.setdefault(match.group(1), {})
            depth = 0 if match.group(2) else 1
            comment = []
        elif line.startswith("//"):
            comment.append(line.removeprefix("//").strip())
        elif fields is not None and (
            match := re.fullmatch(r"(?:optional |repeated )?([\w.<>, ]+?) (\w+) = \d+;", line)
        ):
            fields[match.group(2)] = (match.group(1), " ".join(comment))
            comment = []
        else:
            if line.endswith("{"):  # a oneof (or an enum) inside the message
                depth += 1
            elif line == "}":
                depth -= 1
                fields = fields if depth else None
            comment = []
    return messages


def stated_defaults(messages, message: str, prefix: str = "") -> dict[str, str]:
    """{dotted field path: the default its comment states}, through nested messages."""
    stated = {}
    for field, (kind, comment) in messages[message].items():
        if kind in messages:
            stated |= stated_defaults(messages, kind, f"{prefix}{field}.")
        elif match := STATED_DEFAULT.search(comment):
            stated[prefix + field] = match.group(1).rstrip(".")
    return stated


def _leaves(defaults: dict, prefix: str = "") -> dict[str, object]:
    leaves = {}
    for key, value in defaults.items():
        if isinstance(value, dict):
            leaves |= _leaves(value, f"{prefix}{key}.")
        else:
            leaves[prefix + key] = value
    return leaves


def _equal(stated: str, default: object) -> bool:
    if isinstance(default, str):
        return stated == default
    return type(default)(stated) == default


def test_the_proto_states_the_defaults_of_spec_py():
    messages = proto_messages(PROTO.read_text())
    for message, defaults in (
        ("TrainSpec", specs.DEFAULTS),
        (
            "InspectRequest",
            {k: specs.INSPECT_DEFAULTS[k] for k in ("probe_batch_size", "train_steps")},
        ),
    ):
        # InspectRequest's spec is a TrainSpec, checked as one.
        stated = {
            path: value
            for path, value in stated_defaults(messages, message).items()
            if message == "TrainSpec" or not path.startswith("spec.")
        }
        leaves = _leaves(defaults)
        # Every default is stated, on its own field, and nothing else states one.
        assert sorted(stated) == sorted(leaves), message
        wrong = {p: (stated[p], leaves[p]) for p in leaves if not _equal(stated[p], leaves[p])}
        assert wrong == {}, f"{message}: the proto states (stated, spec.py's): {wrong}"


def test_the_proto_states_the_precision_each_mode_trains_in_when_unset():
    _, comment = proto_messages(PROTO.read_text())["TrainSpec"]["precision"]
    stated = re.search(r"When empty it follows mode: ([^.]+)\.", comment)
    assert stated, comment
    assert stated.group(1) == specs.effective_default("precision")


def test_the_proto_states_defaults_one_way_only():
    messages = proto_messages(PROTO.read_text())
    for message, fields in messages.items():
        for field, (_, comment) in fields.items():
            assert not OTHER_WAYS.search(comment), f"{message}.{field}: {comment}"


def test_the_defaults_check_fails_on_a_drifted_comment():
    text = PROTO.read_text()
    old = "Number of passes over the training data, 1..1000. Unset means 5."
    assert old in text
    drifted = stated_defaults(
        proto_messages(text.replace(old, old.replace("5.", "10."))), "TrainSpec"
    )
    assert drifted["epochs"] == "10" and not _equal(drifted["epochs"], specs.DEFAULTS["epochs"])
    other = text.replace(old, old.replace("Unset means 5.", "Unset: 5."))
    assert "epochs" not in stated_defaults(proto_messages(other), "TrainSpec")
    assert OTHER_WAYS.search(proto_messages(other)["TrainSpec"]["epochs"][1])
