"""`python -m vllm …` runs the same CLI as the `vllm` console script."""

from vllm.cli import main

if __name__ == "__main__":
    main()
