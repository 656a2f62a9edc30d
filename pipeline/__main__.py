"""The CLI: one sub-command per dashboard action.  `python -m pipeline --help`

Each sub-command lives in the module named in COMMANDS, which defines `add_arguments(parser, command)`
and `run(args) -> int` (`args.command` says which command when a module serves several); modules are
imported only when their command runs, so `data-summary` does not import torch.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data-summary": ("pipeline.cli_data", "counts, trimesters and HC check of a data source"),
    "segment": ("pipeline.sam.cli", "segment one image from a box prompt"),
    "export-hc18": ("pipeline.sam.cli", "HC18 challenge CSV (ellipse centre, semi-axes in mm, angle) for a data source"),
    "evaluate": ("pipeline.sam.cli", "Dice / HC error of a SAM model on a data source (jittered boxes)"),
    "finetune-sam": ("pipeline.sam.cli", "fine-tune SAM's mask decoder on real (+ synthetic) pairs"),
    "pretrain-base": ("pipeline.diffusion.cli", "pretrain the tiny diffusion base (phantoms + unlabelled real images)"),
    "train-lora": ("pipeline.diffusion.cli", "train one trimester's LoRA on real image+mask pairs"),
    "generate": ("pipeline.diffusion.cli", "generate image+mask pairs and extract their ellipses"),
    "lora-grid": ("pipeline.diffusion.grid", "a LoRA strength x seed grid: one labelled picture of what a LoRA does"),
    "realism": ("pipeline.diffusion.realism", "how real generated images are: KID and classifier AUC vs real ones"),
    "sweep": ("pipeline.sweep.cli", "the paper's Table 1 as a resumable sweep"),
    "results": ("pipeline.sweep.record", "rebuild docs/results.md from the committed sweep records (docs/results/)"),
    "bench": ("pipeline.bench", "benchmarks: bench sam | bench diffusion | bench paper | bench upload"),
}


class HelpWithDefaults(argparse.HelpFormatter):
    """Shows "(default: X)" after every option's help unless the help already names its default, the
    default is empty (None / False) or the option is required: a person reading --help sees what runs."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (not action.option_strings or action.required or action.default in (None, False, argparse.SUPPRESS)
                or "default" in text.lower()):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def main(argv: list[str] | None = None) -> int:
    from . import prepare_process
    prepare_process()  # before a command loads torch: the OpenMP wait policy is read once, at its start
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    wanted = argv[0] if argv and not argv[0].startswith("-") else None
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=HelpWithDefaults)
        if name == wanted:
            importlib.import_module(module).add_arguments(p, name)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    mod = importlib.import_module(COMMANDS[args.command][0])
    from .data import DataError
    try:
        return int(mod.run(args) or 0)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a bad setting (validated configs raise ValueError): a message, not a traceback
        if os.environ.get("SONOSYNTH_DEBUG"):
            raise
        print(f"error: {exc}  (SONOSYNTH_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
