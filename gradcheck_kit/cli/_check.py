"""``gradcheck-kit check MODULE:FUNCTION --input SHAPE[:DTYPE] ...``: one function's gradients on random inputs."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from gradcheck_kit._text import Style, UsageError
from gradcheck_kit.cli._inputs import check_builtin_call, make_inputs, one_line, prepare_target
from gradcheck_kit.cli._output import FunctionFailed, check_json_path, report_status, verdict_line, write_json

__all__ = ["add_parser", "run", "checker_options"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "check",
        parents=parents,
        help="check one function's gradients on random inputs",
        description="Check the gradients of MODULE:FUNCTION on random inputs of the given shapes.",
        epilog="example: gradcheck-kit check torch.nn.functional:gelu --input 4,8:float32",
    )
    parser.add_argument(
        "--input", "-i", dest="inputs", action="append", required=True, metavar="SHAPE[:DTYPE]",
        help="one per positional argument: 4,8:float32, () for a scalar; dtype default float64",
    )
    parser.set_defaults(handler=run)


def checker_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``check_gradients`` keywords given on the command line (validated by the parser)."""
    return {
        "mode": args.mode,
        "order": args.order,
        "forward_ad": args.forward_ad,
        "atol": args.atol,
        "rtol": args.rtol,
        "seed": args.seed,
        "strict": args.strict,
        "batched": args.batched,
    }


def run(args: argparse.Namespace) -> int:
    check_json_path(args.json)
    fn, specs, wrt = prepare_target(args, allow_free=False)
    import torch

    import gradcheck_kit as gk

    generator = torch.Generator().manual_seed(args.seed)
    inputs = make_inputs(specs, generator, args, wrt)
    check_builtin_call(fn, args.target, inputs)
    options = checker_options(args)
    if wrt is not None:
        options["wrt"] = wrt
    report = _run_check(gk, fn, inputs, options)
    status = report_status(report)
    json_error = None if args.json is None else write_json(args.json, report.to_dict())
    if args.json != "-" or json_error:
        style = Style.for_stream(sys.stdout, args.color)
        print(str(report))
        shapes = ", ".join(str(s) for s in specs)
        extra = "" if wrt is None else f"  wrt={','.join(map(str, wrt))}"
        print(verdict_line(style, status, f"{args.target}({shapes})  seed={args.seed}{extra}"))
    if json_error:
        raise UsageError(json_error)
    return status


def _run_check(gk: Any, fn: Callable[..., Any], inputs: Sequence[Any], options: dict[str, Any]) -> Any:
    from gradcheck_kit.errors import FunctionError, InvalidArgument

    try:
        return gk.check_gradients(fn, *inputs, **options)
    except InvalidArgument as exc:
        raise UsageError(one_line(exc)) from None
    except FunctionError as exc:
        raise FunctionFailed(f"the function failed: {one_line(exc)}") from None
