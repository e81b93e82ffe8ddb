"""The ``mmalign`` command: list, train, eval, plot, report, demo, data stats, check-plugin.

Exit codes: 0 done; 2 bad recipe, data or name (the message says what to fix);
1 any other failure.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mmalign.errors import MmalignError

KINDS = ("modalities", "objectives", "rewards", "datasets", "evaluators", "demos", "configs")


def cmd_list(args) -> int:
    """Every healthy plugin, and each broken one with its error (exit 0 either way)."""
    from mmalign import assets, registry

    kinds = [args.kind] if args.kind else list(KINDS)
    for kind in kinds:
        print(f"{kind}:")
        broken: list[str] = []
        if kind == "configs":  # by name: `mmalign train NAME` runs one from any directory
            names = [p.stem for p in assets.recipes()]
        else:
            names, broken = registry.ALL[kind].survey()
        for name in names or ["(none)"]:
            print(f"  {name}")
        for line in broken:
            print(f"  broken: {line}")
    return 0


def cmd_check_plugin(args) -> int:
    """The conformance kit on an installed modality: 0 when every check passes, 1 otherwise."""
    from mmalign.modality import ModelSpec
    from mmalign.testing import check_modality

    spec = None
    if args.builder or args.path:
        spec = ModelSpec(path=args.path, builder=args.builder)
    options = dict(item.split("=", 1) for item in args.option) if args.option else None
    if options:
        import yaml

        options = {k: yaml.safe_load(v) for k, v in options.items()}
    results = check_modality(args.name, spec=spec, data=args.data, options=options, schema=args.schema,
                             lora=not args.no_lora)
    for result in results:
        print(result)
    failed = [r.name for r in results if not r.ok]
    print(f"{args.name}: " + (f"FAILED {', '.join(failed)}" if failed else f"all {len(results)} checks pass"))
    return 1 if failed else 0


def cmd_train(args) -> int:
    from mmalign import config
    from mmalign.train.run import train

    recipe = config.load(args.config, args.overrides)
    session = train(recipe, overwrite=args.overwrite)
    last: dict = {}
    for row in session.history:
        last.update(row)
    keys = ("loss", "rewards/margins", "rewards/accuracies", "eval/loss", "eval/rewards/accuracies")
    summary = ", ".join(f"{k}={last[k]:.4g}" for k in keys if k in last)
    print(f"done: {session.step} steps in {session.run_dir} ({summary})")
    return 0


def cmd_eval(args) -> int:
    from mmalign import config
    from mmalign.evaluate import is_run_dir, run_eval, run_recipe, which_model

    if is_run_dir(args.config):  # a run folder: its recipe, with its trained weights
        results = run_eval(run_recipe(args.config, args.overrides), trained=args.config)
    else:
        recipe = config.load(args.config, args.overrides)
        print(which_model(recipe))
        results = run_eval(recipe)
    for name, value in sorted(results.items()):
        print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")
    return 0


def cmd_data_stats(args) -> int:
    """Figures of a recipe's data files (:mod:`mmalign.data.stats`), as text or JSON."""
    import json

    from mmalign import config
    from mmalign.data.stats import data_stats, format_stats

    result = data_stats(config.load(args.config, args.overrides))
    print(json.dumps(result, indent=2, default=str) if args.json else format_stats(result))
    return 0


def cmd_plot(args) -> int:
    from mmalign.plot import plot

    print(plot(args.run_dir, args.out))
    return 0


def cmd_report(args) -> int:
    from mmalign.report import report

    print(report(args.run_dir, args.out))
    return 0


