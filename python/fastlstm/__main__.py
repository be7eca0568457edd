"""Command line: `python -m fastlstm bench ...` (the benchmark suite) and `python -m fastlstm config`.

Also installed as the `fastlstm` script (pyproject's [project.scripts]). main(argv) returns the
exit status: 0, 1 when a fastlstm backend failed its correctness check or a file could not be
written, 2 for bad arguments (argparse's convention).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

PROG = "python -m fastlstm"


def _shape_arg(text: str):
    from .bench.shapes import parse_shape

    try:
        return parse_shape(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _threads_arg(text: str) -> list:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        vals = []
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"invalid thread counts {text!r}: expected positive "
                                         f"integers separated by commas, e.g. 1,2")
    return list(dict.fromkeys(vals))


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _names_arg(allowed, what):
    def parse(text: str) -> list:
        names = [v.strip().lower() for v in text.split(",") if v.strip()]
        if names == ["none"]:
            return []
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(bad) or text!r}; "
                                             f"choose from {', '.join(allowed)}")
        return list(dict.fromkeys(names))
    return parse


def build_parser() -> argparse.ArgumentParser:
    from .backends import PREFERENCE
    from .bench.peers import PEER_NAMES

    ap = argparse.ArgumentParser(prog=PROG, description="fastlstm command line")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{bench,config,demo,forecast}")
    sub.add_parser("config", help="show the backend, runtime ISA, threads and versions")
    b = sub.add_parser("bench", help="benchmark every backend side by side with torch and onnxruntime",
                       description="Check every contender against the NumPy reference, then time "
                                   "forward (inference) and forward+backward (training).")
    b.add_argument("--quick", action="store_true",
                   help="fewer shapes (long ones with T truncated) and repeats: about a minute on 2 cores "
                        "(with --sweep: a smaller grid, a few minutes)")
    b.add_argument("--sweep", action="store_true",
                   help="the shape sweep: H x B x I grid, native (prepacked forward, training) against "
                        "torch and ONNX Runtime, ratios as a heat map (--plot) and the worst cells")
    b.add_argument("--shape", action="extend", nargs="+", type=_shape_arg, metavar="T,B,I,H",
                   help="shapes to run (T,B,I,H or a name: book latency small medium large medium-var)")
    b.add_argument("--threads", type=_threads_arg, metavar="N[,N...]",
                   help="thread counts (default: 1 and all physical cores; --quick: all cores)")
    b.add_argument("--lengths", choices=("full", "variable"),
                   help="run every shape with full or variable lengths (default: the protocol's mix)")
    b.add_argument("--mode", choices=("forward", "train", "both"), default="both")
    b.add_argument("--backends", type=_names_arg(PREFERENCE, "backend"), metavar="NAME[,NAME...]",
                   help=f"fastlstm backends (default: all of {','.join(PREFERENCE)})")
    b.add_argument("--peers", type=_names_arg(PEER_NAMES, "peer"), metavar="NAME[,NAME...]",
                   help=f"peers ({','.join(PEER_NAMES)}, or none; default: all)")
    b.add_argument("--repeats", type=_positive_int, help="timed repeats per measurement (default 7, --quick 5)")
    b.add_argument("--min-time", type=float, metavar="SECONDS",
                   help="seconds per repeat; shorter calls are looped (default 0.05)")
    b.add_argument("--no-prepacked", action="store_true",
                   help="skip native-prepacked (native inference with weights packed once, untimed)")
    b.add_argument("--no-streaming", action="store_true", help="skip the one-step streaming benchmark")
    b.add_argument("--json", metavar="FILE", help="write every raw number and the machine info")
    b.add_argument("--markdown", metavar="FILE", help="write the tables as markdown (README section)")
    b.add_argument("--plot", metavar="FILE.png", help="bar chart of the speed-ups vs the peers")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--fit", action="store_true",
                   help="time training epochs of four small models (forecast, classify, char-LM, seq2seq): "
                        "fastlstm.fit against a PyTorch loop and Keras model.fit (--quick: 2 repeats)")
    b.add_argument("--problems", type=_names_arg(("forecast", "classify", "char-lm", "seq2seq"), "problem"),
                   metavar="NAME[,NAME...]", help="with --fit: the problems to run (default: all four)")
    b.add_argument("--default-malloc", action="store_true",
                   help="leave glibc malloc as it is (by default the benchmark keeps freed memory in the "
                        "heap, so that no contender's timings include the OS zeroing fresh pages)")
    _add_demo_parsers(sub)
    return ap


def _add_demo_parsers(sub):
    """`demo KIND` (each KIND is a module of fastlstm.demos) and `forecast FILE.csv`."""
    from .demos import kinds

    d = sub.add_parser("demo", help="run a demo on real data beside its baselines; writes a report folder",
                       description="python -m fastlstm demo KIND --help lists the demo's own options")
    d.add_argument("kind", choices=kinds())
    d.add_argument("demo_args", nargs=argparse.REMAINDER, help="the demo's options (--smoke, --out DIR, ...)")
    f = sub.add_parser("forecast", help="forecast a column of your CSV file; writes forecast.csv and a plot")
    f.add_argument("file", metavar="FILE.csv")
    f.add_argument("--column", required=True, metavar="NAME", help="the numeric column to forecast")
    f.add_argument("--horizon", type=_positive_int, default=12, metavar="N", help="steps ahead (default 12)")
    f.add_argument("--date-column", metavar="NAME", help="time column (default: the first, if it holds dates)")
    f.add_argument("--out", metavar="DIR", help="output folder (default forecast-<file stem>)")
    f.add_argument("--smoke", action="store_true", help="tiny training budget")
    f.add_argument("--no-progress", action="store_true")
    f.add_argument("--seed", type=int, default=0)


def _estimator_demo_parser(kind):
    """Options shared by the estimator demos (forecast, classify), which take parsed arguments;
    the other demos (generate, seq2seq) parse their own (their module has build_parser)."""
    d = argparse.ArgumentParser(prog=f"{PROG} demo {kind}",
                                description="run a ready estimator on real data beside its baselines; "
                                            "writes a report folder (markdown + PNG)")
    d.add_argument("--out", metavar="DIR", help=f"report folder (default demo-report/{kind})")
    d.add_argument("--datasets", type=lambda t: [v.strip() for v in t.split(",") if v.strip()],
                   metavar="NAME[,NAME...]", help="data sets to run (default: the demo's own)")
    d.add_argument("--smoke", action="store_true", help="tiny training budgets: checks the plumbing in seconds")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.add_argument("--seed", type=int, default=0)
    return d


def bench_options(args, argv=None):
    """The runner's Options for parsed `bench` arguments."""
    import fastlstm

    from .bench import shapes as S
    from .bench.runner import Options

    if args.shape:
        shapes = list(args.shape)
    elif args.quick:
        shapes = list(S.QUICK_SHAPES)
    else:
        shapes = [S.SHAPES[k] for k in S.DEFAULT_SHAPES]
    if args.lengths:
        shapes = [replace(s, variable=(args.lengths == "variable")) for s in shapes]
    shapes = list(dict.fromkeys(shapes))
    cores = fastlstm.get_num_threads()
    threads = args.threads or ([cores] if args.quick else list(dict.fromkeys([1, cores])))
    return Options(
        shapes=shapes, threads=threads,
        modes=("forward", "train") if args.mode == "both" else (args.mode,),
        backends=args.backends, peers=args.peers, prepacked=not args.no_prepacked,
        repeats=args.repeats or (5 if args.quick else 7),
        min_time=args.min_time if args.min_time is not None else 0.05,
        streaming=() if args.no_streaming else S.STREAMING_SIZES,
        reference_max_gflop=1.0 if args.quick else 20.0,
        progress=not args.no_progress, seed=args.seed, argv=argv)


