"""Getting started subcommands of the `sluice` CLI: `init` (draft a config from a data file) and `data`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sluice.errors import EXIT_CODES, Kind
from sluice.home import Home

COMMANDS = ("init", "data")
EXIT_BAD_INPUT = EXIT_CODES[Kind.INPUT]


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `init` and `data` on the main parser."""
    init = sub.add_parser(
        "init",
        help="profile a data file and write configs/NAME.yaml, its expectation suites (and a label config)",
        description="Profile DATA (a CSV, Parquet or JSONL file, a folder of them, or a quoted glob) and draft "
        "configs/NAME.yaml, expectations/NAME_raw.json and expectations/NAME_clean.json; with "
        "--labels-from annotation also label_config/NAME.xml. Then: sluice run --config configs/NAME.yaml",
    )
    init.add_argument("data", nargs="+", help="the data: a file, a folder or a quoted glob such as 'data/*.csv'")
    init.add_argument(
        "--name", required=True, metavar="NAME", help="the data set's name: lowercase letters, digits, _ and -"
    )
    init.add_argument("--label", metavar="COL", required=True, help="the column of classes to predict")
    init.add_argument("--text", metavar="COL", help="a text column to learn from (model: hashed n-gram bag)")
    init.add_argument("--image", metavar="COL", help="a column naming image files to learn from (model: CNN)")
    init.add_argument(
        "--features", metavar="COL", nargs="+", help="tabular feature columns (default: numeric and low-cardinality)"
    )
    init.add_argument("--group", metavar="COL", help="rows of one group never straddle train/val/test (split: group)")
    init.add_argument(
        "--time", metavar="COL", help="a date or time column: train < val < test in time (split: temporal)"
    )
    init.add_argument("--id", metavar="COL", help="a column of unique row ids (default: ids from each row's content)")
    init.add_argument(
        "--labels-from",
        choices=["column", "annotation"],
        default="column",
        help="column: train on --label as it is (default); annotation: people label in Label Studio, "
        "the classes are the values of --label",
    )
    init.add_argument("--encoding", default="utf-8", help="text encoding of CSV/JSONL files (default utf-8)")
    init.add_argument("--delimiter", default=",", help="CSV field delimiter (default ,)")
    init.add_argument("--root", default=".", help="project folder to write configs/ and expectations/ in (default .)")
    init.add_argument("--force", action="store_true", help="overwrite files that exist")

    data = sub.add_parser("data", help="real data sets bundled in packages, written as plain files under the home")
    actions = data.add_subparsers(dest="data_action", required=True)
    actions.add_parser("list", help="the bundled data sets")
    write = actions.add_parser("write", help="write one under <home>/raw/NAME/ and print the next command")
    write.add_argument("dataset", help="a data set name (`sluice data list`)")
    write.add_argument("--rows", type=int, default=None, help="only the first N rows (a quick try)")


def _say(message: str, *, error: bool = False) -> None:
    print(message, file=sys.stderr if error else sys.stdout, flush=True)  # noqa: T201 - a terminal command


def _shown(path: Path) -> str:
    """A path as the user can type it from here: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _init(args: argparse.Namespace, home: Home) -> int:
    from tasks import profile
    from tasks.ingest import IngestError, SourceConfig
    from tasks.label_config import LabelConfigError

    if len(args.data) > 1:
        _say(
            f"sluice: sluice init takes one DATA argument, got {len(args.data)} ({', '.join(args.data[:3])}, …): "
            "the shell expanded a glob. Quote it ('data/*.csv') or pass the folder.",
            error=True,
        )
        return EXIT_BAD_INPUT
    pattern, root = args.data[0], Path(args.root).resolve()
    roles = profile.Roles(
        label=args.label,
        text=args.text,
        group=args.group,
        time=args.time,
        id=args.id,
        image=args.image,
        features=tuple(args.features or ()),
        labels_from=args.labels_from,
    )
    source = SourceConfig(path=pattern, encoding=args.encoding, delimiter=args.delimiter)
    try:
        data = profile.read_data(pattern, base_dir=Path.cwd(), source=source)
        draft = profile.draft_pipeline(
            data,
            roles,
            name=args.name,
            source_path=profile.source_path_for(pattern, root=root, home=home.root),
            source=source,
        )
        written = profile.write_draft(draft, root, force=args.force)
    except (IngestError, profile.ProfileError, LabelConfigError) as exc:
        _say(f"sluice: {exc}", error=True)
        return EXIT_BAD_INPUT
    _say(f"sluice: profiled {data.where()}: {data.rows:,} rows, {len(data.columns)} columns")
    _say("  columns")
    _say("\n".join(f"    {line}" for line in profile.describe_profile(data, roles)))
    _say("  inferred")
    _say("\n".join(f"    {line}" for line in draft.inferred[1:]))
    _say("  wrote")
    _say("\n".join(f"    {_shown(path)}" for path in written))
    _say("  next (edit the config first if a choice above is wrong)")
    _say(f"    sluice run --config {_shown(written[0])}")
    if roles.labels_from == "annotation":
        _say("    then label in Label Studio (`sluice labelstudio start`) and run again: the run waits for labels")
    return 0


def _data(args: argparse.Namespace, home: Home) -> int:
    from tasks import demo_data

    if args.data_action == "list":
        for spec in demo_data.DATASETS.values():
            _say(f"  {spec.name:<20} {spec.description}")
        _say("write one with: sluice data write NAME")
        return 0
    try:
        spec = demo_data.demo_dataset(args.dataset)
        path = demo_data.write_demo_data(spec.name, spec.destination(home.raw), rows=args.rows)
    except demo_data.DemoDataError as exc:
        _say(f"sluice: {exc}", error=True)
        return EXIT_BAD_INPUT
    images = path.parent / "images"
    extra = f" (and the image files under {_shown(images)}/)" if spec.frame is None and images.is_dir() else ""
    part = f" (the first {args.rows:,} rows)" if args.rows else ""
    _say(f"sluice: wrote {_shown(path)}{extra}: {spec.description}{part}")
    _say("  next: run its bundled config" if spec.config else "  next: draft a config for it")
    _say(f"    {spec.init_command(Path(_shown(path)))}")
    return 0


def handle(args: argparse.Namespace, home: Home) -> int | None:
    """Run `init` or `data`; None when `args.command` is neither."""
    if args.command not in COMMANDS:
        return None
    return _init(args, home) if args.command == "init" else _data(args, home)
