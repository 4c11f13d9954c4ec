"""`fwbench friction`: measure what installing and starting each framework costs."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from orchestrator import friction, report
from orchestrator.commands import common
from orchestrator.inputs import options
from orchestrator.results import schema
from services.common import frameworks
from services.common import spec as specs


def add_arguments(sub) -> None:
    fri = sub.add_parser(
        "friction", help="measure what installing and starting each framework costs"
    )
    options.add_list_argument(fri, "--frameworks", frameworks.NAMES, list(frameworks.NAMES))
    # --install, not --mode: `fwbench run --mode` is the spec's default/tuned. --mode, its
    # earlier name here, still works.
    fri.add_argument(
        "--install",
        "--mode",
        dest="install",
        choices=friction.INSTALLS,
        default="venv",
        help="what install is measured: venv: fresh virtualenvs in a temporary directory; "
        "docker: the images of docker-compose.yml (default: %(default)s; --mode: the same, its "
        "earlier name)",
    )
    fri.add_argument(
        "--models",
        type=options.csv_choice(specs.MODELS, "model"),
        default=list(specs.MODELS),
        help="models whose time to first training step is measured (default: all)",
    )
    fri.add_argument("--no-shared", action="store_true", help="skip the shared-environment probe")
    fri.add_argument(
        "--out", type=Path, default=Path("results/friction"), help="(default: %(default)s)"
    )
    fri.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    out = common.results_dir(args.out)
    measured = friction.measure(args, console)
    out.mkdir(parents=True, exist_ok=True)
    measured.to_csv(out / schema.FRICTION_CSV, index=False)
    friction.print_table(measured, console)
    rendered = report.render(out)
    console.print(f"Friction in {out / schema.FRICTION_CSV} and {rendered.html_path}")
    return 0