def _write_outputs(results, outputs) -> int:
    """Write each (path, write) whose path was given; 1 if one could not be written."""
    rc = 0
    for path, write in outputs:
        if not path:
            continue
        try:
            write(results, path)
            print(f"wrote {path}")
        except (OSError, ImportError) as e:
            print(f"{PROG} bench: could not write {path}: {type(e).__name__}: {e}", file=sys.stderr)
            rc = 1
    return rc


def _bench_fit(args) -> int:
    import fastlstm

    from .bench import fit, report

    names = {"char-lm": "char-LM"}
    problems = [names.get(p, p) for p in args.problems] if args.problems else list(fit.PROBLEM_NAMES)
    cores = fastlstm.get_num_threads()
    threads = args.threads or list(dict.fromkeys([1, cores]))
    backends = args.backends or ["native", "numba", "reference"]
    # peers: a PyTorch loop with nn.LSTM, the same loop with fastlstm.torch.LSTM, Keras; --peers none: only fastlstm
    peers = [] if args.peers == [] else ["torch", "torch+fastlstm", "keras"]
    results = fit.run_fit(problems, threads, args.repeats or (2 if args.quick else 5), backends, peers,
                          progress=not args.no_progress, seed=args.seed)
    print(fit.format_fit(results))
    return _write_outputs(results, ((args.json, report.write_json), (args.markdown, fit.write_fit_markdown),
                                    (args.plot, fit.write_fit_plot)))


