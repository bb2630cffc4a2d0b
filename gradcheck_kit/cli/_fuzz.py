"""``gradcheck-kit fuzz MODULE:FUNCTION --input ?,8:float32 ...``: a Hypothesis search for inputs where the
gradients are wrong, printing the shrunk counterexample."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Sequence

from gradcheck_kit._text import Style, UsageError
from gradcheck_kit.cli._check import checker_options
from gradcheck_kit.cli._inputs import FLOATING, InputSpec, one_line, prepare_target
from gradcheck_kit.cli._output import (
    EXIT_FAILED,
    EXIT_OK,
    check_json_path,
    json_default,
    report_status,
    verdict_line,
    write_json,
)
from gradcheck_kit.cli._parser import choice_type, count_type
from gradcheck_kit.options import LAYOUTS

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "fuzz",
        parents=parents,
        help="search for inputs where the gradients are wrong (Hypothesis)",
        description="Search with Hypothesis for inputs where MODULE:FUNCTION's gradients are wrong, "
        "and print the shrunk counterexample.",
        epilog="example: gradcheck-kit fuzz mypkg.ops:fused_gelu --input ?,8:float32 --min-value -5 --max-value 5",
    )
    parser.add_argument(
        "--input", "-i", dest="inputs", action="append", required=True, metavar="SHAPE[:DTYPE]",
        help="as for check; a ? lets Hypothesis choose that size: ?,8:float32",
    )
    parser.add_argument("--examples", type=count_type(1), default=100, help="examples to try (default 100)")
    parser.add_argument("--max-side", type=count_type(1), default=5, help="largest size chosen for a ? (default 5)")
    parser.add_argument(
        "--layout", type=choice_type("--layout", LAYOUTS), choices=LAYOUTS, default="any",
        help="memory layouts to draw (default any: contiguous and strided views)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    check_json_path(args.json)
    fn, specs, wrt = prepare_target(args, allow_free=True)
    for spec in specs:
        if spec.dtype not in FLOATING or spec.dtype.startswith("complex"):
            raise UsageError(f"--input {spec}: fuzz draws real floating tensors (float64, float32, ...)")
    try:
        importlib.import_module("gradcheck_kit.fuzz")
        from gradcheck_kit import strategies as gst
    except ImportError as exc:
        raise UsageError(f"fuzz is not available in this build ({one_line(exc)})") from None
    import gradcheck_kit as gk

    strategies = _strategies(gst, specs, args, wrt)
    options = checker_options(args)
    seed = options.pop("seed")
    if wrt is not None:
        options["wrt"] = wrt
    from gradcheck_kit.errors import InvalidArgument

    try:
        result = gk.fuzz_gradients(fn, strategies, max_examples=args.examples, seed=seed, **options)
    except InvalidArgument as exc:
        raise UsageError(one_line(exc)) from None
    status = EXIT_OK if result.ok else report_status(result.report) if result.report is not None else EXIT_FAILED
    json_error = None if args.json is None else write_json(args.json, _fuzz_to_dict(result))
    if args.json != "-" or json_error:
        style = Style.for_stream(sys.stdout, args.color)
        print(str(result))
        shapes = ", ".join(str(s) for s in specs)
        examples = getattr(result, "examples", None)
        tried = f"{examples} example{'' if examples == 1 else 's'}" if examples is not None else f"up to {args.examples} examples"
        extra = "" if wrt is None else f", wrt={','.join(map(str, wrt))}"
        print(verdict_line(style, status, f"{args.target}({shapes})  {tried}, seed={args.seed}{extra}"))
    if json_error:
        raise UsageError(json_error)
    return status


def _strategies(gst: Any, specs: Sequence[InputSpec], args: argparse.Namespace, wrt: list[int] | None) -> list[Any]:
    """One tensor strategy per ``--input``: a ``?`` size drawn in [1, --max-side]."""
    import hypothesis.strategies as st
    import torch

    strategies = []
    for i, spec in enumerate(specs):
        shape: Any = (
            st.tuples(*(st.integers(1, args.max_side) if s is None else st.just(s) for s in spec.shape))
            if spec.free
            else tuple(spec.shape)
        )
        strategies.append(
            gst.tensors(
                shape=shape,
                dtype=getattr(torch, spec.dtype),
                min_value=args.min_value,
                max_value=args.max_value,
                layout=args.layout,
                requires_grad=wrt is None or i in wrt,
            )
        )
    return strategies


def _fuzz_to_dict(result: Any) -> dict[str, Any]:
    if hasattr(result, "to_dict"):
        return result.to_dict()
    report = getattr(result, "report", None)
    counterexample = getattr(result, "counterexample", None)
    return {
        "ok": bool(result.ok),
        "examples": getattr(result, "examples", None),
        "seed": getattr(result, "seed", None),
        "counterexample": None if counterexample is None else [_describe_value(x) for x in counterexample],
        "report": None if report is None else report.to_dict(),
    }


def _describe_value(value: Any) -> Any:
    if hasattr(value, "detach") and hasattr(value, "stride"):
        return {
            "shape": list(value.shape),
            "dtype": str(value.dtype).replace("torch.", ""),
            "stride": list(value.stride()),
            "storage_offset": value.storage_offset(),
            "values": value.detach().tolist(),
        }
    return json_default(value)
