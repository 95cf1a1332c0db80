"""Turn destroyed English text (lowercased, tokenized, stopwords dropped, stemmed) back into readable prose.

The command line (``restore {corrupt,train,infer,eval,lexicon,serve} ...``) is thin: it parses,
checks what it can before anything heavy is imported, sets up threads and logging, calls the
library and reports. Every error a user can cause is a :class:`RestoreError`, printed as one
line on stderr with exit status 1; usage errors (unknown flags, wrong types) exit with 2 and
the subcommand's usage. Ctrl-C (SIGINT) and SIGTERM stop a command the same way: outputs
are cleaned up or left resumable, one line is printed, and the exit status is 130 or 143.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading

from restore import __version__
from restore.backend_choice import BACKEND_CHOICES, COMPUTE_TYPE_CHOICES  # light: no torch, no ctranslate2
from restore.errors import RestoreError


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
    from restore.config import load_config

    config = load_config(args.config, args.overrides)  # a bad config is reported before torch is imported
    from restore.train import train

    train(config, resume=args.resume)


# --- infer and eval: the model options they share --------------------------------------------
def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model directory (default: $RESTORE_MODEL, else the model shipped in models/)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="auto: CTranslate2 on the CPU when installed (pip install 'restore[ctranslate2]'), else torch")
    p.add_argument("--compute-type", default="auto", choices=COMPUTE_TYPE_CHOICES,
                   help="CTranslate2 weights; auto: int8 where this CPU computes it accurately (VNNI), else float32; bf16 on CUDA")
    p.add_argument("--batch-tokens", type=int, default=None, help="token budget per batch (default: the backend's)")
    p.add_argument("--quality", default=None, choices=("fast", "best"),
                   help="decoding preset: best (the default) = beam search of 6, length penalty 2.0, the most probable "
                        "faithful hypothesis; fast = greedy (about 2.3x faster on the CPU, 1.9 BLEU lower on test)")
    p.add_argument("--num-beams", type=int, default=None, help="beam size (1 = greedy; default: the --quality preset's)")
    p.add_argument("--length-penalty", type=float, default=None,
                   help="beam search: rank hypotheses by log-probability / length ** this (above 1 favours longer outputs; default: the preset's)")
    p.add_argument("--no-faithful", dest="faithful", action="store_false",
                   help="skip the check that each restored chunk corrupts back to its source (and its beam re-decode and repair)")


def _check_model_options(args: argparse.Namespace) -> None:
    from restore.settings import check_positive

    from restore.settings import DEFAULT_QUALITY, decoding_for

    if args.batch_tokens is not None:
        check_positive("--batch-tokens", args.batch_tokens)
    args.quality = args.quality or DEFAULT_QUALITY
    decoding = decoding_for(args.quality, args.num_beams, args.length_penalty)  # explicit options win over the preset
    args.num_beams, args.length_penalty = decoding.num_beams, decoding.length_penalty


# --- infer -----------------------------------------------------------------------------------
def _add_infer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="restore corrupted documents with a trained model")
    p.add_argument("inputs", nargs="*", default=["-"], help="text or .jsonl files (default: stdin)")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    _add_model_options(p)
    p.add_argument("--static-cache", action="store_true",
                   help="static KV cache; on CUDA transformers also compiles the decode step (experimental)")
    p.add_argument("--spans", action="store_true",
                   help=".jsonl inputs: add to every record the input token each output word realizes (null: inserted) "
                   "and each chunk's faithfulness outcome")
    _add_corpus_options(p)
    p.set_defaults(handler=_cmd_infer)


def _add_corpus_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("corpora of shards (directories, quoted globs, .parquet/.jsonl(.gz|.xz) files; -o DIRECTORY)")
    g.add_argument("--source-field", default=None, help="field to restore in each row (default: source)")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="restore on Ray Data (pip install 'restore[ray]'): a local Ray instance, or the cluster at ADDRESS")
    g.add_argument("--ray-actors", type=int, default=None, metavar="N",
                   help="Restorer actors (default: one per GPU, else one per 4 CPU cores)")


def _cmd_infer(args: argparse.Namespace) -> None:
    from restore.corpus import is_corpus_run, run_corpus_cli

    _check_model_options(args)
    if is_corpus_run(args):  # shards in, parquet shards out (restore.corpus; --ray: restore.ray_job)
        if args.spans:
            raise RestoreError("--spans applies to .jsonl file inputs written to a .jsonl output, not to shard corpora")
        run_corpus_cli(args)
        return
    if args.source_field is not None or args.ray_actors is not None:
        raise RestoreError("--source-field and --ray-actors apply to shard inputs (a directory, a glob, "
                           ".parquet/.jsonl.gz/.jsonl.xz files, or .jsonl files with -o an existing directory)")
    from restore.infer_files import run_infer_cli

    run_infer_cli(args)


# --- eval ------------------------------------------------------------------------------------
def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score restorations: sacreBLEU BLEU/chrF and round-trip faithfulness")
    p.add_argument("--data", required=True, action="append",
                   help=".jsonl of {source,target} pairs, an articles file, a text file of sources, or a split of data/eval "
                        "(test, test-300, prose-test); repeat it to score several domains in one run, with a table per domain")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N pairs only")
    p.add_argument("--report", default=None, help="write a JSON report (and a PNG plot beside it)")
    p.add_argument("--baseline", default=None, choices=("identity", "dictionary"), help="score a baseline instead of a model")
    p.add_argument("--lexicon", default=None, help="directory with lexicon.json.gz for --baseline dictionary (default: the model's)")
    _add_model_options(p)
    p.set_defaults(handler=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> None:
    from restore.eval_run import run_eval_cli

    _check_model_options(args)
    run_eval_cli(args)


# --- serve -----------------------------------------------------------------------------------
def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP: POST /restore, GET /health, a page at / (pip install 'restore[serve]')",
        description="Serve one loaded model over HTTP (FastAPI + uvicorn); concurrent requests are batched together.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port)")
    _add_model_options(p)
    p.add_argument("--batch-window-ms", type=float, default=10.0,
                   help="how long a batch waits for more requests to join its first (default: 10)")
    p.add_argument("--batch-words", type=int, default=1024, help="source words per batch of requests (default: 1024)")
    p.add_argument("--max-request-bytes", type=int, default=1 << 20, help="larger request bodies get 413 (default: 1 MiB)")
    p.add_argument("--max-text-chars", type=int, default=100_000, help="longer texts get 413 (default: 100,000)")
    p.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> None:
    from restore.settings import check_positive

    _check_model_options(args)
    for option in ("batch_words", "max_request_bytes", "max_text_chars"):
        check_positive("--" + option.replace("_", "-"), getattr(args, option))
    if not 0 <= args.port <= 65535 or args.batch_window_ms < 0:
        raise RestoreError("--port must be 0-65535 and --batch-window-ms at least 0")
    try:
        from restore.serve import listening_socket, run_server
    except ImportError as e:
        if e.name not in ("fastapi", "uvicorn", "starlette"):
            raise
        raise RestoreError("restore serve needs FastAPI and uvicorn: pip install 'restore[serve]'") from None
    from restore.checkpoint import resolve_model

    model = resolve_model(args.model).path  # checked before the port is taken and torch is imported
    sock = listening_socket(args.host, args.port)  # a port in use is one line before the model loads
    from restore.api import load

    try:
        pipeline = load(model, device=args.device, backend=args.backend, compute_type=args.compute_type,
                        batch_tokens=args.batch_tokens, quality=args.quality, num_beams=args.num_beams,
                        length_penalty=args.length_penalty, faithful=args.faithful)  # fmt: skip
    except BaseException:
        sock.close()
        raise
    run_server(pipeline, sock, window_ms=args.batch_window_ms, batch_words=args.batch_words,
               max_request_bytes=args.max_request_bytes, max_text_chars=args.max_text_chars)  # fmt: skip


# --- lexicon ---------------------------------------------------------------------------------
def _add_lexicon(sub: argparse._SubParsersAction) -> None:
    from restore.lexicon import LEXICON_FILE

    p = sub.add_parser(
        "lexicon",
        help="build the dictionary baseline's lexicon from training articles",
        description=f"Build the dictionary baseline's lexicon from training articles and save it as DIR/{LEXICON_FILE}.",
    )
    p.add_argument("--articles", required=True, help="articles file (.jsonl or .jsonl.xz with a 'text' field)")
    p.add_argument("--limit", type=int, default=None, help="use the first N articles only")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.set_defaults(handler=_cmd_lexicon)


def _cmd_lexicon(args: argparse.Namespace) -> None:
    from restore.baselines import build_lexicon
    from restore.settings import check_positive

    if args.limit is not None:
        check_positive("--limit", args.limit)

    print(build_lexicon(args.articles, args.out, args.limit), file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="restore", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"restore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{corrupt,train,infer,eval,lexicon,serve}")
    for add in (_add_corrupt, _add_train, _add_infer, _add_eval, _add_lexicon, _add_serve):
        add(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds exactly like Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    if os.getpid() != _SIGTERM_OWNER[0]:
        # A forked worker (e.g. of datasets.map) inherited the handler: its pool stops it with
        # SIGTERM, so it must die as by default, not unwind like the parent (that hangs the pool).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated


_SIGTERM_OWNER = [0]  # the pid that installed the handler


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    _SIGTERM_OWNER[0] = os.getpid()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported with the subcommand's usage, not the top-level one
        _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        with _sigterm_as_interrupt():
            args.handler(args)
    except RestoreError as e:
        print(f"restore {args.command}: error: {e}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"restore {args.command}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"restore {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    return 0


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]
