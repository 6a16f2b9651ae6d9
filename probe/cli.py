"""``probe run | diagnose | report | compare | datasets | models | properties``: parse arguments, then
call the public API.

Heavy libraries are imported inside the commands so that ``probe --help`` is instant.
Bad input prints one line (``probe: error: ...``) and exits 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

EPILOG = """examples:
  probe run                                   the built-in default (minilm on bbc-news, planted token)
  probe run examples/control.yaml             the control: the token carries no label information
  probe run my.yaml --set finetune.epochs=1 --set spurious.0.token=zebra
  probe diagnose ./my-classifier --data reviews.csv --reference bert-base-uncased
                                              diagnose a model fine-tuned elsewhere (folder, hub name, LoRA)
  probe report reports/default                re-render index.html from the stored tables
  probe compare reports/full reports/lora     compare fine-tuning recipes: comparison.html and .csv
"""


def _parser() -> argparse.ArgumentParser:
    from probe import __version__
    from probe.tasks import DEFAULT_KIND, TASK_KINDS

    p = argparse.ArgumentParser(prog="probe", description="Did a fine-tuned transformer learn its task or a shortcut?",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"probe {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="fine-tune, compare pretrained vs fine-tuned, write a report")
    r.add_argument("config", nargs="?", help="YAML config (default: the built-in default, examples/default.yaml)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set finetune.epochs=1 (repeatable)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    r.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty folder that is not a probe run folder (same as --set overwrite=true)")

    d = sub.add_parser("diagnose", help="diagnose a model fine-tuned elsewhere (a folder, hub name or LoRA adapter)")
    d.add_argument("model", metavar="MODEL", help="the fine-tuned classifier or tagger: a folder, a hub name or a peft "
                   "adapter folder")
    d.add_argument("--data", required=True, metavar="DATASET", help="the dataset it was fine-tuned for (probe datasets)")
    d.add_argument("--reference", metavar="BASE", help="the pretrained model it descends from (default: the base its "
                   "config or adapter config records)")
    d.add_argument("--text-column", metavar="NAME", help="the dataset's text column (default: text)")
    d.add_argument("--text-pair-column", metavar="NAME", help="the dataset's second text column, for a classifier "
                   "of text pairs (e.g. hypothesis; --text-column is then the first)")
    d.add_argument("--label-column", metavar="NAME", help="the dataset's label column (default: label)")
    d.add_argument("--task-type", choices=list(TASK_KINDS),
                   help=f"the task (default: {DEFAULT_KIND})")
    d.add_argument("--prompt", metavar="TEMPLATE", help="a causal LM answering with label words: its prompt, with "
                   "{text}, and {text_pair} for pairs (sets model.head label-words; default for a folder probe saved: "
                   "the recorded one)")
    d.add_argument("--label-words", metavar="W1,W2,...", help="a causal LM answering with label words: one word per "
                   "class, comma-separated, in class order (sets model.head label-words; default: the class names)")
    d.add_argument("--name", help="the run folder's name (default: diagnose-<model folder or name>)")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any other config value (repeatable)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")

    rep = sub.add_parser("report", help="re-render RUN_DIR/index.html from its stored tables")
    rep.add_argument("run_dir")

    cmp = sub.add_parser("compare", help="compare finished runs (e.g. fine-tuning strategies): table + Pareto plot")
    cmp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run directories, one per variant")
    cmp.add_argument("--out", metavar="DIR",
                     help="where to write comparison.html and comparison.csv (default: <common parent>/comparison, "
                          "or ./comparison when the runs share no parent below /)")
    cmp.add_argument("--names", metavar="A,B,...", help="comma-separated variant names, one per RUN_DIR")

    sub.add_parser("datasets", help="list the built-in datasets")
    sub.add_parser("models", help="list the built-in backbones")
    sub.add_parser("properties", help="list the natural text properties that probes look for")
    return p


def _cmd_run(args: argparse.Namespace) -> int:
    from probe.config import dump_config, load_config

    config = load_config(args.config, args.overrides + (["overwrite=true"] if args.overwrite else []))
    if args.print_config:
        print(dump_config(config), end="")
        return 0
    from probe.engine import execute

    progress = not args.quiet and sys.stderr.isatty()
    if config.compare:
        from probe.comparison import display_table
        from probe.engine import execute_sweep

        sweep = execute_sweep(config, progress=progress)
        if not _is_main_process():
            return 0
        print(display_table(sweep.comparison).to_string(index=False))
        print(f"comparison: {sweep.report_path}")
        return 0
    run = execute(config, progress=progress)
    if not _is_main_process():
        return 0  # a helper process of `accelerate launch`: the main process reports
    print(run.summary["verdict"])
    print(f"report: {run.report_path}")
    return 0


def _cmd_diagnose(args: argparse.Namespace) -> int:
    """``probe run`` with the built-in default, no planted feature, and the given model: the shorthand for
    the common case (issue #14). Everything else can still be set with ``--set``."""
    import re

    from probe.config import load_config
    from probe.engine import execute

    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", args.model.rstrip("/").split("/")[-1]).strip("-._") or "model"
    overrides = {"model.finetuned": args.model, "model.backbone": args.reference, "task.dataset": args.data,
                 "spurious": [], "name": args.name or f"diagnose-{stem}"[:100]}
    words = None if args.label_words is None else [w.strip() for w in args.label_words.split(",")]
    for key, value in (("task.text_column", args.text_column), ("task.text_pair_column", args.text_pair_column),
                       ("task.label_column", args.label_column), ("task.type", args.task_type),
                       ("task.prompt", args.prompt), ("task.label_words", words)):
        if value is not None:
            overrides[key] = value
    if args.text_pair_column is not None and args.task_type is None:  # the kind that reads two texts
        from probe.tasks import TASK_KINDS

        overrides["task.type"] = next(s.name for s in TASK_KINDS.values() if s.pair_input)
    if args.prompt is not None or words is not None:
        overrides["model.head"] = "label-words"
    config = load_config(None, {**overrides, **dict(_parse(o) for o in args.overrides)})
    run = execute(config, progress=not args.quiet and sys.stderr.isatty())
    if not _is_main_process():
        return 0
    print(run.summary["verdict"])
    print(f"report: {run.report_path}")
    return 0


def _parse(item: str):
    from probe.config import parse_override

    return parse_override(item)


def _is_main_process() -> bool:
    from probe.distributed import current

    return current().is_main


def _cmd_report(args: argparse.Namespace) -> int:
    from probe.report.render import render_report

    print(render_report(args.run_dir))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from probe.comparison import compare, default_out_dir, display_table, paired_differences
    from probe.report.comparison_page import write_comparison

    names = None
    if args.names is not None:
        names = [n.strip() for n in args.names.split(",")]
        if any(not n for n in names):
            from probe.errors import ProbeError

            raise ProbeError(f"--names {args.names!r}: empty name; give comma-separated names, one per RUN_DIR")
    df = compare(args.run_dirs, names)
    differences = paired_differences(args.run_dirs, names=list(df["variant"]))
    out = write_comparison(df, args.out if args.out else default_out_dir(args.run_dirs), differences=differences)
    print(display_table(df).to_string(index=False))
    print(f"comparison: {out}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from probe.data.sources import BUILTIN_DATASETS
    from probe.tasks import dataset_kind

    for d in BUILTIN_DATASETS.values():
        kind = dataset_kind(d.name)
        print(f"{d.name:<14} {kind.name if kind else '':<21} {d.description}")
    print("also: a .csv/.tsv/.jsonl file, a saved datasets folder, or hf:<name>[:<config>] (needs a network)")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from probe.models.backbones import BUILTIN_BACKBONES

    for m in BUILTIN_BACKBONES.values():
        print(f"{m.name:<10} {m.description}")
    print("also: a local model folder, or a hub name such as bert-base-uncased (needs a network)")
    return 0


def _cmd_properties(args: argparse.Namespace) -> int:
    from probe.data.properties import available_properties

    for p in available_properties().values():
        print(f"{p.name:<28} {p.applies_to:<7} {p.description}")
    return 0


COMMANDS = {"run": _cmd_run, "diagnose": _cmd_diagnose, "report": _cmd_report, "compare": _cmd_compare, "datasets": _cmd_datasets,
            "models": _cmd_models, "properties": _cmd_properties}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from probe.errors import ProbeError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return COMMANDS[args.command](args)
    except ProbeError as e:
        print(f"probe: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("probe: interrupted; run the same command again to resume", file=sys.stderr)
        return 128 + getattr(e, "signum", 2)  # 130 for Ctrl-C, 143 for SIGTERM


if __name__ == "__main__":
    raise SystemExit(main())
