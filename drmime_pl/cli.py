"""The command line: ``python -m drmime_pl.fit``, ``python -m drmime_pl.evaluate`` and ``python -m drmime_pl.warp``
(the console scripts ``drmime-fit``, ``drmime-evaluate``, ``drmime-warp``).

This module holds what is the command line's own: the three commands' argument parsing, what each does with the
parsed arguments, the mapping of errors to one-line messages and exit statuses, and the constants they use. The
work itself is elsewhere: :func:`drmime_pl.training.fit.fit` (one registration), :mod:`drmime_pl.evaluation` (a
data set), :mod:`drmime_pl.io` and :mod:`drmime_pl.core` (applying a saved transform).

Exit statuses (``EXIT_*``):

======  =====================================================================================================
0       finished (``evaluate``: failed pairs included)
1       ``fit``: the registration failed (``RegistrationError``: NaN loss, degenerate transform); ``fit --pairs``:
        a pair failed (the others' results are written)
2       bad input or usage: one line ``drmime_pl: error: ...`` (``DrmimeError``: files, config, checkpoint)
130     SIGINT (Ctrl-C); 143 SIGTERM; 129 SIGHUP: 128 + the signal's number, after a clean stop
======  =====================================================================================================
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import keys_help, load_config
from .errors import DrmimeError, ImageError, RegistrationError, RegistrationInterrupted, UsageError

EXIT_FAILED = 1  # the registration itself failed (diverged, degenerate)
EXIT_USAGE = 2  # bad input: files, config, checkpoint, command line
EXIT_INTERRUPTED = 130  # Ctrl-C, checkpoint saved (SIGTERM: 143, SIGHUP: 129; see drmime_pl.training.signals)

#: Defaults evaluate applies after --config and before the command-line overrides (which may change them back):
#: no Lightning progress bar between the per-pair lines, and no full-size warped.png per pair.
EVAL_DEFAULTS = ("logging.progress_bar=false", "output.warped=false")


# ---------------------------------------------------------------------------------------------------------------- fit


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


#: Defaults of ``fit --pairs`` after --config and before the command-line overrides: no Lightning progress bar
#: between the per-pair lines.
LIST_DEFAULTS = ("logging.progress_bar=false",)
LIST_BATCH_SIZE = 4  # as evaluate's --batch-size


def parse_fit_args(argv=None):
    parser = _OneLineParser(
        prog="python -m drmime_pl.fit",
        description="Register a moving image to a fixed image by maximising MINE mutual information; with --pairs, "
                    "every pair of a list, in one process.",
        epilog="Any key=value after the options overrides the config, e.g. data.fixed=a.png model.transform=affine\n"
               "(configs/default.yaml explains each key; pyramid level 0 is the finest). Keys and defaults:\n"
               + keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", default=None,
                        help="YAML config file, or a packaged config by name: default, fire, anhir "
                             "(without it: the defaults of configs/default.yaml)")
    parser.add_argument("--pairs", metavar="PAIRS.csv",
                        help="register every pair of this list (columns name, fixed_image, moving_image and "
                             "optionally fixed_mask; paths relative to its folder; other columns ignored) instead "
                             "of data.fixed / data.moving")
    parser.add_argument("--out", "-o", metavar="DIR",
                        help="with --pairs (required there): DIR/results.csv and each pair's files in "
                             "DIR/transforms/<name>/")
    parser.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                        help="with --pairs: register N pairs at a time in one optimisation loop (default 4; 1: one "
                             "after another, results equal to one-pair runs')")
    parser.add_argument("--redo", action="store_true",
                        help="with --pairs: register again the pairs an earlier run with the same --out and config "
                             "finished (by default they are skipped)")
    parser.add_argument("overrides", nargs="*", help="OmegaConf dotlist overrides: section.key=value")
    args = parser.parse_args(argv)
    if not args.pairs and (args.out or args.redo or args.batch_size):
        parser.error("--out, --batch-size and --redo go with --pairs (one pair: output.dir=DIR)")
    if args.pairs and not args.out:
        parser.error("--pairs needs --out DIR")
    return args


def fit_main(argv=None) -> int:
    """``python -m drmime_pl.fit``: register one pair; the exit status says how it ended (module docstring)."""
    from .training.signals import signals_as_interrupts

    with signals_as_interrupts():  # SIGTERM, SIGHUP: like Ctrl-C (exit 143, 129), temporary files removed
        return _fit_main(argv)


def _fit_main(argv=None) -> int:
    from .training.fit import fit
    from .training.signals import exit_code, signal_name, signum_of

    args = parse_fit_args(argv)
    if args.pairs:
        return _fit_list(args)
    debug = any(o.replace(" ", "") in ("fit.debug=true", "fit.debug=True") for o in args.overrides)
    try:
        cfg = load_config(args.config, args.overrides)
        debug = bool(cfg.fit.debug)
        result = fit(cfg)
    except RegistrationInterrupted as exc:
        print(f"drmime_pl: {exc}", file=sys.stderr)
        return exit_code(exc.signum)
    except KeyboardInterrupt as exc:
        print(f"drmime_pl: interrupted ({signal_name(signum_of(exc))}) before the run finished; no transform.json "
              f"was written", file=sys.stderr)
        return exit_code(signum_of(exc))
    except DrmimeError as exc:
        if debug:
            raise
        print(f"drmime_pl: error: {exc}", file=sys.stderr)
        return EXIT_FAILED if isinstance(exc, RegistrationError) else EXIT_USAGE
    for line in summary_lines(result):
        print(line)
    return 0


def summary_lines(result) -> list:
    """What ``python -m drmime_pl.fit`` prints on stdout about a finished registration: how it ended, the verdict,
    each further opinion, the matrix and where the outputs are."""
    from .training.progress import kept_unoptimised, run_state

    def one(value, digits=1) -> str:  # None: not computed (too little overlap, or not asked)
        return "n/a" if value is None else f"{value:.{digits}f}"

    wall = f", wall time {result.wall_seconds:.1f} s" if result.wall_seconds is not None else ""
    if kept_unoptimised(result):  # no MINE run for it: no steps, no MI
        lines = [f"drmime_pl: {run_state(result)}; the registrations took {result.seconds:.1f} s{wall}"]
    else:
        lines = [f"drmime_pl: {run_state(result)} in {result.seconds:.1f} s{wall}; final MI {result.final_mi:.3f} nats"]
    q = result.quality
    if q:
        verdict = f"SUSPECT: {q['reason']}" if q.get("suspect") else "ok"
        lines.append(f"quality: {verdict} (edge agreement {one(q['ngf'], 3)}, z {one(q['z'])} against misaligned "
                     f"copies; kept the {q['chosen']} transform)")
        for key, label in (("second_opinion", "second opinion"), ("rigid_opinion", "rigid opinion"),
                           ("candidate_opinion", "candidate opinion"), ("intensity_opinion", "intensity opinion")):
            opinion = q.get(key)
            if opinion and opinion.get("skipped"):
                lines.append(f"{label}: not run, {opinion['skipped']}")
            elif opinion:
                # z_<name> of both results, in order; the candidate opinion also has MI's z_mi_<name>, the
                # intensity opinion MI itself, mi_<name> (nats)
                sides = [f"z {one(value)}" + (f", MI z {one(opinion[f'z_mi_{name[2:]}'])}"
                                              if f"z_mi_{name[2:]}" in opinion else "")
                         + (f", MI {one(opinion[f'mi_{name[2:]}'], 3)}" if f"mi_{name[2:]}" in opinion else "")
                         + f" ({name[2:]})"
                         for name, value in opinion.items() if name.startswith("z_") and not name.startswith("z_mi_")]
                failed = f" ({opinion['error']})" if opinion.get("error") else ""
                lines.append(f"{label}: {sides[0]} against {sides[1]}: kept the {opinion['kept']}{failed}")
    lines.append("matrix (fixed pixel -> moving pixel):")
    lines += ["  " + "  ".join(f"{v: .6g}" for v in row) for row in result.matrix]
    if result.output_dir:
        lines.append(f"outputs: {result.output_dir}")
    return lines


def _fit_list_setup(args):
    """``fit --pairs``: the config, the pairs and the output folder, everything checked before the first pair.
    Raises DrmimeError."""
    from .evaluation.datasets import read_pairs_csv
    from .evaluation.sources import transform_by_registration

    cfg = load_config(args.config, list(LIST_DEFAULTS) + list(args.overrides))
    if cfg.fit.ckpt_path:
        raise UsageError("fit.ckpt_path resumes one registration; it cannot be used with --pairs")
    if cfg.data.fixed_mask:
        raise UsageError("data.fixed_mask is the mask of one fixed image; it cannot be used with --pairs")
    replaced = [key for key, value in (("data.fixed", cfg.data.fixed), ("data.moving", cfg.data.moving),
                                       ("output.dir", cfg.output.dir)) if value]
    if replaced:
        print(f"drmime_pl: note: --pairs given, so {', '.join(replaced)} of the config "
              f"{'is' if len(replaced) == 1 else 'are'} not used", file=sys.stderr)
        cfg.data.fixed = cfg.data.moving = cfg.output.dir = None
    pairs = read_pairs_csv(args.pairs, landmarks=False)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: --out exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    return cfg, pairs, out, transform_by_registration(cfg, out, redo=args.redo)


def _fit_list(args) -> int:
    """``python -m drmime_pl.fit --pairs PAIRS.csv --out DIR``: register every pair of the list
    (:mod:`drmime_pl.evaluation.register_list`). Exit status 0 when every pair was registered, 1 when some failed
    (their rows in ``results.csv`` say why), 2 for bad input before the first pair, 128 + the signal after an
    interruption (the pairs done so far are in ``results.csv``)."""
    from .evaluation.register_list import register_list, summary_line
    from .training.signals import exit_code

    debug = any(o.replace(" ", "").lower() == "fit.debug=true" for o in args.overrides)
    try:
        cfg, pairs, out, source = _fit_list_setup(args)
    except DrmimeError as exc:
        if debug:
            raise
        print(f"drmime_pl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rows, interrupted = register_list(pairs, source, out, args.batch_size or LIST_BATCH_SIZE,
                                      reraise=bool(cfg.fit.debug))
    if not rows:
        print("drmime_pl: interrupted before the first pair finished; nothing written", file=sys.stderr)
        return exit_code(interrupted or 2)
    print(summary_line(rows, len(pairs), out))
    if interrupted:
        print(f"drmime_pl: interrupted after {len(rows)} of {len(pairs)} pairs", file=sys.stderr)
        return exit_code(interrupted)
    return EXIT_FAILED if any(not r.ok for r in rows) else 0


# ----------------------------------------------------------------------------------------------------------- evaluate


def parse_evaluate_args(argv=None):
    parser = _OneLineParser(
        prog="python -m drmime_pl.evaluate",
        description="Register every pair of a landmark data set (ANHIR/BIRL pairs CSV or FIRE) and report TRE, "
                    "rTRE and success rates.",
        epilog="Any key=value after the options overrides the registration config, e.g. model.transform=affine "
               "fit.max_steps=300. Outputs: OUT/pairs.csv, OUT/summary.md, OUT/success.png and, when registering, "
               "OUT/transforms/<pair>/transform.json (re-score them later with --transforms OUT/transforms).",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", metavar="PAIRS.csv", help="ANHIR/BIRL pair list (name, fixed_image, moving_image, "
                     "fixed_landmarks, moving_landmarks[, modality, fixed_mask]); paths relative to its folder")
    src.add_argument("--fire", metavar="FIRE_DIR", help="FIRE folder (Images/, Ground Truth/)")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--transforms", metavar="DIR",
                        help="score DIR/<pair>/transform.json instead of registering")
    parser.add_argument("--config", "-c", default=None, help="registration config YAML")
    parser.add_argument("--only", action="append", default=[], metavar="GLOB",
                        help="evaluate only pairs whose name matches (repeatable), e.g. --only 'A*'")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="skip pairs whose name matches (repeatable), e.g. --exclude P37")
    parser.add_argument("--redo", action="store_true",
                        help="register every pair again (by default a pair whose OUT/transforms/<pair>/transform.json "
                             "is complete and was made with the same config is re-scored, not re-registered)")
    parser.add_argument("--devices", type=_positive_int, default=1, metavar="N",
                        help="processes per node, the pairs split between them by Lightning Fabric (ddp: gloo on "
                             "CPU, one process per core; NCCL on GPUs, one process per GPU). Default 1: one process, "
                             "no Fabric. Results equal a one-process run's (README: Many pairs)")
    parser.add_argument("--num-nodes", type=_positive_int, default=1, metavar="M",
                        help="nodes of a torchrun or SLURM (srun) job, each running --devices processes; --out must "
                             "be on a file system every node sees")
    parser.add_argument("--batch-size", type=_positive_int, default=4, metavar="N",
                        help="register N pairs at a time in one optimisation loop, the next N prepared meanwhile "
                             "(default 4: on the 82 Jiang pairs 2.2x the pairs per minute of 1, the same successes; "
                             "1: one after another, each pair with its own TensorBoard run and checkpoints). "
                             "Results equal one-at-a-time runs' up to run-to-run noise (README: Many pairs)")
    parser.add_argument("--accelerator", choices=("cpu", "gpu", "auto"), default=None,
                        help="the device of each registration: sets fit.accelerator (default: the config's, cpu)")
    parser.add_argument("overrides", nargs="*", help="OmegaConf dotlist overrides: section.key=value")
    return parser.parse_args(argv)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _evaluate_setup(args):
    """Everything that can be wrong with the command line, checked before the first pair. Raises DrmimeError."""
    from .evaluation.datasets import discover_fire, read_pairs_csv, select_pairs
    from .evaluation.sources import transform_by_registration, transform_from_dir

    mode = "fire" if args.fire else "anhir"
    pairs = discover_fire(args.fire) if args.fire else read_pairs_csv(args.pairs)
    selected = select_pairs(pairs, args.only, args.exclude)
    if not selected:
        raise UsageError(f"no pair matches --only {args.only} / --exclude {args.exclude} "
                         f"(names: {', '.join(p.name for p in pairs[:5])}{', ...' if len(pairs) > 5 else ''})")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: --out exists and is not a folder")
    cfg = None
    if args.transforms:
        folder = Path(args.transforms)
        if not folder.is_dir():
            raise UsageError(f"{folder}: --transforms folder not found")
        if args.config or args.overrides:
            print("drmime_pl.evaluate: note: --transforms given, so --config and the overrides are not used",
                  file=sys.stderr)
        source_factory = lambda device_index=None: transform_from_dir(folder)  # noqa: E731
    else:
        accelerator = [f"fit.accelerator={args.accelerator}"] if args.accelerator else []
        cfg = load_config(args.config, list(EVAL_DEFAULTS) + accelerator + list(args.overrides))
        if cfg.fit.ckpt_path:
            raise UsageError("fit.ckpt_path resumes one registration; it cannot be used for a whole data set")
        source_factory = lambda device_index=None: transform_by_registration(  # noqa: E731
            cfg, out, redo=args.redo, device_index=device_index)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    source = args.fire or args.pairs
    if cfg is not None:
        what = "registered with " + " ".join([args.config or "the default config"] + list(args.overrides))
    else:
        what = f"transforms from {args.transforms}"
    title = f"{'FIRE' if mode == 'fire' else 'Landmark'} evaluation: {source} ({what})"
    return mode, selected, out, cfg, source_factory, title


def evaluate_main(argv=None) -> int:
    """``python -m drmime_pl.evaluate``: register and score a landmark data set (module docstring: exit status)."""
    from .training.signals import signals_as_interrupts

    with signals_as_interrupts():  # SIGTERM and SIGHUP stop like Ctrl-C: report for the pairs done, exit 143 / 129
        return _evaluate_main(argv)


def _evaluate_main(argv=None) -> int:
    from .evaluation.reports import write_report
    from .evaluation.run import run
    from .training.signals import exit_code

    args = parse_evaluate_args(argv)
    debug = any(o.replace(" ", "").lower() == "fit.debug=true" for o in args.overrides)
    try:
        mode, pairs, out, cfg, make_source, title = _evaluate_setup(args)
        reraise = bool(cfg is not None and cfg.fit.debug)
        if args.devices * args.num_nodes > 1:  # several processes: drmime_pl.evaluation.sharded
            from .evaluation.sharded import run_sharded

            accelerator = str(cfg.fit.accelerator) if cfg is not None else (args.accelerator or "cpu")
            merged = run_sharded(pairs, make_source, mode, out, accelerator, args.devices, args.num_nodes, reraise,
                                 args.batch_size)
            if merged is None:
                return 0  # not rank 0: its results are in rank 0's report (0: Fabric's launcher stops all on others)
    except DrmimeError as exc:
        if debug:
            raise
        print(f"drmime_pl.evaluate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.devices * args.num_nodes > 1:
        results, interrupted = merged
    else:
        results, interrupted = run(pairs, make_source(), mode, out, reraise=reraise, batch_size=args.batch_size)
    if not results:
        print("drmime_pl.evaluate: interrupted before the first pair finished; nothing written", file=sys.stderr)
        return exit_code(interrupted or 2)
    if interrupted:
        title += f" - INTERRUPTED after {len(results)} of {len(pairs)} pairs"
    text = write_report(out, results, mode, title)
    failed = sum(not r.ok for r in results)
    print(text, end="")
    print(f"\n{len(results)} pairs evaluated, {failed} failed. Outputs: {out / 'pairs.csv'}, {out / 'summary.md'}, "
          f"{out / 'success.png'}" + (f", {out / 'transforms'}/" if cfg is not None else ""))
    if interrupted:
        print(f"drmime_pl.evaluate: interrupted after {len(results)} of {len(pairs)} pairs", file=sys.stderr)
        return exit_code(interrupted)
    return 0


# --------------------------------------------------------------------------------------------------------------- warp


def parse_warp_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m drmime_pl.warp",
        description="Apply a saved drmime_pl transform (transform.json) to an image of the moving frame, or map "
                    "landmark CSVs between the fixed and the moving frame.",
        epilog="Images keep their pixel type and channels; every plane of a stack is warped. Points files are "
               "ANHIR CSVs (,X,Y; x = column, y = row, pixels).",
    )
    p.add_argument("--transform", "-t", required=True, help="transform.json of a run")
    p.add_argument("--moving", "-m", help="image of the moving frame to resample onto the fixed grid")
    p.add_argument("--like", help="image of the fixed frame: output size (and TIFF resolution) from it "
                                  "(default: the transform's fixed_shape)")
    p.add_argument("--out", "-o", required=True, help="output image (.tif for any type; .png 8/16-bit) or CSV")
    p.add_argument("--fill", default="0", help="outside the moving image: 0 (default), white, edge, or a number")
    p.add_argument("--order", choices=("linear", "nearest"), default="linear",
                   help="interpolation: linear (default) or nearest (label images)")
    p.add_argument("--rescale", action="store_true",
                   help="allow a moving (or --like) image of another size than the transform's: the same field of "
                        "view at another resolution, scaled edge to edge")
    p.add_argument("--points", help="landmark CSV (,X,Y) to map instead of an image")
    p.add_argument("--to", choices=("moving", "fixed"), default="moving",
                   help="with --points: the frame to map them to (fixed points -> moving, or moving -> fixed)")
    return p.parse_args(argv)


def run_warp(args) -> str:
    """Do what the parsed warp arguments say; returns a one-line summary. Raises DrmimeError subclasses."""
    from .core.resample import warp_array
    from .io.landmarks import read_landmarks_csv, write_points_csv
    from .io.native import read_native, write_native
    from .io.result import Registration
    from .io.transform_io import rescale_matrix

    reg = Registration.load(args.transform)
    out = Path(args.out)
    if out.is_dir():
        raise DrmimeError(f"{out}: is a directory; --out names a file")
    if not out.parent.is_dir():
        raise DrmimeError(f"{out}: folder {out.parent} does not exist")
    if args.points:
        if args.moving:
            raise DrmimeError("--points and --moving: give one of them")
        pts = read_landmarks_csv(args.points)
        mapped = reg.transform_points(pts, inverse=(args.to == "fixed"))
        write_points_csv(mapped, out)
        return f"{len(pts)} points mapped to the {args.to} frame -> {out}"
    if not args.moving:
        raise DrmimeError("give --moving IMAGE (or --points CSV)")
    fill = args.fill
    if fill not in ("white", "edge"):
        try:
            fill = float(fill)
        except ValueError:
            raise DrmimeError(f"--fill {args.fill!r}: expected 0, white, edge or a number") from None
    image = read_native(args.moving)
    fixed_hw, matrix, like = tuple(reg.fixed_shape), reg.matrix, None
    if args.like:
        like = read_native(args.like)
        fixed_hw = tuple(like.hw)
    moving_hw = tuple(image.hw)
    if (moving_hw != tuple(reg.moving_shape) or fixed_hw != tuple(reg.fixed_shape)):
        if not args.rescale:
            which = (f"--moving {args.moving} is {moving_hw[1]}x{moving_hw[0]} (W x H)" if moving_hw != tuple(reg.moving_shape)
                     else f"--like {args.like} is {fixed_hw[1]}x{fixed_hw[0]} (W x H)")
            raise ImageError(f"{which} but the transform was made for a {reg.moving_shape[1]}x{reg.moving_shape[0]} "
                             f"moving and a {reg.fixed_shape[1]}x{reg.fixed_shape[0]} fixed image; "
                             "--rescale applies it to the same field of view at another resolution")
        matrix = rescale_matrix(matrix, reg.fixed_shape, fixed_hw, reg.moving_shape, moving_hw)
    warped = warp_array(image.array, image.axes, matrix, fixed_hw, order=args.order, fill=fill)
    tiff_like = image.tiff
    if like is not None and like.tiff is not None and tiff_like is not None:
        tiff_like = type(tiff_like)(**{**tiff_like.__dict__, "resolution": like.tiff.resolution})
    write_native(warped, image.axes, out, like=tiff_like)
    return f"{args.moving} ({image.array.dtype}, axes {image.axes}) -> {out} ({fixed_hw[1]}x{fixed_hw[0]})"


def warp_main(argv=None) -> int:
    """``python -m drmime_pl.warp``: apply a saved transform to an image or to landmarks."""
    args = parse_warp_args(argv)
    try:
        message = run_warp(args)
    except DrmimeError as exc:
        print(f"drmime_pl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"drmime_pl: error: {getattr(exc, 'filename', None) or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"drmime_pl: {message}")
    return 0