def sweep_options(args, argv=None):
    """The sweep's options for parsed `bench --sweep` arguments."""
    import fastlstm

    from .bench.sweep import SweepOptions

    cores = fastlstm.get_num_threads()
    return SweepOptions(
        threads=args.threads or list(dict.fromkeys([1, cores])), quick=args.quick,
        modes=("forward", "train") if args.mode == "both" else (args.mode,), peers=args.peers,
        repeats=args.repeats or (3 if args.quick else 5),
        min_time=args.min_time if args.min_time is not None else (0.01 if args.quick else 0.02),
        progress=not args.no_progress, seed=args.seed, argv=argv)


def _sweep(args, argv) -> int:
    from .bench import sweep

    bad = [f"--{n}" for n, v in (("shape", args.shape), ("lengths", args.lengths), ("backends", args.backends),
                                 ("markdown", args.markdown)) if v]
    if bad:
        print(f"{PROG} bench: {', '.join(bad)} cannot be combined with --sweep (its grid is fixed)",
              file=sys.stderr)
        return 2
    results = sweep.run(sweep_options(args, argv))
    print(sweep.format_text(results))
    rc = _write_outputs(results, ((args.json, sweep.write_json), (args.plot, sweep.write_plot)))
    broken = [r for r in results["rows"] if r["kind"] == "fastlstm" and r.get("status") in ("failed", "error")]
    if broken:
        print(f"{PROG} bench: {len(broken)} fastlstm measurement(s) failed their correctness check "
              f"or raised (see above)", file=sys.stderr)
        rc = 1
    return rc


def _bench(args, argv) -> int:
    from .bench import report, runner

    if args.fit and args.sweep:
        print(f"{PROG} bench: --fit and --sweep are separate benchmarks; choose one", file=sys.stderr)
        return 2
    if not args.default_malloc:
        runner.pin_allocator()
    if args.fit:
        return _bench_fit(args)
    if args.sweep:
        return _sweep(args, argv)
    results = runner.run(bench_options(args, argv))
    print(report.format_text(results))
    rc = _write_outputs(results, ((args.json, report.write_json), (args.markdown, report.write_markdown),
                                  (args.plot, report.write_plot)))
    broken = [r for r in results["rows"] + results["streaming"]
              if r["kind"] == "fastlstm" and r.get("status") in ("failed", "error")]
    if broken:
        print(f"{PROG} bench: {len(broken)} fastlstm measurement(s) failed their correctness check "
              f"or raised (see the table)", file=sys.stderr)
        rc = 1
    return rc


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "config":
        import fastlstm

        fastlstm.show_config()
        return 0
    if args.command in ("demo", "forecast"):
        import importlib

        mod = importlib.import_module(f".demos.{args.kind if args.command == 'demo' else '_csv'}", __package__)
        if args.command == "demo" and hasattr(mod, "build_parser"):
            return mod.main(args.demo_args)  # a demo with its own options
        if args.command == "demo":
            args = _estimator_demo_parser(args.kind).parse_args(args.demo_args, namespace=args)
        try:
            return mod.main(args)
        except (ValueError, ImportError, OSError) as e:  # bad data / missing extra: a message, not a traceback
            print(f"{PROG} {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    return _bench(args, argv[argv.index("bench") + 1:])


if __name__ == "__main__":
    sys.exit(main())
