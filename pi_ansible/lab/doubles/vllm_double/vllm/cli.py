"""The `vllm` console script: `vllm --version`, `vllm serve …`, `vllm serve --help[=…]`."""

from __future__ import annotations

import sys

from vllm import _log


def main(argv: list[str] | None = None) -> None:
    from vllm import args as cli_args

    argv = sys.argv[1:] if argv is None else argv
    try:
        ns = cli_args.parse(argv)
    except ValueError as e:  # FlexibleArgumentParser's own ValueErrors (model placement, --config)
        _log.print_traceback(
            [
                *_log.cli_frames()[:1],
                _log.frame("entrypoints/cli/main.py", 146, "main", "args = parser.parse_args()"),
                _log.frame("utils/argparse_utils.py", 312, "parse_args", "raise ValueError("),
            ],
            f"ValueError: {e}",
            None,
        )
        sys.exit(1)
    sub = getattr(ns, "subparser", None)
    if sub == "serve":
        from vllm.serve import main as serve_main

        serve_main(ns)
    elif sub == "download-kernels":
        _log.info(
            "download_kernels.py:41",
            "FlashInfer kernels for this installation are already in place "
            "(vLLM lab double: nothing to download).",
            None,
        )
    elif sub is None:
        top, _ = cli_args.build_parser()
        top.print_help()
    else:
        print(
            f"vllm {sub}: not provided by the vLLM lab double (only `serve`, `--version` and "
            "`download-kernels` are)",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
