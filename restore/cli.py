"""Command line: ``python -m restore {corrupt,train,infer,eval} ...`` (thin: parse, call, report).

Every error a user can cause is a :class:`RestoreError`, printed as one line on
stderr with exit status 1; usage errors exit with 2 (argparse).
"""

from __future__ import annotations

import argparse
import sys

from restore import __version__
from restore.errors import RestoreError
from restore.backend_ct2 import COMPUTE_TYPE_CHOICES  # a light module (ctranslate2 is imported on use)


# --- corrupt ---------------------------------------------------------------------------------
def _add_corrupt(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "corrupt",
        help="apply the exact seed preprocessing (lowercase, tokenize, drop stopwords, stem)",
        description="Corrupt text exactly like the preprocessing that produced the texts users hold. "
        "A .jsonl input is corrupted record by record: its 'text' field goes into a new 'source' field.",
    )
    p.add_argument("input", nargs="?", default="-", help="text or .jsonl file (default: stdin)")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    p.set_defaults(handler=_cmd_corrupt)


def _cmd_corrupt(args: argparse.Namespace) -> None:
    from restore.corrupt import corrupt_file

    corrupt_file(args.input, args.output)


# --- train -----------------------------------------------------------------------------------
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a restoration model from a YAML config")
    p.add_argument("--config", required=True, help="configs/*.yaml")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value, e.g. train.max_steps=100")
    p.add_argument("--resume", action="store_true", help="resume from the last checkpoint in the output directory")
    p.set_defaults(handler=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> None:
    from restore.train import run_train_cli

    run_train_cli(args)


# --- infer -----------------------------------------------------------------------------------
def _add_infer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="restore corrupted documents with a trained model")
    p.add_argument("inputs", nargs="*", default=["-"], help="text or .jsonl files (default: stdin)")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    p.add_argument("--model", default=None, help="model directory (default: the model shipped in models/)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-tokens", type=int, default=None, help="token budget per batch")
    p.add_argument("--num-beams", type=int, default=1, help="beam size (1 = greedy)")
    p.add_argument("--no-faithful", dest="faithful", action="store_false",
                   help="skip the check that each restored chunk corrupts back to its source (and its beam re-decode and repair)")
    p.add_argument("--static-cache", action="store_true",
                   help="static KV cache; on CUDA transformers also compiles the decode step (experimental)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "ctranslate2"),
                   help="auto: CTranslate2 on the CPU when installed (pip install 'restore[ctranslate2]'), else torch")
    p.add_argument("--compute-type", default="auto", choices=COMPUTE_TYPE_CHOICES,
                   help="CTranslate2 weights; auto: int8 where this CPU computes it accurately (VNNI), else float32; bf16 on CUDA")
    p.set_defaults(handler=_cmd_infer)


def _cmd_infer(args: argparse.Namespace) -> None:
    from restore.infer import run_infer_cli

    run_infer_cli(args)


# --- eval ------------------------------------------------------------------------------------
def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score restorations: sacreBLEU BLEU/chrF and round-trip faithfulness")
    p.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    p.add_argument("--data", required=True, help=".jsonl of {source,target} pairs, an articles file, or a text file of sources")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N pairs only")
    p.add_argument("--report", default=None, help="write a JSON report (and a PNG plot beside it)")
    p.add_argument("--baseline", default=None, choices=("identity", "dictionary"), help="score a baseline instead of a model")
    p.add_argument("--no-faithful", action="store_true", help="score the model without verify-and-repair (model only)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "ctranslate2"),
                   help="generation backend (model only), as for restore infer")
    p.add_argument("--compute-type", default="auto", choices=COMPUTE_TYPE_CHOICES,
                   help="CTranslate2 weights (model only), as for restore infer")
    p.add_argument("--lexicon", default=None, help="directory with lexicon.json.gz for --baseline dictionary (default: the model's)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-tokens", type=int, default=None, help="token budget per batch (model only)")
    p.add_argument("--num-beams", type=int, default=1, help="beam size (model only; 1 = greedy)")
    p.set_defaults(handler=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> None:
    from restore.evaluate import run_eval_cli

    run_eval_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="restore", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"restore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{corrupt,train,infer,eval}")
    for add in (_add_corrupt, _add_train, _add_infer, _add_eval):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except RestoreError as e:
        print(f"restore {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"restore {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    return 0