def cmd_demo(args) -> int:
    from mmalign.demo import run_demo

    summary = run_demo(args.out, tasks=args.task, steps=args.steps, progress=not args.quiet, quick=args.quick)
    for t in summary["tasks"]:
        arrow = "higher is better" if t["higher_is_better"] else "lower is better"
        print(f"{t['task']:>24}  {t['metric']:<28} before {t['before']:.3f}  after {t['after']:.3f}  ({arrow})")
    if args.quick:
        print("quick run: a check that every step works, not a measurement; run without --quick for the numbers")
    elif summary["preset"] == "default":
        print("the default set (smaller settings, measured on held-out seeds); `mmalign demo --task all` "
              "runs every task at its full settings")
    print(f"summary: {Path(args.out) / 'summary.json'}; report: {Path(args.out) / 'report.html'}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmalign", description="Preference alignment of multimodal "
                                "generative models: a plugin registry binds each modality's "
                                "likelihood surrogate to a shared preference-objective core.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("list", help="registered modalities, objectives, rewards, datasets, "
                       "evaluators and bundled configs")
    s.add_argument("kind", nargs="?", choices=KINDS, help="only this kind")
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("check-plugin", help="the conformance kit on an installed modality plugin",
                       description="Runs a modality plugin as the trainer will, on a tiny model and a few "
                       "rows (its example() hook, or --builder/--path and --data), and names what would "
                       "break a run. Exit 0: every check passes; 1: a check failed (with the reason).")
    s.add_argument("name", help="the modality's registered name (`mmalign list modalities`)")
    s.add_argument("--builder", help="a builder name the plugin knows (instead of its example)")
    s.add_argument("--path", help="a local checkpoint folder (instead of its example)")
    s.add_argument("--data", help="a data file of a few rows (instead of its example)")
    s.add_argument("--schema", help="the data's schema")
    s.add_argument("--option", action="append", metavar="key=value", help="a model option (repeatable)")
    s.add_argument("--no-lora", action="store_true", help="skip the LoRA export round trip")
    s.set_defaults(fn=cmd_check_plugin)

    for name, fn, text in (("train", cmd_train, "train a policy from a YAML recipe"),
                           ("eval", cmd_eval, "run a recipe's evaluators on a model and data")):
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("config", help="a YAML recipe or a bundled recipe's name (`mmalign list configs`)"
                       + ("; or a finished run's folder, to evaluate its trained model" if name == "eval" else ""))
        s.add_argument("overrides", nargs="*", metavar="key=value",
                       help="dotted overrides, e.g. train.lr=1e-5 objective.params.beta=0.2")
        if name == "train":
            s.add_argument("--overwrite", action="store_true",
                           help="replace a finished run in logging.output_dir")
        s.set_defaults(fn=fn)

    s = sub.add_parser("data", help="look at a recipe's data before training",
                       description="Data diagnostics of a recipe's data files.")
    data_sub = s.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    s = data_sub.add_parser("stats", help="rows, records and token lengths of each data file",
                            description="Loads the recipe's modality and policy (its tokenizer or processor) "
                            "as `mmalign train` does and prints, per data file: rows, records kept, what "
                            "the checks dropped, prompt and response tokens (min / median / max) and the "
                            "modality's own figures (images, tokens per image, ...). Exit 2: bad recipe "
                            "or data.")
    s.add_argument("config", help="a YAML recipe or a bundled recipe's name (`mmalign list configs`)")
    s.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. data.train=other.jsonl")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    s.set_defaults(fn=cmd_data_stats)

    s = sub.add_parser("plot", help="PNG training curves of a run dir")
    s.add_argument("run_dir")
    s.add_argument("--out", default=None, help="where to write the PNG (default RUN_DIR/curves.png)")
    s.set_defaults(fn=cmd_plot)

    s = sub.add_parser("report", help="one self-contained HTML report of a run dir")
    s.add_argument("run_dir")
    s.add_argument("--out", default=None, help="where to write the HTML (default RUN_DIR/report.html)")
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("demo", help="the embedded default: toy worlds where alignment visibly works "
                       "on a CPU, measured before and after", description="With no --task: the default "
                       "set, every task at settings that run in minutes and still measure on held-out seeds. "
                       "--task NAME or --task all: full settings.")
    s.add_argument("--task", action="append", default=None,
                   help="run this task at its full settings (repeatable; `all`: every task; "
                   "`mmalign list demos` shows them)")
    s.add_argument("--steps", type=int, default=None, help="fewer training steps (a quick look)")
    s.add_argument("--quick", action="store_true", help="every step of each task in seconds (tiny data, "
                   "2 training steps): checks an install, measures nothing")
    s.add_argument("--out", default="runs/demo", help="run dir (default runs/demo)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except MmalignError as exc:
        print(f"mmalign {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or a failure of the environment, not of the input
        from mmalign.train.checkpoint import disk_fault

        fault = disk_fault(exc.filename or "a file", exc, "file", "") if isinstance(exc, OSError) else None
        if fault is not None:  # a disk fault outside the writers that name their own
            print(f"mmalign {args.command}: error: {fault}", file=sys.stderr)
            return fault.exit_code
        logging.getLogger("mmalign").exception("failed")
        print(f"mmalign {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
