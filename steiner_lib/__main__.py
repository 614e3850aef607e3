"""Command line: `python -m steiner_lib run|report|check-params|dry-run ...`."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steiner_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute the notebooks in order with Papermill")
    p_run.add_argument("--params", required=True, help="a preset, e.g. params/cpu.yaml")
    p_run.add_argument("--only", help="comma-separated stages, e.g. 01,02")
    p_run.add_argument("--force", action="store_true", help="rerun even finished stages")
    p_run.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
    p_rep = sub.add_parser("report", help="build the report from a run's executed notebooks")
    p_rep.add_argument("--params", required=True)
    p_chk = sub.add_parser("check-params", help="validate preset files and exit")
    p_chk.add_argument("files", nargs="+")
    p_dry = sub.add_parser("dry-run", help="run a GPU preset on this CPU with tiny local stand-ins (see steiner_lib.dryrun)")
    p_dry.add_argument("--params", required=True, help="a preset, e.g. params/gpu-small.yaml")
    p_dry.add_argument("--workdir", help="where the stand-ins and the run go (default: a new temporary directory)")
    p_dry.add_argument("--only", help="comma-separated stages, e.g. 01,02")
    p_dry.add_argument("--progress", action="store_true", help="a per-cell progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from steiner_lib.params import ParamsError, load_preset
    from steiner_lib.report.book import ReportError
    from steiner_lib.runner import RunnerError

    try:
        if args.command == "check-params":
            for f in args.files:
                load_preset(f)
                print(f"{f}: ok")
        elif args.command == "run":
            from steiner_lib.runner import run

            outcomes = run(args.params, only=args.only, force=args.force, progress=not args.no_progress)
            for o in outcomes:
                print(f"{o.stage}: {o.status} ({o.reason}) {o.seconds:.1f} s")
        elif args.command == "dry-run":
            from steiner_lib.dryrun import dry_run

            result = dry_run(args.params, args.workdir, only=args.only, progress=args.progress)
            print(f"dry run of {args.params}: params {result.params_path}")
            for s in result.substitutions:
                print(f"  changed {s}")
            for o in result.outcomes:
                print(f"{o.stage}: {o.status} {o.seconds:.1f} s")
            print(f"dry run passed in {result.seconds:.1f} s")
        elif args.command == "report":
            from steiner_lib.params import run_dir
            from steiner_lib.report.book import check_quarto_project, prepare_report, render_report

            params = load_preset(args.params)
            report_dir = prepare_report(run_dir(params))
            problems = check_quarto_project(report_dir)
            if problems:  # a broken cross-reference or a missing chapter: say so before rendering
                print("report check found problems:\n  " + "\n  ".join(problems), file=sys.stderr)
                return 3
            out = render_report(report_dir, report_dir / "_build")
            print(f"report: {out}")
    except (ParamsError, RunnerError, ReportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
