"""``gradcheck-kit audit [--ops NAMES] ...``: the catalogue of torch operations (:mod:`gradcheck_kit.audit`)
and the user's own functions, checked in float32 and float64."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gradcheck_kit._text import Style, UsageError, format_table
from gradcheck_kit.cli._inputs import DTYPES, check_call, check_size, make_input, parse_input_spec, resolve_function
from gradcheck_kit.cli._output import EXIT_FAILED, EXIT_FN_FAILED, EXIT_OK, check_json_path, write_json
from gradcheck_kit.cli._parser import count_type, option_type
from gradcheck_kit.options import ORDERS

__all__ = ["AUDIT_DTYPES", "AUDIT_ORDERS", "add_parser", "run"]

#: the dtypes the audit runs in
AUDIT_DTYPES = ("float32", "float64")
#: the derivative orders the audit checks up to
AUDIT_ORDERS = ORDERS[:2]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "audit",
        parents=parents,
        help="check a built-in catalogue of torch operations",
        description="Check the gradients of a catalogue of torch operations (elementwise, reductions, "
        "linear algebra, normalisation, convolution, losses) in float32 and float64.",
        epilog="example: gradcheck-kit audit --ops tanh,softmax,layer_norm --json audit.json",
    )
    parser.add_argument(
        "--ops", action="append", default=None, metavar="NAMES",
        help="comma-separated op names, as torch spells them, and your own functions as MODULE:FUNCTION "
        "(inputs from --input) or MODULE:FUNCTION=SHAPE[:DTYPE][;SHAPE[:DTYPE]...]; may be repeated",
    )
    parser.add_argument(
        "--input", "-i", dest="inputs", action="append", default=[], metavar="SHAPE[:DTYPE]",
        help="inputs of the MODULE:FUNCTION entries of --ops that give none, one per positional argument; "
        "a floating input without a dtype follows --dtypes",
    )
    parser.add_argument("--dtypes", default=",".join(AUDIT_DTYPES), metavar="DTYPES",
                        help=f"default {','.join(AUDIT_DTYPES)}")
    parser.add_argument("--quick", action="store_true", help="a fast subset with fewer checks (under a minute)")
    parser.add_argument(
        "--examples", type=count_type(0), default=None, help="random expressions per elementwise op and dtype"
    )
    parser.add_argument(
        "--order", type=int, choices=AUDIT_ORDERS, default=None,
        help="highest derivative order (default: 2 where torch has double backward; 1 with --quick)",
    )
    parser.add_argument("--strict", action="store_true", help="count failures listed as known torch issues as failures")
    parser.add_argument("--seed", type=option_type("seed", "--seed"), default=0,
                        help="seed of the private generators (default 0)")
    parser.add_argument("--json", metavar="PATH", default=None, help="write the results as JSON ('-': stdout)")
    parser.add_argument("--list", action="store_true", help="list the catalogue and exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(handler=run)


def _dtypes(text: str) -> list[str]:
    """``--dtypes``: float32, float64 or both, as torch spells them."""
    dtypes: list[str] = []
    for name in (d.strip() for d in text.split(",") if d.strip()):
        canonical = DTYPES.get(name.lower().removeprefix("torch."))
        if canonical not in AUDIT_DTYPES:
            raise UsageError(f"--dtypes: {name!r} is not {' or '.join(AUDIT_DTYPES)}")
        if canonical not in dtypes:
            dtypes.append(canonical)
    if not dtypes:
        raise UsageError(f"--dtypes: give {', '.join(AUDIT_DTYPES)} or both")
    return dtypes


def run(args: argparse.Namespace) -> int:
    check_json_path(args.json)
    from gradcheck_kit import audit

    entries = audit.split_ops(args.ops) if args.ops is not None else None
    names = None if entries is None else [e for e in entries if not audit.is_function_entry(e)]
    functions = [] if entries is None else [e for e in entries if audit.is_function_entry(e)]
    if args.inputs and not functions:
        raise UsageError("--input gives the inputs of MODULE:FUNCTION entries of --ops, and there is none")
    dtypes = _dtypes(args.dtypes)
    catalogue = audit.catalogue()
    if args.list:
        rows = [(op.name, op.family, op.call, "yes" if op.quick else "") for op in catalogue]
        print(format_table(["op", "family", "checked as", "quick"], rows))
        return EXIT_OK
    ops = audit.select(catalogue, names, quick=args.quick)  # UsageError for unknown names
    ops += [_function_entry(audit, entry, args) for entry in functions]
    progress = None if args.quiet else audit.Progress(sys.stderr, Style.for_stream(sys.stderr, args.color))
    result = audit.run_audit(
        ops, dtypes=dtypes, quick=args.quick, examples=args.examples, seed=args.seed, order=args.order,
        strict=args.strict,
        progress=progress,
    )
    json_error = None if args.json is None else write_json(args.json, result.to_dict())
    if args.json != "-" or json_error:
        print(audit.format_results(result, Style.for_stream(sys.stdout, args.color)))
    if json_error:
        raise UsageError(json_error)
    if result.ok:
        return EXIT_OK
    if not any(row.verdict == "FAIL" for row in result.rows) and any(row.fn_failed for row in result.rows):
        return EXIT_FN_FAILED
    return EXIT_FAILED


def _function_entry(audit: Any, entry: str, args: argparse.Namespace) -> Any:
    """``MODULE:FUNCTION`` (inputs from ``--input``) or ``MODULE:FUNCTION=SHAPE[:DTYPE][;...]`` as an
    audit entry."""
    target, sep, shapes = entry.partition("=")
    target = target.strip()
    if sep:
        texts = [t for t in shapes.split(";") if t.strip()]
        if not texts:
            raise UsageError(f"--ops {entry!r}: no input shapes after '=' (e.g. {target}=4,8:float32)")
    else:
        texts = list(args.inputs)
        if not texts:
            raise UsageError(
                f"--ops {entry!r}: give the function's inputs, as --ops '{target}=4,8:float32' or --input 4,8:float32"
            )
    specs = []
    for text in texts:
        try:
            specs.append(parse_input_spec(text))
        except UsageError as exc:
            raise UsageError(f"--ops {entry!r}: {str(exc).removeprefix('--input ')}" if sep else str(exc)) from None
        check_size(specs[-1])
    explicit = [":" in text for text in texts]
    fn = resolve_function(target)
    check_call(fn, target, len(specs), {})
    return audit.function_op(target, fn, specs, explicit, make_input, order=args.order or 1)
